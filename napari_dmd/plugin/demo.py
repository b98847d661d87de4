"""The demo: napari with the sample data and the DMD dock, and a screenshot helper.

``napari-dmd demo`` calls ``open_demo()`` and then ``napari.run()``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DMDError

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


def train_and_screenshot(path: str | Path, iterations: int = 300, refresh_every: int | None = None,
                         run_dir: str | Path | None = None, size: tuple[int, int] = (1600, 1000)) -> Path:
    """The README picture: open the demo, train ``iterations`` steps on the sample data in the dock
    (paper settings otherwise, one labeled + one unlabeled patch per batch to keep it short on a
    CPU), jump to the slice of most disagreement, and save a picture of the window."""
    import tempfile
    import time

    from qtpy.QtWidgets import QApplication

    viewer = open_demo()
    viewer.window.resize(*size)
    widget = dock_widget(viewer)
    widget.iterations.setValue(iterations)
    widget.refresh_every.setValue(refresh_every or iterations)
    widget.annotated_only.setChecked(False)  # the sample labels are complete volumes
    widget.labeled_batch.setValue(1)
    widget.unlabeled_batch.setValue(1)
    widget.run_folder.setText(str(run_dir or Path(tempfile.mkdtemp(prefix="napari-dmd-demo-"))))
    app = QApplication.instance()
    widget.start()
    while widget.worker is not None:
        app.processEvents()
        time.sleep(0.02)
    if widget.ranking.rowCount():
        widget.ranking.selectRow(0)
        widget.ranking.cellClicked.emit(0, 0)
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out = screenshot(viewer, path)
    viewer.close()
    return out
