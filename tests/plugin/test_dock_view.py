"""The dock's third pass (issue 40, point 8): the dock stays where the user left it during a run, result layers
leave the layer selection alone, messages go to the dock's status lines, the table's columns fit the dock."""
import numpy as np
from qtpy.QtCore import QPoint, Qt

from plugin_helpers import cube_case, fast_settings, wait_done


def shown_dock(make_napari_viewer, tmp_path, size=(1280, 700)):
    """(viewer, widget) in a shown window of ``size``: two cases, the first labeled."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*size)
    for k in (0, 1):
        img, lab = cube_case(k)
        viewer.add_image(img, name=f"case{k}", scale=(2.0, 1.0, 1.0))
        if k == 0:
            viewer.add_labels(lab, name="case0 labels", scale=(2.0, 1.0, 1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run")
    return viewer, widget


def test_clicking_start_does_not_scroll_the_navigator_out_of_view(make_napari_viewer, qtbot, tmp_path):
    """Start disables itself under the mouse: Qt passes the focus on, which must not scroll the dock."""
    viewer, widget = shown_dock(make_napari_viewer, tmp_path)
    bar, moved = widget.scroll.verticalScrollBar(), []
    qtbot.wait(50)
    assert bar.maximum() > 0 and bar.value() == 0  # the dock's column is taller than the window
    bar.valueChanged.connect(moved.append)
    qtbot.mouseClick(widget.run.start_button, Qt.MouseButton.LeftButton)
    assert widget.worker is not None
    wait_done(qtbot, widget)
    qtbot.mouseClick(widget.run.start_button, Qt.MouseButton.LeftButton)  # continued
    qtbot.mouseClick(widget.run.stop_button, Qt.MouseButton.LeftButton)  # Stop disables itself too
    wait_done(qtbot, widget)
    assert moved == []
    top = widget.nav.next_button.mapTo(widget.scroll.viewport(), QPoint(0, 0)).y()
    assert 0 <= top < widget.scroll.viewport().height()
    widget.shutdown()


def test_the_tables_info_fits_its_column_and_long_names_are_cut_in_the_middle(make_napari_viewer, qtbot):
    """At the dock's width, with the sample's names: every Info text in full; a labels name too long for its box
    is drawn cut in the middle, in full in its tooltip."""
    from napari_dmd.plugin.data_table import CASE, INFO, LABELS

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    for k in range(3):  # of different shapes, as the sample's: no image can be a channel of another
        img, lab = (a[:, :, : a.shape[2] - k] for a in cube_case(k))
        viewer.add_image(img, name=f"hippocampus_00{k}", scale=(2.0, 1.0, 1.0))
        if k < 2:
            viewer.add_labels(lab, name=f"hippocampus_00{k} labels", scale=(2.0, 1.0, 1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    qtbot.wait(50)
    table = widget.table
    assert widget.width() <= 540  # the dock at about its minimum width
    assert table.isColumnHidden(CASE)  # no choice to show
    viewer.add_image(viewer.layers["hippocampus_002"].data, name="hippocampus_005")  # of the shape of another
    qtbot.waitUntil(lambda: not table.isColumnHidden(CASE), timeout=2000)  # it could be a channel of its case
    for row in range(table.rowCount()):
        text, room = table.item(row, INFO).text(), table.columnWidth(INFO)
        assert table.fontMetrics().horizontalAdvance("35/35 reviewed, 35 labeled") + 8 <= room, (text, room)
        assert table.fontMetrics().horizontalAdvance(text) + 8 <= room, (text, room)
    combo = table.cellWidget(0, LABELS)
    assert combo.currentText() == "hippocampus_000 labels" and "hippocampus_000 labels" in combo.toolTip()
    shown = combo.grab()  # drawn: the full name would not fit the box
    assert shown.width() <= table.columnWidth(LABELS) < combo.fontMetrics().horizontalAdvance(combo.currentText())
    viewer.layers.remove("hippocampus_005")
    qtbot.waitUntil(lambda: table.isColumnHidden(CASE), timeout=2000)
    widget.shutdown()


def test_what_the_dock_did_is_said_in_its_lines_not_over_the_canvas(dock, qtbot, notes, tmp_path):
    """A run, a merge and its undo, a saved model: each said in the dock; no napari notification."""
    viewer, widget = dock
    viewer.layers.selection.active = viewer.layers["case0 labels"]
    widget.start()
    wait_done(qtbot, widget)
    assert widget.run.status.text().startswith("Training finished at iteration 2")
    pred = viewer.layers["case0 pred"]
    pred.data_setitem((np.full(3, 7), np.array([2, 3, 4]), np.array([2, 2, 2])), 1)
    viewer.layers.selection.active = pred
    widget.merge_prediction(whole=False)
    assert widget.next.merged.text().startswith("merged ")
    widget.corrections.undo()
    assert widget.next.merged.text() == "merge into 'case0 labels' undone"
    widget.model_box.save(tmp_path / "m.pt")
    assert str(tmp_path / "m.pt") in widget.model_box.label.text()
    assert notes == []
