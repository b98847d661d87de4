"""The training table: one row per image layer (use it, its case, its labels, what is reviewed) as a view of a
``Session``; a click on a row shows that case (also during a run, when the choices are locked).

An image layer is its own case or a channel of another's ("Case" column: the layers of one case, e.g.
brain_T1 and brain_T2, are grouped by default); a channel's row says so and takes no labels of its own."""
from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHeaderView,
    QStyle,
    QStyleOptionComboBox,
    QStylePainter,
    QTableWidget,
    QTableWidgetItem,
)

from ..session import Session, row_info

NONE = "— none —"
OWN = "own"  # the Case column: "own" (its own case) or the name of the image whose case it is a channel of
ROW = 22  # pixels
USE, IMAGE, LABELS, INFO, CASE = range(5)  # the columns (CASE is shown after IMAGE)
WIDTHS = {IMAGE: 80, CASE: 66, LABELS: 112}  # pixels: Info takes the rest of the dock's 540


class ElidedCombo(QComboBox):
    """A combo box whose choice, when longer than the box, is cut in the middle ('hippoc…1 labels'): the start
    and the end of a name tell cases apart. The full name is its tooltip and in the list that opens."""

    def paintEvent(self, _event) -> None:  # noqa: N802  (Qt's name)
        painter, option = QStylePainter(self), QStyleOptionComboBox()
        self.initStyleOption(option)
        text, option.currentText = option.currentText, ""
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, option)
        style, box = self.style(), QStyle.ComplexControl.CC_ComboBox
        field = style.subControlRect(box, option, QStyle.SubControl.SC_ComboBoxEditField, self)
        field.setRight(style.subControlRect(box, option, QStyle.SubControl.SC_ComboBoxArrow, self).left() - 2)
        shown = self.fontMetrics().elidedText(text, Qt.TextElideMode.ElideMiddle, field.width())
        painter.drawItemText(field, int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), self.palette(),
                             self.isEnabled(), shown, QPalette.ColorRole.ButtonText)

    def showPopup(self) -> None:  # noqa: N802
        """The list that opens is as wide as its longest name."""
        self.view().setMinimumWidth(self.view().sizeHintForColumn(0) + 24)
        super().showPopup()


class TrainingTable(QTableWidget):
    """Shows the session's rows; the user's picks go back through the callbacks, never read from the widgets."""

    def __init__(self, include: Callable[[str, bool], None], pair: Callable[[str, str | None], None],
                 clicked: Callable[[str], None], group: Callable[[str, str | None], None]) -> None:
        super().__init__(0, 5)
        self._include, self._pair, self._clicked, self._group = include, pair, clicked, group
        self._layout: tuple = ()
        self._busy = False  # during a run: the choices are locked
        self._channels: set[str] = set()  # rows that are a channel of another image's case
        self.setHorizontalHeaderLabels(["Use", "Image", "Labels", "Info", "Case"])
        self.horizontalHeaderItem(INFO).setToolTip("how many slices of the labels are reviewed (they supervise, "
                                                   "background included) and how many hold a label")
        self.horizontalHeaderItem(CASE).setToolTip("an image is its own case, or a channel of another image's case "
                                                   "(MR sequences, nnU-Net's _0000/_0001 files): layers of one shape "
                                                   "named alike (brain_T1, brain_T2) are one case by default")
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(ROW)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a cut name keeps its case number, a cut Info its end
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(INFO, QHeaderView.ResizeMode.Stretch)
        header.moveSection(CASE, LABELS)
        for column, width in WIDTHS.items():  # names cut in the middle, in full in their tooltips
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            self.setColumnWidth(column, width)
        self.setMinimumHeight(12 * ROW + 30)  # a dozen rows in view
        self.cellClicked.connect(self._on_clicked)

    def show_session(self, session: Session, case: str | None = None) -> None:
        """Render the session with the row of ``case`` (the case in view) selected: widgets are rebuilt only
        when the images or labels layers changed."""
        pairs, members = session.pairs(), session.grouping.members()
        labels, names = list(session.labels), list(session.images)
        groupable = {n: session.grouping.groupable(n) for n in names}
        layout = (tuple(groupable.items()), tuple(labels))
        if layout != self._layout:
            self._rebuild(groupable, labels)
            self._layout = layout
            self.setColumnHidden(CASE, not any(groupable.values()))  # shown where an image can join another's case
        self._channels = set(members)
        for r, name in enumerate(names):
            paired, owner = pairs.get(name), members.get(name)
            use, combo, grouping = (self.cellWidget(r, c) for c in (USE, LABELS, CASE))
            for widget, value in ((use, session.choices[name].include), (combo, paired or NONE),
                                  (grouping, groupable[name].index(owner) + 1 if owner else 0)):
                widget.blockSignals(True)
                widget.setChecked(value) if widget is use else widget.setCurrentText(value) if widget is combo \
                    else widget.setCurrentIndex(value)
                widget.blockSignals(False)
            self._lock(r)
            combo.setToolTip(f"labels of '{name}': {paired or 'none'}")
            grouping.setToolTip(f"'{name}' is a channel of the case of '{owner}'" if owner else
                                f"'{name}' is its own case; picking an image makes it a channel of that image's case "
                                "(same shape)")
            text = row_info(session, name, paired)
            item = QTableWidgetItem(text)
            item.setToolTip(f"{'×'.join(map(str, session.images[name].shape))} · {text}")
            self.setItem(r, INFO, item)
        if case in names:
            self.selectRow(names.index(case))
        else:
            self.clearSelection()

    def set_busy(self, busy: bool) -> None:
        """During a run the choices (use, case, labels) are locked; a row still shows its case."""
        self._busy = busy
        for r in range(self.rowCount()):
            self._lock(r)

    def _lock(self, row: int) -> None:
        """Enable a row's choices unless a run is on; a channel of another case has no use or labels of its own."""
        channel = self.item(row, IMAGE).text() in self._channels
        for column in (USE, LABELS, CASE):
            self.cellWidget(row, column).setEnabled(not self._busy and not (channel and column != CASE))

    def _rebuild(self, groupable: dict[str, list[str]], labels: list[str]) -> None:
        self.setRowCount(len(groupable))
        for r, (name, cases) in enumerate(groupable.items()):
            use = QCheckBox()
            use.toggled.connect(lambda checked, n=name: self._include(n, checked))
            self.setCellWidget(r, USE, use)
            item = QTableWidgetItem(name)
            item.setToolTip(name)
            self.setItem(r, IMAGE, item)
            combo = ElidedCombo()
            combo.addItems([NONE] + labels)
            combo.currentTextChanged.connect(lambda text, n=name: self._pair(n, None if text == NONE else text))
            self.setCellWidget(r, LABELS, combo)
            grouping = ElidedCombo()
            grouping.addItems([OWN, *cases])
            grouping.currentIndexChanged.connect(
                lambda i, n=name, c=tuple(cases): self._group(n, c[i - 1] if i > 0 else None))
            self.setCellWidget(r, CASE, grouping)

    def _on_clicked(self, row: int, _column: int) -> None:
        item = self.item(row, IMAGE)
        if item is not None:
            self._clicked(item.text())
