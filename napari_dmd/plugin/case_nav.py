"""The case navigator: one case (an image with its labels and results) in view at a time.

Previous/Next step through the cases of the training table (a click on a row of the table does the same);
the dock shows the case alone (``result_layers.focus``, and ``show_channels`` for the image layers that are
channels of a case). The toggle shows or hides the case's disagreement
layer ("… unsure"), hidden at first so the image and the brush stay in view.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QWidget

UNSURE_HELP = ("Show where the two networks disagree ('… unsure' layer): transparent where they agree, yellow "
               "to red up to the map's 99.5th percentile (its contrast limit); 1 would mean they are sure of "
               "different classes.")


def neighbour(cases: list[str], current: str | None, step: int) -> str | None:
    """The case ``step`` places after ``current`` in ``cases`` (None past either end; the first case when
    ``current`` is not one of them)."""
    if not cases:
        return None
    if current not in cases:
        return cases[0]
    i = cases.index(current) + step
    return cases[i] if 0 <= i < len(cases) else None


def show_channels(viewer: Any, members: dict[str, str], case: str, hidden: set[str]) -> None:
    """Hide the channel layers of the other cases (``members``: layer -> its case), remembering in ``hidden``
    those that were shown, and show again those of ``case`` hidden so: the layers of the case in view stay as
    the user set them."""
    for name, owner in members.items():
        if name not in viewer.layers:
            continue
        layer = viewer.layers[name]
        if owner == case and name in hidden:
            layer.visible = True
        elif owner != case and layer.visible:
            layer.visible = False
            hidden.add(name)
        if owner == case:
            hidden.discard(name)


class CaseNavigator(QWidget):
    """'◀ Case 2 of 12: name ▶' and the disagreement toggle; ``go(name)`` shows a case,
    ``unsure(on)`` shows or hides the disagreement."""

    def __init__(self, go: Callable[[str], None], unsure: Callable[[bool], None]) -> None:
        super().__init__()
        self.case: str | None = None  # the case in view
        self.cases: list[str] = []
        self.hidden: set[str] = set()  # channel layers of other cases hidden by the navigator (``show_channels``)
        self._go = go
        self.previous_button, self.next_button = QPushButton("◀"), QPushButton("▶")
        for button in (self.previous_button, self.next_button):
            button.setFixedSize(36, 24)
        self.previous_button.setToolTip("show the previous image of the table alone, with its labels and results")
        self.next_button.setToolTip("show the next image of the table alone, with its labels and results")
        self.previous_button.clicked.connect(lambda: self.step(-1))
        self.next_button.clicked.connect(lambda: self.step(1))
        self.label = QLabel()
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.unsure_box = QCheckBox("Show disagreement")
        self.unsure_box.setToolTip(UNSURE_HELP)
        self.unsure_box.toggled.connect(unsure)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.previous_button)
        row.addWidget(self.label, 1)
        row.addWidget(self.next_button)
        row.addWidget(self.unsure_box)

    @property
    def unsure(self) -> bool:
        """Whether the case's disagreement layer is shown."""
        return self.unsure_box.isChecked()

    def show_cases(self, cases: list[str]) -> None:
        """Say which of ``cases`` is in view and enable the steps that lead somewhere."""
        self.cases = list(cases)
        if self.case in self.cases:
            text = f"Case {self.cases.index(self.case) + 1} of {len(self.cases)}: {self.case}"
        else:
            text = "No image yet: open one (File → Open)" if not self.cases else "No case in view"
        self.label.setText(text)
        self.label.setToolTip(text)
        self.previous_button.setEnabled(neighbour(self.cases, self.case, -1) is not None)
        self.next_button.setEnabled(neighbour(self.cases, self.case, 1) is not None)

    def step(self, step: int) -> None:
        """Show the case ``step`` places from the one in view."""
        case = neighbour(self.cases, self.case, step)
        if case is not None:
            self._go(case)
