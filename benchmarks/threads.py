"""Training threads against the viewer on a small CPU: training speed and the viewer's longest stall.

Opens napari (1280x800) with two synthetic cases (one labeled) and the DMD dock, and trains ``--iterations``
with the dock's own Start, results refreshed half-way and at the end (the result layers created afresh each
run: the first creation is the stall the user felt), with 1 and with 2 training threads (the ``threads``
setting), on the machine as it is ("quiet") and with one extra process spinning a core ("busy"). A 10 ms
timer on the GUI thread measures the viewer: its longest stall and the 99th percentile of the gaps between
ticks. Iterations per second are the engine's (its run's training time, the refreshes' predictions left out).

    xvfb-run -a -s "-screen 0 1920x1080x24" python benchmarks/threads.py --iterations 6
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "cpu" / "threads.json"


def case(seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image holding a bright ball, and its labels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2 + rng.uniform(-4, 4, 3)
    ball = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) < (min(shape) / 4) ** 2
    image = (ball * 1.0 + rng.normal(0, 0.5, shape)).astype(np.float32)
    return image, ball.astype(np.uint8)


def run_once(viewer, widget, app, threads: int, iterations: int, folder: Path) -> dict:
    """One run of the dock with ``threads`` training threads: its iterations per second and the GUI's stalls."""
    from qtpy.QtCore import QTimer

    from napari_dmd.jobs import Finished
    from napari_dmd.plugin._layers import role
    from napari_dmd.training import Progress

    for layer in [la for la in viewer.layers if role(la) is not None]:
        viewer.layers.remove(layer)  # each run creates its result layers, as a first run does
    widget.settings.set(iterations=iterations, refresh_every=max(1, iterations // 2), first_refresh=0, minutes=0,
                        patch_size=(16, 48, 48), labeled_batch=1, unlabeled_batch=1, checkpoint_every=100000,
                        device="cpu", precision="fp32", threads=threads, run_folder=str(folder))
    widget.settings.warm_start.value = False
    speed, ticks, handle = [], [], widget._on_message

    def seen(msg) -> None:
        if isinstance(msg, Progress):
            print(f"  iteration {msg.iteration}: {msg.elapsed:.1f} s", flush=True)
        elif isinstance(msg, Finished) and msg.speed is not None:
            speed.append(msg.speed.iteration_s)  # the engine's own: the refreshes' predictions left out
        handle(msg)

    widget._on_message = seen
    timer = QTimer(interval=10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    load = os.getloadavg()[0]
    widget.start()
    while widget.worker is not None or widget.results.pending:
        app.processEvents()
        time.sleep(0.002)
    timer.stop()
    widget._on_message = handle
    gaps = np.diff(ticks) * 1000
    return {"threads": threads, "its_per_s": 1 / speed[0],
            "longest_stall_ms": float(gaps.max()), "p99_gap_ms": float(np.percentile(gaps, 99)),
            "load_before": load, "iterations": iterations}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--shape", type=int, nargs=3, default=(24, 64, 64))
    ap.add_argument("--out", type=Path, default=OUT)
    opts = ap.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).parent))
    from results_file import save_report

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1280, 800)
    for seed, name in ((0, "case0"), (1, "case1")):
        image, labels = case(seed, tuple(opts.shape))
        viewer.add_image(image, name=name)
        if seed == 0:
            viewer.add_labels(labels, name="case0 labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    app = QApplication.instance()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for busy in (False, True):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for threads in (1, 2):
                    row = run_once(viewer, widget, app, threads, opts.iterations, Path(tmp) / f"{busy}-{threads}")
                    row["machine"] = "busy" if busy else "quiet"
                    rows.append(row)
                    print(f"{row['machine']:5s} {threads} thread(s): {row['its_per_s']:.2f} it/s, longest stall "
                          f"{row['longest_stall_ms']:.0f} ms, 99th percentile gap {row['p99_gap_ms']:.0f} ms "
                          f"(load {row['load_before']:.1f} before)", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    widget.shutdown()
    viewer.close()
    save_report(opts.out, {"cpu_count": os.cpu_count(), "shape": list(opts.shape), "runs": rows})


if __name__ == "__main__":
    main()
