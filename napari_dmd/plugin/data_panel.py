"""The 'Training data' box: the case in view, the table and what will train."""
from __future__ import annotations

from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..session import Session, unpaired_reasons
from .case_nav import CaseNavigator
from .data_table import TrainingTable


class DataPanel(QGroupBox):
    """The case navigator, the training table and a summary line (what trains, what is not used and why)."""

    def __init__(self, nav: CaseNavigator, table: TrainingTable, open_button: QWidget) -> None:
        super().__init__("Training data")
        self.nav, self.table = nav, table
        self.summary = QLabel(wordWrap=True)
        layout = QVBoxLayout(self)
        layout.addWidget(nav)
        layout.addWidget(table)
        bottom = QHBoxLayout()
        bottom.addWidget(self.summary, 1)
        bottom.addWidget(open_button)  # 'Open workspace…'
        layout.addLayout(bottom)

    def show_session(self, s: Session) -> None:
        """The case in view, the table, how many images train, and unusable labels with the reason."""
        self.nav.show_cases(s.grouping.cases())
        self.table.show_session(s, self.nav.case)
        pairs = s.pairs()
        labeled = [n for n, lab in pairs.items() if lab and s.choices[n].include
                   and s.stats[lab].shape == s.images[n].shape]
        top = max((s.stats[pairs[n]].top for n in labeled), default=0)
        unlabeled = sum(1 for n in pairs if n not in labeled and s.choices[n].include)
        text = (f"{len(labeled)} labeled + {unlabeled} unlabeled image(s) · {max(2, top + 1)} classes" if labeled
                else "No labeled image yet: paint labels on a few slices of an image.")
        unused = unpaired_reasons(s)
        if unused:
            text += " · not used: " + "; ".join(f"'{n}' ({why})" for n, why in unused.items())
        self.summary.setText(text)
