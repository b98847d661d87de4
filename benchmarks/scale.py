"""Clinical-size data: memory and time of training, prediction and the dock's first result against data size.

Seeded CT-like int16 volumes (``predict_scale.ct_volume``; generated here into ``--work``, nothing shipped) of
``--shape`` (default 200×512×512), the first 2 labeled (their bright structures), the others unlabeled. Each
measurement runs in a fresh process:
  read     SimpleITK reading the same files (the reference of the time to the first iteration)
  train    for N = ``--counts`` volumes: peak resident and anonymous memory above the process's level after
           its imports, time to the first iteration, seconds per iteration; from the files, and from the
           memory-mapped cache (``--cache``, built by a first run, measured on the second)
  predict  ``benchmarks/predict_scale.py`` on one volume of ``--shape`` (with the forward passes alone, for
           the stitching overhead) and one of ``--long`` slices (predict only)
  dock     a viewer under Xvfb with one CT-size image and its labels in view: seconds from the iteration that
           asks for a refresh to the prediction layer on screen
The page cache is warm for every measurement (the files were just written): reading is from memory.

    python benchmarks/scale.py --out benchmarks/results/cpu/scale.json
    python benchmarks/scale.py --plot-only      # docs/scale.png from the JSON (matplotlib: the bench extra)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LABELED = 2
STRUCTURE_HU = 150  # the labeled structures: the bright ellipsoids of the CT-like volumes


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Peaks:
    """Peak resident (VmRSS) and anonymous (RssAnon) memory of this process, sampled every 20 ms from now."""

    def __init__(self) -> None:
        self.base = {f: status_kb(f) for f in ("VmRSS", "RssAnon")}
        self.peak = dict(self.base)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            for f in self.peak:
                self.peak[f] = max(self.peak[f], status_kb(f))

    def stop(self) -> dict[str, int]:
        """Bytes above the level at the start: peak_rss_bytes, peak_anon_bytes."""
        self._done.set()
        self._thread.join()
        return {"peak_rss_bytes": 1024 * (self.peak["VmRSS"] - self.base["VmRSS"]),
                "peak_anon_bytes": 1024 * (self.peak["RssAnon"] - self.base["RssAnon"])}


# ------------------------------------------------------------------ data
def generate(work: Path, count: int, shape: tuple[int, ...], seed: int = 0) -> list[Path]:
    """``count`` volumes in ``work/all`` (kept between runs), labels of the first ``LABELED`` in ``work/labels``."""
    import SimpleITK as sitk

    sys.path.insert(0, str(HERE))
    from predict_scale import ct_volume

    folder, labels = work / "all", work / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        path = folder / f"ct{k:03d}_{'x'.join(map(str, shape))}.nii"
        if not path.exists():
            image = ct_volume(shape, seed + k)
            itk = sitk.GetImageFromArray(image)
            itk.SetSpacing((0.8, 0.8, 2.5))
            sitk.WriteImage(itk, str(path.with_suffix(".tmp.nii")))
            path.with_suffix(".tmp.nii").rename(path)
            if k < LABELED:
                label = sitk.GetImageFromArray((image > STRUCTURE_HU).astype(np.uint8))
                label.SetSpacing((0.8, 0.8, 2.5))
                sitk.WriteImage(label, str(labels / path.name))
        paths.append(path)
    return paths


def subset(work: Path, paths: list[Path], n: int) -> Path:
    """A folder of links to the first ``n`` volumes."""
    folder = work / f"images_{n}"
    folder.mkdir(exist_ok=True)
    for p in paths[:n]:
        link = folder / p.name
        if not link.exists():
            link.symlink_to(p)
    return folder


# ------------------------------------------------------------------ measurements (each in its own process)
def measure_read(images: Path) -> dict:
    import SimpleITK as sitk

    t0 = time.perf_counter()
    total = 0
    for p in sorted(images.iterdir()):
        total += sitk.GetArrayFromImage(sitk.ReadImage(str(p))).nbytes
    return {"read_s": time.perf_counter() - t0, "images_bytes": total}


def measure_train(images: Path, labels: Path, cache: Path | None, iterations: int, patch: tuple[int, ...],
                  precision: str) -> dict:
    import torch

    from napari_dmd.config import TrainConfig
    from napari_dmd.folders import load_training_data
    from napari_dmd.training import Trainer

    torch.zeros(1)  # torch's own start-up memory before the baseline
    peaks = Peaks()
    t0 = time.perf_counter()
    data = load_training_data(images, labels, [], cache=cache)
    loaded = time.perf_counter() - t0
    cfg = TrainConfig(num_classes=2, iterations=iterations, patch_size=patch, precision=precision,
                      checkpoint_every=10**6)
    trainer = Trainer(data.labeled, data.unlabeled, cfg)
    stamps = [time.perf_counter() - t0 for _ in trainer.run()]
    memory = peaks.stop()
    images_bytes = sum(v.image.nbytes for v in data.labeled + data.unlabeled)
    channels = [a for v in data.unlabeled for a in v.image.arrays]
    return {"volumes": len(data.labeled) + len(data.unlabeled), "load_s": loaded, "first_iteration_s": stamps[0],
            "iteration_s": float(np.mean(np.diff(stamps[:iterations]))) if iterations > 1 else None,
            "images_bytes_held": images_bytes, "image_dtypes": sorted({str(a.dtype) for a in channels}),
            "memmapped": all(isinstance(a, np.memmap) for a in channels), **memory,
            "precision": trainer.precision.describe()}


def measure_dock(shape: tuple[int, ...], patch: tuple[int, ...], precision: str, timeout_s: float) -> dict:
    """Seconds from the iteration that asks for the first refresh to the prediction layer in the viewer."""
    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(HERE))
    from napari_dmd.jobs import ImageResult
    from napari_dmd.plugin.result_layers import go_to
    from napari_dmd.training import Progress

    from predict_scale import ct_volume

    image = ct_volume(shape, 0)
    viewer = napari.Viewer(show=False)
    viewer.add_image(image, name="ct")
    viewer.add_labels((image > STRUCTURE_HU).astype(np.uint8), name="ct labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    widget.settings.set(iterations=2, first_refresh=1, refresh_every=1000, minutes=0, precision=precision,
                        patch_size=patch, labeled_batch=1, unlabeled_batch=1, run_folder=str(Path(
                            os.environ.get("TMPDIR", "/tmp")) / f"napari-dmd-scale-dock-{os.getpid()}"))
    viewer.layers.selection.active = viewer.layers["ct"]
    go_to(viewer, "ct", shape[0] // 2)
    marks: dict[str, float] = {}
    on_message = widget._on_message

    def record(msg) -> None:
        now = time.perf_counter()
        if isinstance(msg, Progress) and msg.iteration == 1:
            marks.setdefault("iteration_1", now)
        if isinstance(msg, ImageResult):
            marks.setdefault("result_received", now)
            marks.setdefault("rows", msg.rows)
        on_message(msg)

    widget._on_message = record
    viewer.layers.events.inserted.connect(
        lambda e: e.value.name == "ct prediction" and marks.setdefault("layer_shown", time.perf_counter()))
    app = QApplication.instance()
    t0 = time.perf_counter()
    widget.start()
    while "layer_shown" not in marks and time.perf_counter() - t0 < timeout_s:
        app.processEvents()
        widget.results.show_next()
        time.sleep(0.01)
    widget.shutdown()  # abort: no final whole predictions, which are not measured here
    while widget.worker is not None and time.perf_counter() - t0 < timeout_s + 600:
        app.processEvents()
        time.sleep(0.05)
    out = {"shape": list(shape), "patch": list(patch), "precision": precision,
           "rows": list(marks["rows"]) if marks.get("rows") else None}
    if "iteration_1" in marks and "layer_shown" in marks:
        out.update(start_to_iteration_1_s=marks["iteration_1"] - t0,
                   refresh_to_result_s=marks["result_received"] - marks["iteration_1"],
                   refresh_to_layer_s=marks["layer_shown"] - marks["iteration_1"])
    else:
        out["error"] = f"no result within {timeout_s} s"
    return out


# ------------------------------------------------------------------ driver
def child(mode: str, *args: str, xvfb: bool = False) -> dict:
    """Run one measurement in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, "--measure", mode, *args]
    if xvfb:
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1920x1080x24", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", type=int, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512])
    ap.add_argument("--long", type=int, default=400, help="slices of the long volume predicted")
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64])
    ap.add_argument("--iterations", type=int, default=4, help="training iterations per measurement")
    ap.add_argument("--train-precision", default="fp32", help="fp32: no self-check in the time to the first step")
    ap.add_argument("--precision", default="auto", help="of prediction and the dock")
    ap.add_argument("--stages", nargs="+", default=["train", "predict", "dock"], choices=["train", "predict", "dock"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/napari-dmd-scale"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/scale.json"))
    ap.add_argument("--figure", type=Path, default=Path("docs/scale.png"))
    ap.add_argument("--plot-only", action="store_true", help="only draw --figure from --out")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--labels", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape, patch = tuple(args.shape), tuple(args.patch)
    if args.measure:
        result = {"read": lambda: measure_read(args.images),
                  "train": lambda: measure_train(args.images, args.labels, args.cache, args.iterations, patch,
                                                 args.train_precision),
                  "dock": lambda: measure_dock(shape, patch, args.precision, 900)}[args.measure]()
        print(json.dumps(result))
        return

    from results_file import load_results, save_report  # not above: a measurement times its own imports

    report = load_results(args.out)
    if args.plot_only:
        plot(report, args.figure)
        return
    report.update(machine=_cpu(), shape=list(shape), patch=list(patch),
                  iterations=args.iterations, train_precision=args.train_precision)
    if "train" in args.stages:
        paths = generate(args.work, max(args.counts), shape)
        rows = []
        for n in args.counts:
            images = subset(args.work, paths, n)
            common = ["--images", str(images), "--labels", str(args.work / "labels"), "--iterations",
                      str(args.iterations), "--patch", *map(str, patch), "--train-precision", args.train_precision]
            row = {"n": n, **child("read", "--images", str(images))}
            row["files"] = child("train", *common)
            cache = args.work / f"cache_{n}"
            child("train", *common, "--cache", str(cache), "--iterations", "1")  # builds the cache
            row["cache"] = child("train", *common, "--cache", str(cache))
            rows.append(row)
            print(json.dumps(row), flush=True)
            report["train"] = rows
            save_report(args.out, report)
    if "predict" in args.stages:
        report["predict"] = []
        for depth in (shape[0], args.long):  # the long volume without the forward passes alone: half the time
            cmd = [sys.executable, str(HERE / "predict_scale.py"), "--shape", str(depth), *map(str, shape[1:]),
                   "--patch", *map(str, patch), "--precision", args.precision,
                   *(["--predict-only"] if depth != shape[0] else [])]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            report["predict"].append(json.loads(result.stdout[result.stdout.index("{"):]))
            print(json.dumps(report["predict"][-1]), flush=True)
            save_report(args.out, report)
    if "dock" in args.stages:
        report["dock"] = child("dock", "--shape", *map(str, shape), "--patch", *map(str, patch), "--precision",
                               args.precision, xvfb=not os.environ.get("DISPLAY"))
        print(json.dumps(report["dock"]), flush=True)
        save_report(args.out, report)
    if "train" in report:
        plot(report, args.figure)


