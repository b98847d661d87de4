"""The 'Training data' box: the table, what will train, and the review record of the image in view."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..session import Session
from .data_table import TrainingTable


def ranges(indices: set[int]) -> str:
    """'0-4, 9, 12-13' for a set of slice indices."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


class DataPanel(QGroupBox):
    """Training table, a summary line, 'Mark slice reviewed' / 'Unmark' and the current record."""

    def __init__(self, table: TrainingTable, mark: Callable[[bool], None]) -> None:
        super().__init__("Training data")
        self.table = table
        self.summary, self.review_label = QLabel(wordWrap=True), QLabel(wordWrap=True)
        self.mark_button, self.unmark_button = QPushButton("Mark slice reviewed"), QPushButton("Unmark")
        self.mark_button.setToolTip("the current slice of the selected image's labels supervises training, "
                                    "background included")
        self.unmark_button.setToolTip("the current slice no longer supervises training")
        self.mark_button.clicked.connect(lambda: mark(True))
        self.unmark_button.clicked.connect(lambda: mark(False))
        buttons = QHBoxLayout()
        buttons.addWidget(self.mark_button)
        buttons.addWidget(self.unmark_button)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(self.summary)
        layout.addLayout(buttons)
        layout.addWidget(self.review_label)

    def show_session(self, s: Session, image: str | None) -> None:
        """The table, how many images train, unusable labels and why, and ``image``'s review record."""
        self.table.show_session(s)
        pairs = s.pairs()
        labeled = [n for n, lab in pairs.items() if lab and s.choices[n].include
                   and s.stats[lab].shape == s.images[n].shape]
        top = max((s.stats[pairs[n]].top for n in labeled), default=0)
        unlabeled = sum(1 for n in pairs if n not in labeled and s.choices[n].include)
        text = (f"{len(labeled)} labeled + {unlabeled} unlabeled image(s) · {max(2, top + 1)} classes" if labeled
                else "No labeled image yet: paint labels on a few slices of an image.")
        unused = s.unpaired_reasons()
        if unused:
            text += " · not used: " + "; ".join(f"'{n}' ({why})" for n, why in unused.items())
        self.summary.setText(text)
        rec = s.reviewed_for(image) if image else None
        self.review_label.setText("" if rec is None else f"'{image}': " + (
            "reviewed whole" if rec.whole else f"reviewed slices {ranges(rec.slices) or 'none'}"))
