"""The dock's 'Workspace' box: *Open workspace…*, the cases of the workspace in a table (from the workspace's
headers and review records: no voxel data), the save line, the question asked when a label file changed on
disk, and the saved versions of the case in view.

A view only: what the user picks goes back through callbacks (``WorkspaceCases`` acts on it).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..workspace import CaseInfo

CASE, STATE, DOUBT = range(3)
ROW = 22  # pixels
ROWS_SHOWN = 8


def state_text(info: CaseInfo, predicted: bool) -> str:
    """A case's state in the table: unlabelled, N of M slices reviewed, labelled, test; '· predicted'."""
    return info.state + (" · predicted" if predicted else "")


class WorkspaceBox(QGroupBox):
    """Open a workspace, its cases (a click opens one), the save line, the changed-on-disk question, history."""

    def __init__(self, open_folder: Callable[[Path], None], go: Callable[[str], None],
                 overwrite: Callable[[], None], reload: Callable[[], None], restore: Callable[[Path], None]) -> None:
        super().__init__("Workspace")
        self._open, self._go, self._restore = open_folder, go, restore
        self.open_button = QPushButton("Open workspace…")
        self.open_button.setToolTip("a folder of cases (nnU-Net or MSD layout, or a folder of images): its labels "
                                    "are saved as you go, every case trains")
        self.open_button.clicked.connect(self.ask_folder)
        self.folder = QLabel(wordWrap=True)  # (the open button sits beside the dock's summary line)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Case", "State", "Doubt"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(ROW)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(CASE, QHeaderView.ResizeMode.Stretch)
        for column in (STATE, DOUBT):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setFixedHeight(ROW * (ROWS_SHOWN + 1) + 4)
        self.table.cellClicked.connect(lambda row, _col: self._go(self.table.item(row, CASE).text()))
        self.saving = QLabel(wordWrap=True)  # what the last save did, or why it failed, in full
        self.conflict = QWidget()
        self.conflict_text = QLabel(wordWrap=True)
        self.overwrite_button = QPushButton("Save mine (theirs kept in history)")
        self.reload_button = QPushButton("Load theirs")
        self.overwrite_button.clicked.connect(overwrite)
        self.reload_button.clicked.connect(reload)
        ask = QVBoxLayout(self.conflict)
        ask.setContentsMargins(0, 0, 0, 0)
        ask.addWidget(self.conflict_text)
        buttons = QHBoxLayout()
        buttons.addWidget(self.overwrite_button)
        buttons.addWidget(self.reload_button)
        ask.addLayout(buttons)
        self.conflict.hide()
        self.versions = QComboBox()
        self.versions.setToolTip("the saved versions of the case in view (each save keeps the one it replaces)")
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("make the chosen version the case's labels again (the current one is kept)")
        self.restore_button.clicked.connect(self._restore_chosen)
        history = QHBoxLayout()
        history.addWidget(QLabel("Earlier versions:"))
        history.addWidget(self.versions, 1)
        history.addWidget(self.restore_button)
        self.history = QWidget()
        self.history.setLayout(history)
        history.setContentsMargins(0, 0, 0, 0)
        layout = QVBoxLayout(self)
        for w in (self.folder, self.table, self.saving, self.conflict, self.history):
            layout.addWidget(w)
        self.history.hide()
        self.hide()  # until a workspace is open

    def ask_folder(self) -> None:
        """The folder dialog of *Open workspace…*."""
        folder = QFileDialog.getExistingDirectory(self, "Open a workspace folder")
        if folder:
            self._open(Path(folder))

    def show_cases(self, root: Path, cases: list[CaseInfo], current: str | None, predicted: set[str],
                   doubt: dict[str, float], read_only: str | None) -> None:
        """The workspace's cases and their state; the case in view selected."""
        self.folder.setText(f"{root} · {len(cases)} cases" + (f" · read-only: {read_only}" if read_only else ""))
        self.folder.setToolTip(str(root))
        self.show()
        self.table.setRowCount(len(cases))
        for row, info in enumerate(cases):
            score = doubt.get(info.name)
            for column, text in ((CASE, info.name), (STATE, state_text(info, info.name in predicted)),
                                 (DOUBT, "" if score is None else f"{100 * score:.0f} %")):
                item = self.table.item(row, column)
                if item is None:
                    self.table.setItem(row, column, QTableWidgetItem(text))
                else:
                    item.setText(text)
            if info.name == current:
                self.table.selectRow(row)
        if current is None:
            self.table.clearSelection()

    def show_versions(self, versions: list[Path]) -> None:
        """The saved versions of the case in view, newest first."""
        self.versions.clear()
        for version in reversed(versions):
            self.versions.addItem(version.name, str(version))
        self.history.setVisible(bool(versions))

    def ask_conflict(self, text: str | None) -> None:
        """Ask what to do with a label file changed on disk (None: nothing to ask)."""
        self.conflict_text.setText(text or "")
        self.conflict.setVisible(text is not None)

    def _restore_chosen(self) -> None:
        chosen = self.versions.currentData()
        if chosen:
            self._restore(Path(chosen))