def plot(report: dict, path: Path) -> None:
    """Memory and time to the first iteration against the data held, from files and from the cache."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["train"]
    gb = [r["images_bytes"] / 1e9 for r in rows]
    fig, (mem, start) = plt.subplots(1, 2, figsize=(10, 3.8))
    mem.plot(gb, gb, "k:", label="the images' own size")
    for key, style in (("files", "o-"), ("cache", "s--")):
        mem.plot(gb, [r[key]["peak_rss_bytes"] / 1e9 for r in rows], style, label=f"peak resident ({key})")
        mem.plot(gb, [r[key]["peak_anon_bytes"] / 1e9 for r in rows], style, alpha=0.5,
                 label=f"peak anonymous ({key})")
    mem.set(xlabel="images (GB, int16)", ylabel="GB above the process's start", title="training: memory")
    mem.legend(fontsize=7)
    start.plot(gb, [r["read_s"] for r in rows], "k:", label="SimpleITK reading the files")
    for key, style in (("files", "o-"), ("cache", "s--")):
        start.plot(gb, [r[key]["first_iteration_s"] for r in rows], style, label=f"first iteration ({key})")
    start.set(xlabel="images (GB, int16)", ylabel="seconds", title="training: time to the first iteration")
    start.legend(fontsize=7)
    for ax, n in ((mem, rows), (start, rows)):
        ax2 = ax.secondary_xaxis("top", functions=(lambda x: x, lambda x: x))
        ax2.set_xticks(gb, [str(r["n"]) for r in n])
        ax2.set_xlabel("volumes", fontsize=8)
    fig.suptitle(f"{report['shape'][0]}×{report['shape'][1]}×{report['shape'][2]} CT-like volumes, "
                 f"{report['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return f"{os.cpu_count()} cores"


if __name__ == "__main__":
    main()
