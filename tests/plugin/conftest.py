"""Fixtures for the napari plugin tests: tiny synthetic volumes, the dock, notifications.

Run under a screen: ``xvfb-run -a -s "-screen 0 1920x1080x24" python -m pytest tests/plugin``.
"""
from __future__ import annotations

import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from plugin_helpers import cube_case, fast_settings  # noqa: E402


@pytest.fixture
def notes():
    """Notifications shown during the test, as (severity name, message) pairs."""
    from napari.utils.notifications import notification_manager

    seen: list[tuple[str, str]] = []

    def record(event):
        n = event if not hasattr(event, "value") else event.value
        seen.append((str(n.severity).lower(), str(n.message)))

    notification_manager.notification_ready.connect(record)
    yield seen
    notification_manager.notification_ready.disconnect(record)


@pytest.fixture
def dock(make_napari_viewer, tmp_path):
    """(viewer, widget): a viewer with two labeled-able cases (one labeled) and one unlabeled, and the dock."""
    viewer = make_napari_viewer()
    img0, lab0 = cube_case(0)
    img1, _ = cube_case(1)
    viewer.add_image(img0, name="case0", scale=(2.0, 1.0, 1.0))
    viewer.add_labels(lab0, name="case0 labels", scale=(2.0, 1.0, 1.0))
    viewer.add_image(img1, name="case1", scale=(2.0, 1.0, 1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run")
    yield viewer, widget
    widget.shutdown()


