"""Structure volumes of the case in view: per class, the prediction's volume and, where the image has
reviewed labels, the labels' volume beside it (rows of ``structures.volumes_table``)."""
from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..io import Geometry
from ..structures import NO_SPACING, volumes_table
from ._layers import GEOMETRY, layer_geometry

COLUMNS = ("Class", "Prediction", "Labels", "Parts")
UNITS = {"mm³": "mL", "mm²": "mm²", NO_SPACING: "voxels"}  # the table shows a 3D volume in mL
PARTS_HELP = "connected components of the prediction (face connectivity) and the largest one's share of the class"


def _shown(row: dict) -> str:
    """A row's volume in the table's unit (``UNITS``), to four significant digits."""
    value = row["volume_ml"] if row["unit"] == "mm³" else row["volume"]
    return f"{value:.4g}"


def _tip(row: dict) -> str:
    """The row's volume in every unit it has."""
    if row["unit"] == NO_SPACING:
        return f"{row['voxels']} voxels; the image has no voxel spacing, so no volume in mm³"
    extra = f" = {row['volume_ml']:.6g} mL" if row["volume_ml"] is not None else ""
    return f"{row['volume']:.6g} {row['unit']}{extra} ({row['voxels']} voxels)"


class VolumeTable(QTableWidget):
    """One row per class: the prediction's volume, the labels' (a column shown only where there are labels),
    the prediction's connected components."""

    def __init__(self) -> None:
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(COLUMNS)
        self.horizontalHeaderItem(3).setToolTip(PARTS_HELP)
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setDefaultSectionSize(24)
        self.setMaximumHeight(26 + 5 * 24)  # five classes without scrolling

    def show_volumes(self, prediction: list[dict], labels: list[dict] | None = None) -> None:
        """Show the rows of ``volumes_table`` for the case in view: its prediction's and, if it has reviewed
        labels, theirs (matched by class)."""
        unit = UNITS[prediction[0]["unit"]] if prediction else ""
        self.setHorizontalHeaderLabels([COLUMNS[0], f"{COLUMNS[1]} ({unit})" if unit else COLUMNS[1],
                                        f"{COLUMNS[2]} ({unit})" if unit else COLUMNS[2], COLUMNS[3]])
        self.horizontalHeaderItem(3).setToolTip(PARTS_HELP)
        self.setColumnHidden(2, labels is None)
        by_class = {r["class"]: r for r in labels or ()}
        self.setRowCount(len(prediction))
        for i, row in enumerate(prediction):
            cells = [QTableWidgetItem(row["name"]), QTableWidgetItem(_shown(row))]
            cells[1].setToolTip(_tip(row))
            other = by_class.get(row["class"])
            cells.append(QTableWidgetItem(_shown(other) if other else "—"))
            if other:
                cells[2].setToolTip(_tip(other))
            share = f", largest {row['largest_share']:.0%}" if row["components"] > 1 else ""
            cells.append(QTableWidgetItem(f"{row['components']}{share}"))
            for j, cell in enumerate(cells):
                self.setItem(i, j, cell)

    def clear_volumes(self) -> None:
        """No case in view, or no prediction yet."""
        self.setRowCount(0)


LIVE_MVOXELS = 16  # measured on the GUI thread only up to this size (a 300-megavoxel map takes seconds)


def layer_spacing(layer: Any) -> Geometry | None:
    """The geometry whose spacing measures ``layer``: its scale where it came from a file or was given a scale,
    ``None`` (volumes in voxels) for an array shown at scale 1."""
    if GEOMETRY not in (layer.metadata or {}) and np.allclose(layer.scale, 1.0):
        return None
    return layer_geometry(layer.scale, layer.translate, layer.metadata)


class VolumeBox(QGroupBox):
    """'Structure volumes' of the case in view: its whole prediction's and its labels'."""

    def __init__(self) -> None:
        super().__init__("Structure volumes (case in view)")
        self.table = VolumeTable()
        self.note = QLabel(wordWrap=True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.note)

    def show_case(self, image: Any, labels: Any | None, prediction: np.ndarray | None,
                  class_names: tuple[str, ...]) -> None:
        """Measure ``prediction`` (a whole one, or None) and the ``labels`` layer's data of the ``image`` layer."""
        self.table.clear_volumes()
        if prediction is None:
            self.note.setText("After the first prediction of this case.")
            return
        if prediction.size > LIVE_MVOXELS * 1e6:
            self.note.setText(f"Larger than {LIVE_MVOXELS} megavoxels: napari-dmd predict writes them "
                              "(volumes.csv).")
            return
        geometry = layer_spacing(image)
        rows = volumes_table(prediction, geometry, class_names)
        theirs = None
        if labels is not None and np.shape(labels.data) == prediction.shape:
            theirs = volumes_table(np.asarray(labels.data), geometry, class_names)
        self.table.show_volumes(rows, theirs)
        self.note.setText("" if geometry is not None else "No voxel spacing: volumes in voxels.")
