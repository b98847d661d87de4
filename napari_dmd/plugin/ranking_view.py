"""'Label this next': the session's suggestions as a table whose rows jump to their slice, and the merge box."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..ranking import SCORE_HELP, Suggestion

TITLE = "Label this next (unreviewed, most disagreement first)"


class RankingTable(QTableWidget):
    """One row per suggestion: score, image, slice. Clicking a row calls ``go(suggestion)``."""

    def __init__(self, go: Callable[[Suggestion], None]) -> None:
        super().__init__(0, 3)
        self._go = go
        self.suggestions: list[Suggestion] = []
        self.setHorizontalHeaderLabels(["Disagreement", "Image", "Slice"])
        self.horizontalHeaderItem(0).setToolTip(SCORE_HELP)
        self.setToolTip(SCORE_HELP)
        self.verticalHeader().setVisible(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.setMinimumHeight(140)
        self.cellClicked.connect(lambda row, _column: self._go(self.suggestions[row]))

    def show_suggestions(self, suggestions: list[Suggestion], ndims: dict[str, int]) -> None:
        self.suggestions = list(suggestions)
        self.setRowCount(len(self.suggestions))
        for i, s in enumerate(self.suggestions):
            score = QTableWidgetItem(f"{s.score:.3f}")
            score.setToolTip(SCORE_HELP)
            score.setData(Qt.ItemDataRole.UserRole, (s.image, s.index))
            self.setItem(i, 0, score)
            self.setItem(i, 1, QTableWidgetItem(s.image))
            self.setItem(i, 2, QTableWidgetItem("—" if ndims.get(s.image, 3) < 3 else str(s.index)))


LEGEND = ("Disagreement layer: black = the two networks agree; brightest = the map's 99.5th percentile "
          "(its contrast limit); 1 would mean they are sure of different classes.")


class NextBox(QGroupBox):
    """'Label this next' with the disagreement legend, and the merge of corrected predictions."""

    def __init__(self, go: Callable[[Suggestion], None], merge: Callable[[], None], undo: Callable[[], None]) -> None:
        super().__init__(TITLE)
        self.setToolTip(SCORE_HELP)
        self.ranking = RankingTable(go)
        self.legend = QLabel(LEGEND, wordWrap=True)
        hint = QLabel("Correct a '… prediction' layer, select it, then merge it into the labels.", wordWrap=True)
        self.merge_scope = QComboBox()
        self.merge_scope.addItems(["current slice", "whole image"])
        self.merge_button, self.undo_button = QPushButton("Merge into labels"), QPushButton("Undo merge")
        self.merge_button.clicked.connect(lambda: merge())
        self.undo_button.clicked.connect(lambda: undo())
        self.overwrite = QCheckBox("Also replace reviewed labels")
        self.overwrite.setToolTip("Off: merge your strokes on the prediction, and the prediction only where the "
                                  "labels are not reviewed yet. On: the prediction replaces reviewed labels too.")
        row = QHBoxLayout()
        for w in (self.merge_scope, self.merge_button, self.undo_button):
            row.addWidget(w)
        layout = QVBoxLayout(self)
        for w in (self.ranking, self.legend, hint):
            layout.addWidget(w)
        layout.addLayout(row)
        layout.addWidget(self.overwrite)
