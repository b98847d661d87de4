"""The demo: napari with the sample data and the DMD dock, and a screenshot helper.

``napari-dmd demo`` calls ``open_demo()`` and then ``napari.run()``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DMDError
from ..sample_data import DEMO_ITERATIONS

DOCK_NAME = "DMD training"


def check_screen() -> None:
    """``DMDError`` with what to do when there is no screen (Qt would abort the process)."""
    if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        raise DMDError("no screen found (DISPLAY is not set): run `xvfb-run -a napari-dmd demo` on a "
                       "machine without a display, or `napari-dmd demo --headless` for the loop without napari")


def open_demo(show: bool = True):
    """A napari viewer with the 12 hippocampus cases (3 labeled) and the DMD dock docked.

    Returns the viewer; the caller runs ``napari.run()``. ``dock_widget(viewer)`` returns the dock.
    """
    check_screen()
    import napari

    viewer = napari.Viewer(title="napari-dmd", show=show)
    viewer.open_sample("napari-dmd", "hippocampus")
    viewer.window.add_plugin_dock_widget("napari-dmd", DOCK_NAME)
    first = next((la for la in viewer.layers if la.visible), None)
    if first is not None:
        viewer.layers.selection.active = first
    return viewer


def open_workspace(folder: str | Path, show: bool = True):
    """A napari viewer with the DMD dock on the workspace in ``folder`` (its first case shown)."""
    check_screen()
    import napari

    viewer = napari.Viewer(title=f"napari-dmd: {Path(folder).name}", show=show)
    dock_widget(viewer).workspace.open(Path(folder))
    return viewer


def dock_widget(viewer):
    """The DMD dock of ``viewer`` (docked if it was not)."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", DOCK_NAME)
    return widget


def screenshot(viewer, path: str | Path) -> Path:
    """Save a picture of the whole window (canvas and docks) to ``path`` (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path


def train_and_screenshot(path: str | Path, iterations: int = DEMO_ITERATIONS, refresh_every: int | None = None,
                         run_dir: str | Path | None = None, size: tuple[int, int] = (1600, 1000)) -> Path:
    """The README pictures: open the demo, train ``iterations`` steps on the sample data in the dock
    (the dock's defaults for this device otherwise, one labeled + one unlabeled patch per batch to
    keep it short on a CPU), jump to the first suggestion of 'label this next' and save a picture
    of the window to ``path``, then one with only that image and its disagreement layer to
    ``<stem>_disagreement.png`` beside it. Prints the time from Start to the first prediction."""
    import tempfile
    import time

    from qtpy.QtWidgets import QApplication

    from ..jobs import ImageResult

    viewer = open_demo()
    viewer.window.resize(*size)
    widget = dock_widget(viewer)
    widget.settings.set(iterations=iterations, minutes=0, labeled_batch=1, unlabeled_batch=1,
                        run_folder=str(run_dir or Path(tempfile.mkdtemp(prefix="napari-dmd-demo-"))))
    if refresh_every:
        widget.settings.set(refresh_every=refresh_every)
    app = QApplication.instance()
    first: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    widget.start()
    widget.worker.message.connect(
        lambda m: isinstance(m, ImageResult) and not first and first.append((time.perf_counter() - t0, m.iteration)))
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
    if first:
        print(f"first prediction {first[0][0]:.0f} s after Start (iteration {first[0][1]}); "
              f"{iterations} iterations took {time.perf_counter() - t0:.0f} s")
    widget.results.flush()
    if widget.next.ranking.rowCount():
        widget.next.ranking.selectRow(0)
        widget.next.ranking.cellClicked.emit(0, 0)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out = screenshot(viewer, path)
    if widget.next.ranking.rowCount():
        from .result_layers import disagreement_name

        image = widget.next.ranking.suggestions[0].image
        for layer in viewer.layers:
            layer.visible = layer.name in (image, disagreement_name(image))
        for _ in range(25):
            app.processEvents()
            time.sleep(0.02)
        screenshot(viewer, out.with_name(f"{out.name.removesuffix('.png')}_disagreement.png"))
    viewer.close()
    return out
