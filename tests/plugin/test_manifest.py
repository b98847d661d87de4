"""The npe2 manifest is valid and every command imports."""
import shutil
import subprocess
import sys
from pathlib import Path


def test_npe2_validate_with_imports():
    exe = Path(sys.executable).with_name("npe2")
    cmd = [str(exe)] if exe.exists() else [shutil.which("npe2") or "npe2"]
    out = subprocess.run(cmd + ["validate", "napari-dmd", "--imports"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout
