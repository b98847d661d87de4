"""The dock on a workspace: the cohort listed from the workspace, only the case in view loaded as layers, and its
labels never lost.

Opening a workspace lists its cases (``Workspace.cases``: headers and review records) and loads the first as
layers: its channels (one picture), its labels (an empty labels layer where it has none yet) with their review
record. Moving to another case saves the one in view and removes its layers (its image, labels and results), so
the viewer holds one case at a time. The labels of the case in view are saved (``case_saver``: a copy taken
here, written in a thread of its own) every ``RunOptions.autosave`` seconds while they hold unsaved edits, and
at once on a merge, a Start and when the dock or napari closes. A label file changed on disk by another program
is never overwritten silently: the dock asks. A failed save is said in full in the save line; the strokes stay
in the layer and the previous version on disk. A second napari on the same workspace opens it read-only, says
why, and its labels layers cannot be painted.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ..case_saver import CaseSaver, SaveResult
from ..errors import DMDError
from ..label_history import label_hash
from ..review import Reviewed, load_reviewed, sidecar_path
from ..workspace import CaseData, CaseInfo, Workspace
from ._layers import CLASS_NAMES, GEOMETRY, REVIEWED, class_features
from .reader import as_label_array
from .result_layers import disagreement_name, prediction_name
from .workspace_box import WorkspaceBox


def labels_name(case: str) -> str:
    """The labels layer of a workspace case."""
    return f"{case} labels"


def channel_names(case: str, count: int) -> list[str]:
    """The image layers of a case: the case's name, then '<case>_0001', ... for its other channels."""
    return [case, *(f"{case}_{c:04d}" for c in range(1, count))]


class WorkspaceCases(QObject):
    """The workspace the dock works on (None: the layers in the viewer are the data) and its case in view."""

    saved = Signal(object)  # a SaveResult, emitted in the saving thread, handled in the GUI's

    def __init__(self, dock: Any) -> None:
        super().__init__()
        self.dock, self.viewer = dock, dock.viewer
        self.ws: Workspace | None = None
        self.cases: list[CaseInfo] = []
        self.case: str | None = None  # the case loaded as layers
        self.saver: CaseSaver | None = None
        self.layer: Any = None  # the labels layer of the case in view (held: saved even once removed)
        self._layers: list[str] = []  # every layer of the case in view
        self._record: dict | None = None  # its review record as last saved (marking a slice is an edit)
        self._conflict = False  # a label file changed on disk: no save until the user says which to keep
        self._failing = False  # the last save failed (said once as a notification)
        self.box = WorkspaceBox(self.open, self.go, self.overwrite, self.reload, self.restore)
        self.timer = QTimer(self, singleShot=True)
        self.timer.timeout.connect(self.autosave)
        self.saved.connect(self._on_saved)

    # ------------------------------------------------------------------ opening and moving
    def names(self) -> list[str]:
        """The cases of the workspace, in its order."""
        return [c.name for c in self.cases]

    def open(self, folder: Path) -> bool:
        """Open the workspace in ``folder`` (the one open before is saved and closed) and show its first case."""
        if not self.close():
            return False
        try:
            ws = Workspace(Path(folder))
        except DMDError as exc:
            self.say(f"not opened: {exc}", problem=True)
            return False
        try:
            self.cases = ws.cases()
        except DMDError as exc:
            ws.close()
            self.say(f"not opened: {exc}", problem=True)
            return False
        self.ws, self.saver = ws, CaseSaver(ws, self.saved.emit)
        self.say(f"read-only: {ws.read_only}; strokes cannot be made or saved" if ws.read_only else
                 f"opened; labels are saved as you go (every {self.interval()} s while they hold unsaved strokes)",
                 problem=bool(ws.read_only))
        self.dock.show_workspace(True)
        if self.cases:
            self.go(self.cases[0].name)
        self.refresh()
        self._arm()
        return True

    def go(self, name: str) -> bool:
        """Show case ``name``: the case in view is saved and released first (not where its save fails)."""
        if self.ws is None or name not in self.names():
            return False
        if name == self.case:
            self.dock.show_case(name)
            return True
        if not self.release():
            return False
        try:
            data = self.ws.read(name)
        except DMDError as exc:
            self.say(f"{name} not opened: {exc}", problem=True)
            self.refresh()
            return False
        self._load(data)
        self.refresh()
        return True

    def _load(self, data: CaseData) -> None:
        """Add the layers of a case read from the workspace: its channels, then its labels."""
        info, geometry = data.info, data.geometry
        place = {"scale": geometry.scale, "translate": geometry.translate}
        meta = {GEOMETRY: geometry.to_dict(), "path": str(info.images[0])}
        names = channel_names(info.name, data.image.count)
        for c, (name, array) in enumerate(zip(names, data.image.arrays)):
            self.viewer.add_image(array, name=name, colormap="gray", blending="additive" if c else "translucent",
                                  metadata=dict(meta), **place)
        for name in names[1:]:
            self.dock.session.grouping.group(name, info.name)
        classes = self.ws.layout.class_names
        labels = as_label_array(data.labels) if data.labels is not None else np.zeros(data.image.shape, np.uint8)
        extra = {"features": class_features(classes)} if classes else {}
        layer = self.viewer.add_labels(labels, name=labels_name(info.name), metadata={
            **meta, CLASS_NAMES: list(classes), REVIEWED: data.reviewed.to_dict()}, **place, **extra)
        layer.editable = not self.ws.read_only
        for event in (layer.events.paint, layer.events.data, layer.events.labels_update):
            event.connect(self._edited)
        data.labels = None  # the layer holds them
        self.case, self.layer, self._layers = info.name, layer, [*names, layer.name]
        self._record = data.reviewed.to_dict()
        self.saver.load(data)
        self.box.show_versions(self.ws.history.versions(info.name))
        self.dock.show_case(info.name)

    def release(self) -> bool:
        """Save the case in view and remove its layers (and its results); False, the case kept, where the save
        failed."""
        if self.case is None:
            return True
        result = self.save_now()
        if result is not None and result.error is not None:
            self.say(f"{self.case} is kept open: {result.error}", problem=True)
            return False
        case = self.case
        self.case, self.layer = None, None
        for name in (prediction_name(case), disagreement_name(case), *self._layers):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        self._layers = []
        self.saver.load(None)
        return True

    def close(self) -> bool:
        """Save and release the case in view and close the workspace (the dock or napari closes, another
        workspace opens); False where the save failed (the workspace stays open)."""
        if self.ws is None:
            return True
        self.timer.stop()
        if self.layer is not None and self.layer not in self.viewer.layers:  # napari closing: save what it held
            self.save_now()
        elif not self.release():
            return False
        self.saver.close()
        self.ws.close()
        self.ws, self.saver, self.cases, self.case, self.layer = None, None, [], None, None
        self.dock.show_workspace(False)
        return True

    # ------------------------------------------------------------------ saving
    def interval(self) -> int:
        """Seconds between saves while the labels hold unsaved edits (the declared setting)."""
        try:
            return int(self.dock.settings.options().autosave)
        except DMDError:
            return 10

    def _arm(self) -> None:
        if self.ws is not None:
            self.timer.start(1000 * self.interval())

    def _edited(self, *_event: Any) -> None:
        if self.saver is not None:
            self.saver.touch()

    def _snapshot(self) -> tuple[np.ndarray, Reviewed] | None:
        """The labels layer of the case in view and its review record (the record compared with the one last
        saved: a slice marked or unmarked is an edit)."""
        if self.layer is None or self.saver is None or self.saver.case is None:
            return None
        rec = self.dock.session.reviewed.get(self.layer.name) or Reviewed.from_dict(self.layer.metadata[REVIEWED])
        now = rec.to_dict()
        if now != self._record:
            self.saver.touch()
            self._record = now
        return self.layer.data, rec

    def autosave(self) -> None:
        """Save the case in view in the saving thread where it holds unsaved edits (the timer's tick)."""
        try:
            got = self._snapshot()
            if got is not None and not self._conflict and not (self.ws and self.ws.read_only):
                self.saver.submit(*got)
        finally:
            self._arm()

    def save_soon(self) -> None:
        """Save now in the saving thread (after a merge)."""
        self.autosave()

    def save_now(self) -> SaveResult | None:
        """Save the case in view before returning (moving on, Start, closing); None when nothing was to save."""
        got = self._snapshot()
        if got is None or self.saver is None:
            return None
        if self._conflict:
            return SaveResult(self.case or "", self.saver.generation, error=self.box.conflict_text.text(),
                              changed_on_disk=True)
        result = self.saver.save_now(*got)
        if result is not None:
            self._on_saved(result)
        return result

    def _on_saved(self, result: SaveResult) -> None:
        if result.error is None:
            self._failing = False
            self.say(f"{result.case} saved at {time.strftime('%H:%M:%S')} ({result.path.name}; the version before "
                     f"it is kept)")
            self._update_case(result.case)
            return
        if result.changed_on_disk and result.case == self.case and self.ws is not None:
            self._conflict = True
            self.box.ask_conflict(f"{self.ws.label_path(self.saver.case.info)} was changed on disk by another "
                                  f"program since it was opened here. Your strokes are kept in the layer, unsaved. "
                                  f"Save yours over it (the file on disk is kept in the case's history), or load it "
                                  f"(your unsaved strokes are dropped)?")
        self.say(f"NOT SAVED: {result.error} — your strokes stay in the layer, the previous version on disk",
                 problem=not self._failing)
        self._failing = True

    def overwrite(self) -> None:
        """The user keeps their labels over a file changed on disk (that file is kept in the history)."""
        if self.saver is None:
            return
        self.saver.reread_hash()
        self._conflict = False
        self.box.ask_conflict(None)
        self.saver.touch()
        self.save_now()

    def reload(self) -> None:
        """The user takes the label file as it is on disk now (the unsaved strokes are dropped)."""
        case = self.saver.case if self.saver is not None else None
        if case is None:
            return
        path = self.ws.label_path(case.info)
        try:
            labels = as_label_array(self._read_labels(path)) if path.is_file() else np.zeros(case.image.shape,
                                                                                                np.uint8)
            record = sidecar_path(path)
            rec = load_reviewed(record, labels.shape) if record.is_file() else \
                Reviewed.complete(labels.shape) if path.is_file() else Reviewed(labels.shape)
        except DMDError as exc:
            self.say(f"not loaded: {exc}", problem=True)
            return
        case.label_hash = label_hash(path)
        self._conflict = False
        self.box.ask_conflict(None)
        self._show_labels(labels, rec)
        self.saver.load(case)
        self.say(f"{case.info.name}: the labels on disk loaded")

    @staticmethod
    def _read_labels(path: Path) -> np.ndarray:
        from ..io import read_image

        return read_image(path)[0]

    def restore(self, version: Path) -> None:
        """Make a saved version the labels of the case in view (its current labels saved and kept first)."""
        if self.ws is None or self.saver is None or self.saver.case is None:
            return
        result = self.save_now()
        if result is not None and result.error is not None:
            return
        case = self.saver.case
        try:
            self.ws.restore(case, version)
        except DMDError as exc:
            self.say(f"not restored: {exc}", problem=True)
            return
        self._show_labels(case.labels, case.reviewed)
        case.labels = None
        self.saver.load(case)
        self._update_case(case.info.name)
        self.say(f"{case.info.name}: the version of {version.name} restored (the one before it is kept)")

    def _show_labels(self, labels: np.ndarray, rec: Reviewed) -> None:
        """Put labels read from disk into the labels layer in view, with their review record."""
        name = self.layer.name
        self.layer.data = labels
        self.dock.session.reviewed[name] = rec
        self.dock.sync.store(name)
        self._record = rec.to_dict()
        self.dock.refresh_view()

    # ------------------------------------------------------------------ the view
    def _update_case(self, name: str) -> None:
        """Re-read one case's headers and record after a save (its state in the table)."""
        if self.ws is None:
            return
        try:
            info = self.ws.case(name)
        except DMDError:
            return
        self.cases = [info if c.name == name else c for c in self.cases]
        if name == self.case:
            self.box.show_versions(self.ws.history.versions(name))
        self.refresh()

    def refresh(self) -> None:
        """The table of cases (and, soon after, the dock's summary line)."""
        if self.ws is not None:
            self.box.show_cases(self.ws.layout.root, self.cases, self.case, set(), {}, self.ws.read_only)
        self.dock._schedule()

    def summary(self) -> str:
        """What the workspace holds: '40 cases: 3 labelled, 2 partly reviewed, 35 unlabelled (1 test)'."""
        train = [c for c in self.cases if not c.test]
        whole = sum(c.labelled_whole for c in train)
        partly = sum(c.label is not None and bool(c.reviewed) for c in train)
        tests = len(self.cases) - len(train)
        return (f"{len(self.cases)} cases: {whole} labelled, {partly} partly reviewed, "
                f"{len(train) - whole - partly} unlabelled" + (f" ({tests} test)" if tests else ""))

    def say(self, text: str, problem: bool = False) -> None:
        """The save line (a problem is a napari notification too)."""
        self.box.saving.setText(text)
        if problem:
            show_warning(text)
