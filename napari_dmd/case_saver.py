"""Saving the case in view of a workspace off the caller's thread, one save at a time (no Qt).

The dock counts the edits of the case in view (``touch``); a save takes a copy of the labels and their review
record on the caller's thread (tens of milliseconds for a CT) and writes them through ``Workspace.save_labels``
in a thread of its own (atomic, the replaced version kept in the label history, refused over a file changed on
disk). A failed save leaves the edits unsaved (``dirty``) and the previous version on disk; its ``SaveResult``
says why in full, and whether the label file changed on disk since it was read.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DMDError
from .label_history import label_hash
from .review import Reviewed
from .workspace import CaseData, Workspace


@dataclass(frozen=True)
class SaveResult:
    """What one save did: the file written, or why nothing was (``changed_on_disk``: by another program)."""

    case: str
    generation: int  # the edits it holds
    path: Path | None = None
    error: str | None = None
    changed_on_disk: bool = False


class CaseSaver:
    """The saves of the case in view of ``workspace``; ``done(result)`` is called in the saving thread."""

    def __init__(self, workspace: Workspace, done: Callable[[SaveResult], None] = lambda _r: None) -> None:
        self.ws, self._done = workspace, done
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-dmd-save")
        self._pending: Future | None = None
        self.case: CaseData | None = None
        self.generation = 0  # edits made to the case in view
        self.saved = 0  # the edits on disk

    def load(self, case: CaseData | None) -> None:
        """The case now in view (as read); its edits start from what is on disk."""
        self.wait()
        self.case, self.generation, self.saved = case, 0, 0

    def touch(self) -> None:
        """The case in view was edited (a stroke, a merge, a slice marked)."""
        self.generation += 1

    @property
    def dirty(self) -> bool:
        """Whether the case in view holds edits not on disk."""
        return self.case is not None and self.generation != self.saved

    @property
    def busy(self) -> bool:
        """Whether a save is under way."""
        return self._pending is not None and not self._pending.done()

    def submit(self, labels: np.ndarray, reviewed: Reviewed) -> Future | None:
        """Save a copy of ``labels`` and ``reviewed`` (taken here) in the saving thread; None when nothing
        is to save or a save is under way (the next one takes the edits)."""
        if not self.dirty or self.busy:
            return None
        case, generation = self.case, self.generation
        copy, record = np.array(labels, copy=True), Reviewed.from_dict(reviewed.to_dict())
        self._pending = self._pool.submit(self._save, case, copy, record, generation)
        return self._pending

    def save_now(self, labels: np.ndarray, reviewed: Reviewed) -> SaveResult | None:
        """Save the edits before returning (moving to another case, closing); None when there were none."""
        self.wait()
        future = self.submit(labels, reviewed)
        return None if future is None else future.result()

    def _save(self, case: CaseData, labels: np.ndarray, reviewed: Reviewed, generation: int) -> SaveResult:
        name = case.info.name
        try:
            path = self.ws.save_labels(case, labels, reviewed)
            case.labels = None  # the caller's layer holds them
            result = SaveResult(name, generation, path)
        except DMDError as exc:
            changed = label_hash(self.ws.label_path(case.info)) != case.label_hash
            result = SaveResult(name, generation, error=str(exc), changed_on_disk=changed)
        except Exception as exc:  # noqa: BLE001 - any failure is said, the edits stay unsaved
            result = SaveResult(name, generation, error=f"{type(exc).__name__}: {exc}")
        if result.error is None and case is self.case:
            self.saved = max(self.saved, generation)
        self._done(result)
        return result

    def wait(self) -> None:
        """Until the save under way (if any) has ended."""
        if self._pending is not None:
            self._pending.result()

    def reread_hash(self) -> None:
        """Take the label file as it is on disk now as the version read (the user chose to overwrite it)."""
        if self.case is not None:
            self.case.label_hash = label_hash(self.ws.label_path(self.case.info))

    def close(self) -> None:
        """Wait for the save under way and end the saving thread."""
        self.wait()
        self._pool.shutdown(wait=True)
