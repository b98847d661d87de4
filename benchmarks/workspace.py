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
With ``--dock`` (under a screen: ``xvfb-run -a``), the dock's figures on the same workspace instead, in a fresh
process running ``napari-dmd open``:
  dock_first_case_s     from the process's start to the first case shown (goal <= 5 s)
  dock_move_s           moving to the next case, a stroke on the one left saved first (the slowest of 3; goal <= 2 s)
  dock_autosave_longest_stall_s
                        the longest the viewer's event loop waited while a stroke was saved (goal <= 0.2 s)
  dock_rss_before_training, dock_case_bytes
                        the process's resident memory after the moves, and the case in view's arrays (goal: at most
                        the case + 1.5 GB, whatever the number of cases)
  dock_train_rss, cli_train_rss
                        peak resident memory of a Start in the dock (1 iteration; the final prediction of every case
                        left out: it is ``predict --workspace``'s) and of ``train --workspace`` in its own process,
                        each with a fresh cache (goal: the dock within 10 % of the command line)
  screenshots of the dock on the workspace go to ``--screenshots`` (a folder).

    python benchmarks/workspace.py --out benchmarks/results/cpu/workspace.json
    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/workspace.py --dock --screenshots docs \
        --out benchmarks/results/cpu/workspace_dock.json
"""
from __future__ import annotations

import argparse
import filecmp
import json
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


def _rss() -> int:
    """The resident memory of this process now, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def dock_child(root: Path, started: float, out: Path, screenshots: Path | None) -> None:
    """In a fresh process: ``napari-dmd open root``, then the dock's figures (see the module's text) into ``out``."""
    import resource

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_dmd import workspace_run
    from napari_dmd.cli import main as cli_main
    from napari_dmd.plugin.demo import dock_widget, screenshot

    figures: dict = {}

    def settle(seconds: float = 0.0) -> None:
        app, until = QApplication.instance(), time.perf_counter() + seconds
        app.processEvents()
        while time.perf_counter() < until:
            app.processEvents()
            time.sleep(0.02)

    def measure() -> None:  # in place of napari.run: the dock is open on the workspace, its first case loaded
        viewer = napari.current_viewer()
        widget = dock_widget(viewer)
        settle()
        figures["dock_first_case_s"] = time.time() - started
        moves = []
        for _ in range(3):
            layer = viewer.layers[f"{widget.workspace.case} labels"]
            layer.paint(tuple(s // 2 for s in layer.data.shape), 1, refresh=True)
            start = time.perf_counter()
            widget.nav.step(1)
            settle()
            moves.append(time.perf_counter() - start)
        figures["dock_move_s"], figures["dock_moves_s"] = max(moves), moves
        layer = viewer.layers[f"{widget.workspace.case} labels"]
        layer.paint(tuple(s // 2 for s in layer.data.shape), 1, refresh=True)
        start = time.perf_counter()
        widget.workspace.autosave()  # the copy taken here, the save in its own thread: the event loop's gaps
        figures["dock_autosave_call_s"], gaps, last = time.perf_counter() - start, [], time.perf_counter()
        while widget.workspace.saver.busy or widget.workspace.saver.dirty:
            settle()
            time.sleep(0.005)
            gaps.append(time.perf_counter() - last)
            last = time.perf_counter()
        figures["dock_autosave_longest_stall_s"] = max([figures["dock_autosave_call_s"], *gaps])
        figures["dock_rss_before_training"] = _rss()
        figures["dock_case_bytes"] = sum(layer.data.nbytes for layer in viewer.layers)
        if screenshots is not None:
            viewer.window.resize(1600, 1000)
            settle(2)
            screenshot(viewer, screenshots / "workspace_dock.png")
        widget.settings.set(iterations=1, patch_size=(32, 64, 64), device="cpu", precision="fp32", minutes=0,
                            checkpoint_every=1)
        workspace_run.predict_workspace = lambda *_a: None  # the final prediction: predict --workspace's
        widget.start()
        while widget.worker is not None:
            settle(0.1)
        figures["dock_train_status"] = widget.run.status.text()
        figures["dock_train_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out.write_text(json.dumps(figures))
        widget.workspace.close()
        viewer.close()

    napari.run = measure
    cli_main(["open", str(root)])


def dock_figures(root: Path, scratch: Path, screenshots: Path | None) -> dict:
    """The dock's figures (a fresh process) and ``train --workspace``'s memory beside them, each with a fresh cache."""
    out = scratch / "dock.json"
    argv = [sys.executable, __file__, "--dock-child", str(root), str(out), "--out", str(out)]
    if screenshots is not None:
        argv += ["--screenshots", str(screenshots.absolute())]
    done = subprocess.run([*argv[:2], "--started", repr(time.time()), *argv[2:]], capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        raise SystemExit(f"the dock's run failed:\n{done.stderr[-3000:]}")
    report = json.loads(out.read_text())
    shutil.rmtree(root / ".napari-dmd" / "cache", ignore_errors=True)
    report["cli_train_s"], report["cli_train_rss"] = _command(["train", "--workspace", str(root), *TRAIN])
    report["dock_train_rss_ratio"] = round(report["dock_train_rss"] / report["cli_train_rss"], 3)
    report["dock_rss_over_case_gb"] = round((report["dock_rss_before_training"] - report["dock_case_bytes"]) / 1e9, 2)
    return report


def cli_figures(root: Path, scratch: Path, args: argparse.Namespace) -> dict:
    """Listing, reading, saving, training and predicting from the command line (see the module's text)."""
    report: dict = {}
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
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--labelled", type=int, default=4)
    parser.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    parser.add_argument("--predict-cases", type=int, default=8)
    parser.add_argument("--predict-shape", type=int, nargs=3, default=[48, 128, 128])
    parser.add_argument("--scratch", type=Path, help="folder for the generated workspaces (default: a temporary one)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dock", action="store_true", help="the dock's figures (under a screen) instead")
    parser.add_argument("--screenshots", type=Path, help="with --dock: a folder for pictures of the dock")
    parser.add_argument("--dock-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dock_child:
        dock_child(args.dock_child[0], args.started, args.dock_child[1], args.screenshots)
        return
    scratch = Path(tempfile.mkdtemp(dir=args.scratch))
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                    "cases": args.cases, "shape": args.shape, "labelled": args.labelled}
    try:
        seconds, root = _timed(lambda: make_workspace(scratch / "ws", args.cases, args.labelled, tuple(args.shape)))
        report["generate_s"] = round(seconds, 1)
        report.update(dock_figures(root, scratch, args.screenshots) if args.dock else cli_figures(root, scratch, args))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}
    save_report(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
