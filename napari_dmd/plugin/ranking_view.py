"""'Label this next': the session's suggestions as a table whose rows jump to their slice, the review
of the slice in view (mark, unmark) and the merge of corrected predictions."""
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
from ..review import Reviewed

TITLE = "Label this next: the slices the model is least sure of, not reviewed yet"


def ranges(indices: set[int]) -> str:
    """'0-4, 9, 12-13' for a set of slice indices."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def doubt(score: float) -> str:
    """A score as the percentage the table shows ('12 %')."""
    return f"{100 * score:.0f} %"


class RankingTable(QTableWidget):
    """One row per suggestion: doubt, image, slice (as napari's slider numbers it). Clicking a row calls
    ``go(suggestion)``."""

    def __init__(self, go: Callable[[Suggestion], None]) -> None:
        super().__init__(0, 3)
        self._go = go
        self.suggestions: list[Suggestion] = []
        self.setHorizontalHeaderLabels(["Doubt", "Image", "Slice"])
        self.horizontalHeaderItem(0).setToolTip(SCORE_HELP)
        self.setToolTip(SCORE_HELP)
        self.verticalHeader().setVisible(False)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long name keeps its case number
        self.verticalHeader().setDefaultSectionSize(24)
        self.setMinimumHeight(140)
        self.setMaximumHeight(26 + 5 * 24)  # five rows: the box stays on the dock's first screen
        self.cellClicked.connect(lambda row, _column: self._go(self.suggestions[row]))

    def show_suggestions(self, suggestions: list[Suggestion], number: Callable[[str, int], str]) -> None:
        """The suggestions; ``number(image, index)`` is the slice's number as napari's slider shows it."""
        self.suggestions = list(suggestions)
        self.setRowCount(len(self.suggestions))
        for i, s in enumerate(self.suggestions):
            score = QTableWidgetItem(doubt(s.score))
            score.setToolTip(f"the model's doubt over this slice and its neighbours: {doubt(s.score)}. {SCORE_HELP}")
            score.setData(Qt.ItemDataRole.UserRole, (s.image, s.index))
            self.setItem(i, 0, score)
            name = QTableWidgetItem(s.image)
            name.setToolTip(s.image)
            self.setItem(i, 1, name)
            self.setItem(i, 2, QTableWidgetItem(number(s.image, s.index)))


LEGEND = ("'Show disagreement': transparent where the two networks agree, yellow to red up to the map's 99.5th "
          "percentile; 1 would mean they are sure of different classes.")


class NextBox(QGroupBox):
    """'Label this next', the review of the slice in view, the disagreement legend and the merge."""

    def __init__(self, go: Callable[[Suggestion], None], mark: Callable[[bool], None], merge: Callable[[], None],
                 undo: Callable[[], None]) -> None:
        super().__init__(TITLE)
        self.setToolTip(SCORE_HELP)
        self.ranking = RankingTable(go)
        self.mark_button, self.unmark_button = QPushButton("Mark slice reviewed"), QPushButton("Unmark")
        self.mark_button.setToolTip("the current slice of the selected image's labels supervises training, "
                                    "background included")
        self.unmark_button.setToolTip("the current slice no longer supervises training")
        self.mark_button.clicked.connect(lambda: mark(True))
        self.unmark_button.clicked.connect(lambda: mark(False))
        self.review_label = QLabel(wordWrap=True)
        self.legend = QLabel(LEGEND, wordWrap=True)
        hint = QLabel("Correct a '… pred' layer, select it, then merge it into the labels.", wordWrap=True)
        self.merge_scope = QComboBox()
        self.merge_scope.addItems(["current slice", "whole image"])
        self.merge_button, self.undo_button = QPushButton("Merge into labels"), QPushButton("Undo merge")
        self.merge_button.clicked.connect(lambda: merge())
        self.undo_button.clicked.connect(lambda: undo())
        self.merged = QLabel(wordWrap=True)  # what the last merge or its undo did
        self.overwrite = QCheckBox("Also replace reviewed labels")
        self.overwrite.setToolTip("Off: merge your strokes on the prediction, and the prediction only where the "
                                  "labels are not reviewed yet. On: the prediction replaces reviewed labels too.")
        self.coverage = QLabel(wordWrap=True)  # which images the ranking covers
        layout = QVBoxLayout(self)
        layout.addWidget(self.ranking)
        layout.addWidget(self.coverage)
        layout.addLayout(_row(self.mark_button, self.unmark_button))
        for w in (self.review_label, self.legend, hint):
            layout.addWidget(w)
        layout.addLayout(_row(self.merge_scope, self.merge_button, self.undo_button))
        layout.addWidget(self.overwrite)
        layout.addWidget(self.merged)

    def enable(self, mark: bool, merge: bool) -> None:
        """Mark/Unmark only where the case in view has labels, Merge only with a prediction layer selected."""
        self.mark_button.setEnabled(mark)
        self.unmark_button.setEnabled(mark)
        self.merge_button.setEnabled(merge)

    def show_review(self, image: str | None, rec: Reviewed | None, number: Callable[[int], str]) -> None:
        """The review record of the labels of the image in view, its slices numbered by ``number`` (the slider's)."""
        numbers = {int(number(i)) for i in rec.slices} if rec is not None else set()
        self.review_label.setText("" if rec is None else f"'{image}': " + (
            "reviewed whole" if rec.whole else f"reviewed slices {ranges(numbers) or 'none'}"))


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row
