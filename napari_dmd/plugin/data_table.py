"""The training table: one row per image (use it, its labels, what is reviewed) as a view of a ``Session``;
a click on a row shows that case (also during a run, when the choices are locked)."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QCheckBox, QComboBox, QHeaderView, QTableWidget, QTableWidgetItem

from ..session import Session

NONE = "— none —"
ROW = 22  # pixels


class TrainingTable(QTableWidget):
    """Shows the session's rows; the user's picks go back through the callbacks, never read from the widgets."""

    def __init__(self, include: Callable[[str, bool], None], pair: Callable[[str, str | None], None],
                 clicked: Callable[[str], None]) -> None:
        super().__init__(0, 4)
        self._include, self._pair, self._clicked = include, pair, clicked
        self._layout: tuple = ()
        self._busy = False  # during a run: the choices are locked
        self.setHorizontalHeaderLabels(["Use", "Image", "Labels", "Info"])
        self.horizontalHeaderItem(3).setToolTip("how many slices of the labels are reviewed (they supervise, "
                                                "background included) and how many hold a label")
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(ROW)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a cut name keeps its case number, a cut Info its end
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.setColumnWidth(2, 150)
        self.setMinimumHeight(12 * ROW + 30)  # a dozen rows in view
        self.cellClicked.connect(self._on_clicked)

    def show_session(self, session: Session, case: str | None = None) -> None:
        """Render the session with the row of ``case`` (the case in view) selected: widgets are rebuilt only
        when the images or labels layers changed."""
        pairs = session.pairs()
        labels = list(session.labels)
        layout = (tuple(pairs), tuple(labels))
        if layout != self._layout:
            self._rebuild(list(pairs), labels)
            self._layout = layout
        for r, (name, paired) in enumerate(pairs.items()):
            use, combo = self.cellWidget(r, 0), self.cellWidget(r, 2)
            for widget, value in ((use, session.choices[name].include), (combo, paired or NONE)):
                widget.blockSignals(True)
                widget.setChecked(value) if widget is use else widget.setCurrentText(value)
                widget.blockSignals(False)
            combo.setToolTip(f"labels of '{name}': {paired or 'none'}")
            text = session.info(name, paired)
            item = QTableWidgetItem(text)
            item.setToolTip(f"{'×'.join(map(str, session.images[name].shape))} · {text}")
            self.setItem(r, 3, item)
        names = list(pairs)
        if case in names:
            self.selectRow(names.index(case))
        else:
            self.clearSelection()

    def set_busy(self, busy: bool) -> None:
        """During a run the choices (use, labels) are locked; a row still shows its case."""
        self._busy = busy
        for r in range(self.rowCount()):
            for column in (0, 2):
                self.cellWidget(r, column).setEnabled(not busy)

    def _rebuild(self, images: list[str], labels: list[str]) -> None:
        self.setRowCount(len(images))
        for r, name in enumerate(images):
            use = QCheckBox(enabled=not self._busy)
            use.toggled.connect(lambda checked, n=name: self._include(n, checked))
            self.setCellWidget(r, 0, use)
            item = QTableWidgetItem(name)
            item.setToolTip(name)
            self.setItem(r, 1, item)
            combo = QComboBox(enabled=not self._busy)
            combo.addItems([NONE] + labels)
            combo.currentTextChanged.connect(lambda text, n=name: self._pair(n, None if text == NONE else text))
            self.setCellWidget(r, 2, combo)

    def _on_clicked(self, row: int, _column: int) -> None:
        item = self.item(row, 1)
        if item is not None:
            self._clicked(item.text())
