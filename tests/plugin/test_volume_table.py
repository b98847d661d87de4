"""The dock's volume table against label maps of known volume and spacing."""
import numpy as np

from napari_dmd.io import Geometry
from napari_dmd.plugin.volume_table import VolumeTable
from napari_dmd.structures import volumes_table

GEOMETRY = Geometry((0.5, 0.75, 2.0), (0, 0, 0), tuple(np.eye(3).ravel()))  # 0.75 mm³ a voxel
NAMES = ("background", "atrium", "scar")


def maps():
    """(prediction, labels): atrium 2000 and 1600 voxels (1.5 and 1.2 mL), scar in two parts (75% + 25%) and
    absent from the labels."""
    pred = np.zeros((20, 30, 30), np.uint8)
    pred[0:10, 0:10, 0:20] = 1
    pred[12:15, 20:25, 20:24] = 2  # 60 voxels
    pred[17:19, 20:25, 20:22] = 2  # 20 voxels, apart
    labels = np.zeros_like(pred)
    labels[0:8, 0:10, 0:20] = 1
    return pred, labels


def cells(table: VolumeTable) -> list[list[str]]:
    return [[table.item(i, j).text() for j in range(table.columnCount())] for i in range(table.rowCount())]


def headers(table: VolumeTable) -> list[str]:
    return [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]


def test_prediction_and_labels_volumes_side_by_side(qtbot):
    table = VolumeTable()
    qtbot.addWidget(table)
    pred, labels = maps()
    table.show_volumes(volumes_table(pred, GEOMETRY, NAMES), volumes_table(labels, GEOMETRY, NAMES))
    assert headers(table) == ["Class", "Prediction (mL)", "Labels (mL)", "Parts"]
    assert not table.isColumnHidden(2)
    assert cells(table) == [["atrium", "1.5", "1.2", "1"], ["scar", "0.06", "0", "2, largest 75%"]]
    assert "1500 mm³" in table.item(0, 1).toolTip()


def test_without_labels_or_spacing(qtbot):
    table = VolumeTable()
    qtbot.addWidget(table)
    pred, _ = maps()
    table.show_volumes(volumes_table(pred, None, NAMES))
    assert table.isColumnHidden(2)
    assert headers(table)[1] == "Prediction (voxels)"
    assert [row[1] for row in cells(table)] == ["2000", "80"]
    assert "no voxel spacing" in table.item(0, 1).toolTip()
    table.clear_volumes()
    assert table.rowCount() == 0


def test_the_dock_measures_the_case_in_view_with_its_scale(dock, qtbot):
    from plugin_helpers import wait_done

    viewer, widget = dock
    assert widget.volumes.table.rowCount() == 0 and "first prediction" in widget.volumes.note.text()
    widget.start()
    wait_done(qtbot, widget)
    table = widget.volumes.table
    assert widget.nav.case == "case0" and table.rowCount() == 1 and not table.isColumnHidden(2)
    labeled = int(np.count_nonzero(viewer.layers["case0 labels"].data == 1))
    assert float(table.item(0, 2).text()) == np.float64(f"{labeled * 2.0 / 1000:.4g}")  # scale 2×1×1 mm: mL
    predicted = int(np.count_nonzero(viewer.layers["case0 pred"].data == 1))
    assert f"({predicted} voxels)" in table.item(0, 1).toolTip()
