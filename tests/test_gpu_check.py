"""benchmarks/gpu_check.py works before a GPU is at hand: its quick CPU run gives every part of its JSON."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_dmd.precision import native_bf16

from synthetic import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
def test_the_quick_cpu_check_gives_every_part(tmp_path):
    if not (SHARED_DATA / "la_half").is_dir():
        pytest.skip("../shared/data/la_half is absent")
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
                    "--out", str(out), "--runs", str(tmp_path / "runs")], check=True, cwd=ROOT, timeout=900,
                   capture_output=True)
    result = json.loads(out.read_text())
    variants = {(tuple(r["patch"]), r["variant"]) for r in result["loops"]}
    assert len(variants) == 5  # the plain loop, napari-dmd eager and compiled in fp32 and bf16
    native = native_bf16(torch.device("cpu"))
    assert all(r.get("its_per_s", 0) > 0 or not native and "bf16" in r["variant"] and "no native bf16" in r["skipped"]
               for r in result["loops"]), result["loops"]
    compiled = [r for r in result["loops"] if "compiled" in r["variant"] and "skipped" not in r]
    assert compiled and all("compile_s" in r and r["networks"] == "compiled (backend eager)" for r in compiled)
    assert result["profile"]["steps"] == 5 and result["profile"]["top"]
    assert result["peak_memory_mb"] > 0 and result["inference"]["s_per_volume"] > 0
    schedule = result["schedule"]
    assert schedule["reached"] == schedule["iterations"] == 4 and 0 <= schedule["dice"] <= 100
