"""The dock on a workspace: the cohort listed from the workspace, only the case in view loaded as layers, and its
labels never lost (their saves: ``workspace_saves``).

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

import gc
from pathlib import Path
from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ..case_saver import CaseSaver
from ..errors import DMDError
from ..workspace import CaseData, CaseInfo, Workspace
from ..workspace_results import CohortResults
from ._layers import CLASS_NAMES, GEOMETRY, REVIEWED, class_features
from .cohort_view import CohortView
from .reader import as_label_array
from .result_layers import disagreement_name, prediction_name
from .workspace_box import WorkspaceBox
from .workspace_saves import WorkspaceSaves


def labels_name(case: str) -> str:
    """The labels layer of a workspace case."""
    return f"{case} labels"


def channel_names(case: str, count: int) -> list[str]:
    """The image layers of a case: the case's name, then '<case>_0001', ... for its other channels."""
    return [case, *(f"{case}_{c:04d}" for c in range(1, count))]


class WorkspaceCases(CohortView, WorkspaceSaves, QObject):
    """The workspace the dock works on (None: the layers in the viewer are the data) and its case in view."""

    saved = Signal(object)  # a SaveResult, emitted in the saving thread, handled in the GUI's

    def __init__(self, dock: Any) -> None:
        super().__init__()
        self.dock, self.viewer = dock, dock.viewer
        self.ws: Workspace | None = None
        self.cases: list[CaseInfo] = []
        self.case: str | None = None  # the case loaded as layers
        self.saver: CaseSaver | None = None
        self.results: CohortResults | None = None  # the latest prediction run's, from the workspace's files
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
        gc.freeze()  # napari collects garbage at each layer removed: without the start-up's objects, 10× quicker
        self.find_results()
        self.say(f"read-only: {ws.read_only}; strokes cannot be made or saved" if ws.read_only else
                 f"opened; labels are saved as you go (each stroke within {self.interval()} s)",
                 problem=bool(ws.read_only))
        self.dock.show_workspace(True)
        if self.cases:
            self.go(self.cases[0].name)
        self.refresh()
        self.dock._fill_ranking()
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
        self._show_results(info.name)

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
        self.viewer.layers.selection.clear()  # (removing the active layer just after it was added crashed napari)
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
            results = self.results or CohortResults(self.ws.layout.state)
            self.box.show_cases(self.ws.layout.root, self.cases, self.case, set(results.files), results.doubt,
                                self.ws.read_only)
        self.dock._schedule()

    def say(self, text: str, problem: bool = False) -> None:
        """The save line (a problem is a napari notification too)."""
        self.box.saving.setText(text)
        if problem:
            show_warning(text)
