"""The workspace at clinical size: listing, reading a case, saving labels, training from it, predicting on 2 processes.

Generates ``--cases`` seeded CT-like int16 volumes (``predict_scale.ct_volume``, ``--shape``, default 40 of
200×512×512) as an nnU-Net workspace (``imagesTr/case_XXX_0000.nii``, uncompressed so that generating it is
quick; ``--labelled`` of them with a label file), then reports as JSON:
  list_s                ``Workspace.cases()``: every case from its headers and review records (goal <= 2 s)
  read_s, sitk_read_s   ``Workspace.read`` of one case against SimpleITK's read of its image and label files
                        (the fastest of 3 each, alternated)
  read_ratio            read_s / sitk_read_s (goal <= 2)
  save_s                ``Workspace.save_labels`` of one case: atomic write, read-back check, history (goal <= 2 s)
  train_*               ``train --workspace`` against ``train --images/--labels --cache`` on the same files,
                        each in a fresh process with a fresh cache, 1 iteration: wall seconds and peak resident
                        memory of the process (goal: the workspace within 10 % of the folders)
  predict_*             ``predict --workspace`` of ``--predict-cases`` cases of ``--predict-shape`` with one
                        process and under torchrun with 2 (gloo, CPU): seconds, and whether every output file is
                        identical (goal: identical)

    python benchmarks/workspace.py --out benchmarks/results/cpu/workspace.json
"""
from __future__ import annotations

import argparse
import filecmp
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from napari_dmd.io import Geometry, write_image
from napari_dmd.review import Reviewed
from napari_dmd.workspace import Workspace
from napari_dmd.workspace_layout import create

from predict_scale import ct_volume
from results_file import save_report

REPEATS = 3  # reads of one case, the fastest reported
TRAIN = ["--iterations", "1", "--patch", "32", "64", "64", "--device", "cpu", "--precision", "fp32",
         "--checkpoint-every", "1"]


def make_workspace(root: Path, cases: int, labelled: int, shape: tuple[int, int, int]) -> Path:
    """A new nnU-Net workspace of ``cases`` CT-like volumes, the first ``labelled`` labelled (the bright parts)."""
    create(root, ["CT"], ["background", "bright"], file_ending=".nii")
    geometry = Geometry.from_scale((2.0, 0.7, 0.7))
    for k in range(cases):
        image = ct_volume(shape, seed=k)
        write_image(root / "imagesTr" / f"case_{k:03d}_0000.nii", image, geometry)
        if k < labelled:
            write_image(root / "labelsTr" / f"case_{k:03d}.nii", (image > 150).astype(np.uint8), geometry)
        del image
    return root


def _timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    got = run()
    return time.perf_counter() - start, got


def _command(argv: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak resident bytes of ``napari-dmd argv`` in a fresh process (``--max-rss`` of GNU time
    is not everywhere: the child's own ``ru_maxrss`` is read by a wrapper)."""
    wrapper = ("import resource, runpy, sys; sys.argv = ['napari-dmd', *sys.argv[1:]]\n"
               "try:\n    runpy.run_module('napari_dmd', run_name='__main__')\n"
               "finally:\n    print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"napari-dmd {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    rss = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS"))
    return seconds, rss * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_outputs(a: Path, b: Path) -> bool:
    """Whether two prediction folders hold the same files with the same bytes (manifests and locks aside)."""
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file() and not p.name.startswith("."))
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file() and not p.name.startswith("."))
    return names == other and all(filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--labelled", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    parser.add_argument("--predict-cases", type=int, default=8)
    parser.add_argument("--predict-shape", type=int, nargs=3, default=[48, 128, 128])
    parser.add_argument("--scratch", type=Path, help="folder for the generated workspaces (default: a temporary one)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(dir=args.scratch))
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                    "cases": args.cases, "shape": args.shape, "labelled": args.labelled}
    try:
        seconds, root = _timed(lambda: make_workspace(scratch / "ws", args.cases, args.labelled, tuple(args.shape)))
        report["generate_s"] = round(seconds, 1)
        with Workspace(root) as ws:
            report["list_s"], cases = _timed(ws.cases)
            assert len(cases) == args.cases
            files = (*cases[0].images, cases[0].label)
            reads, sitk_reads = [], []
            for _ in range(REPEATS):  # alternated, so that both find the files in the page cache alike
                seconds, case = _timed(lambda: ws.read("case_000"))
                reads.append(seconds)
                seconds, _ = _timed(lambda: [sitk.GetArrayViewFromImage(sitk.ReadImage(str(p))) for p in files])
                sitk_reads.append(seconds)
            report["read_s"], report["sitk_read_s"] = min(reads), min(sitk_reads)
            report["read_ratio"] = round(report["read_s"] / report["sitk_read_s"], 2)
            edited = case.labels.copy()
            edited[len(edited) // 2] = 1
            report["save_s"], _ = _timed(lambda: ws.save_labels(case, edited, Reviewed.complete(edited.shape)))
            assert len(ws.history.versions("case_000")) == 1
        report["train_workspace_s"], report["train_workspace_rss"] = _command(
            ["train", "--workspace", str(root), *TRAIN])
        report["train_folders_s"], report["train_folders_rss"] = _command(
            ["train", "--images", str(root / "imagesTr"), "--labels", str(root / "labelsTr"), "--cache",
             str(scratch / "cache"), "--out", str(scratch / "run"), "--channel-names", "CT", "--class-names",
             "background", "bright", *TRAIN])
        report["train_time_ratio"] = round(report["train_workspace_s"] / report["train_folders_s"], 3)
        report["train_rss_ratio"] = round(report["train_workspace_rss"] / report["train_folders_rss"], 3)
        shutil.rmtree(root)

        small = make_workspace(scratch / "small", args.predict_cases, 1, tuple(args.predict_shape))
        _command(["train", "--workspace", str(small), *TRAIN])
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        report["predict_1_s"], _ = _command(["predict", "--workspace", str(small), "--out", str(scratch / "one")], env)
        start = time.perf_counter()
        model = Workspace(small, writable=False).latest_model()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), "-m", "napari_dmd", "predict", "--workspace",
                               str(small), "--model", str(model), "--out", str(scratch / "two")],
                              capture_output=True, text=True, env=env)
        report["predict_2_s"] = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"predict under torchrun failed:\n{done.stderr[-2000:]}")
        report["predict_identical"] = same_outputs(scratch / "one", scratch / "two")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}
    save_report(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
