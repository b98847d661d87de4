"""Keeping the labels of a workspace's case in view (a part of ``WorkspaceCases``): saved every
``RunOptions.autosave`` seconds while they hold unsaved edits (``case_saver``: a copy taken here, written in a
thread of its own), at once when asked (moving on, a merge, Start, closing); a label file changed on disk asked
about; a failed save said in full, the strokes kept in the layer; an earlier version restored.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..case_saver import SaveResult
from ..config import RunOptions
from ..errors import DMDError
from ..review import Reviewed
from ._layers import REVIEWED
from .reader import as_label_array


class WorkspaceSaves:
    """The saves of the case in view (mixed into ``WorkspaceCases``, whose workspace, saver and layer it uses)."""

    def interval(self) -> int:
        """Seconds within which a stroke is on disk (the declared setting; saves come every half of it)."""
        try:
            return int(self.dock.settings.options().autosave)
        except DMDError:
            return RunOptions().autosave

    def _arm(self) -> None:
        if self.ws is not None:
            self.timer.start(500 * self.interval())  # a stroke is on disk within the interval

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
        try:
            self.ws.reread_labels(case)
        except DMDError as exc:
            self.say(f"not loaded: {exc}", problem=True)
            return
        labels = np.zeros(case.image.shape, np.uint8) if case.labels is None else as_label_array(case.labels)
        case.labels = None  # the layer holds them
        self._conflict = False
        self.box.ask_conflict(None)
        self._show_labels(labels, case.reviewed)
        self.saver.load(case)
        self.say(f"{case.info.name}: the labels on disk loaded")

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
