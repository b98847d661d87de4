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
