"""Merge a corrected prediction into the labels used for training, as one step of the labels' own history
(napari layers, no Qt).

What a merge writes (``merged_values``): the user's strokes on the prediction layer (voxels where
it differs from what the model proposed) everywhere, and the prediction itself only on slices not
yet reviewed; reviewed labels are replaced by the prediction only with ``overwrite=True``, the
user's explicit choice. The merged region then counts as reviewed, and the merged strokes stop being
strokes (the proposal takes their values).

The write goes through ``Labels.data_setitem`` inside ``Labels.block_history``: napari records it as
one step of the labels layer's undo history, so Ctrl+Z undoes it and Ctrl+Shift+Z redoes it (a merge
that changes no voxel still makes a step: it changed the review record). A ``MergeRecord`` keeps what
else the step changed, the slices it made reviewed and the proposal's old values; a ``StepLog``
follows the layer's history through its public events (napari keeps its own private), so the review
record and the strokes follow the labels whichever way the step is undone or redone.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Labels

from ..errors import DataError
from ..review import Reviewed


@dataclass
class Patch:
    """Values changed in an array, compactly: the bounding box of the changed voxels, a bit per voxel of
    that box, and the old and new values in the array's own type."""

    box: tuple[slice, ...]
    changed: np.ndarray  # np.packbits of the changed voxels within ``box``
    old: np.ndarray
    new: np.ndarray

    @classmethod
    def between(cls, before: np.ndarray, after: np.ndarray, region: tuple[slice, ...]) -> Patch:
        """The change from ``before`` to ``after``, two arrays of ``region`` (slices with a start)."""
        changed = before != after
        local = np.nonzero(changed)
        if not local[0].size:
            empty = np.zeros(0, dtype=before.dtype)
            return cls(region, np.zeros(0, np.uint8), empty, empty)
        lo = [int(i.min()) for i in local]
        hi = [int(i.max()) + 1 for i in local]
        inner = tuple(slice(a, b) for a, b in zip(lo, hi))
        box = tuple(slice(s.start + a, s.start + b) for s, a, b in zip(region, lo, hi))
        return cls(box, np.packbits(changed[inner]), before[changed].copy(), after[changed].copy())

    @property
    def count(self) -> int:
        return int(self.old.size)

    def indices(self) -> tuple[np.ndarray, ...]:
        """Index arrays of the changed voxels (built only when writing)."""
        shape = tuple(s.stop - s.start for s in self.box)
        if not self.count:
            return tuple(np.zeros(0, np.intp) for _ in shape)
        mask = np.unpackbits(self.changed, count=int(np.prod(shape))).reshape(shape).astype(bool)
        return tuple(i + s.start for i, s in zip(np.nonzero(mask), self.box))

    def apply(self, array: np.ndarray, forward: bool) -> None:
        """Write the new values (``forward``) or the old ones into ``array``."""
        if self.count:
            array[self.indices()] = self.new if forward else self.old

    def inverse(self) -> Patch:
        return Patch(self.box, self.changed, self.new, self.old)


@dataclass(eq=False)
class MergeRecord:
    """One merge (or, ``marks`` False, the reversal of one written as a new step; ``merge`` False, a stroke):
    the labels layer written, the step of its history, what the step changed and whether it is in effect now
    (``applied``)."""

    layer: Any  # the napari Labels layer written
    labels: Patch | None  # what the step wrote into the labels (None for a stroke: napari holds it)
    step: int  # the step's number in the layer's ``StepLog``
    slices: frozenset[int]  # slices (a 2D image: {0}) the step made reviewed, or (``marks`` False) unreviewed
    marks: bool = True
    proposal: np.ndarray | None = None  # the proposal array the merged strokes were made on
    proposal_patch: Patch | None = None  # what the step wrote into it
    prediction: Any = None  # the prediction layer merged from
    created: bool = False  # the labels layer was made by this merge
    merge: bool = True  # a merge or its reversal ('Undo merge' can revert it), not a stroke
    applied: bool = True
    reverted_by: MergeRecord | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        """Voxels of the labels the step changed."""
        return 0 if self.labels is None else self.labels.count

    @property
    def in_effect(self) -> bool:
        """A merge applied and not reverted by a later step in effect."""
        return self.marks and self.applied and not (self.reverted_by is not None and self.reverted_by.applied)


def region_of(shape: tuple[int, ...], index: int | None) -> tuple[slice, ...]:
    """The whole array (``index`` None) or slice ``index`` along axis 0 of a volume."""
    if index is None or len(shape) < 3:
        return tuple(slice(0, s) for s in shape)
    if not 0 <= index < shape[0]:
        raise DataError(f"slice {index} is outside the volume (0..{shape[0] - 1})")
    return (slice(index, index + 1),) + tuple(slice(0, s) for s in shape[1:])


def merged_values(labels: np.ndarray, edited: np.ndarray, proposed: np.ndarray | None,
                  reviewed: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """The labels after a merge of one region (all arrays of the region's shape).

    ``edited`` is the prediction layer as the user left it, ``proposed`` what the model predicted
    (None: unknown, so nothing counts as a stroke), ``reviewed`` the reviewed voxels.
    """
    if overwrite:
        return edited.astype(labels.dtype, copy=True)
    write = ~reviewed
    if proposed is not None:
        write |= edited != proposed
    return np.where(write, edited, labels).astype(labels.dtype)


def set_reviewed(rec: Reviewed, slices: frozenset[int], reviewed: bool) -> None:
    """Mark (or unmark) each of ``slices``."""
    for i in sorted(slices):
        (rec.mark if reviewed else rec.unmark)(i)


def write_step(layer: Any, patch: Patch) -> None:
    """Write ``patch`` into ``layer`` as one step of its undo history. A patch that changes nothing still makes
    a step (the review record it goes with is an edit the user can undo): one voxel of its box is written
    and put back within the step, which changes nothing when undone or redone."""
    with layer.block_history():
        if patch.count:
            layer.data_setitem(patch.indices(), patch.new)
        else:
            voxel = tuple(np.array([s.start]) for s in patch.box)
            value = np.asarray(layer.data[voxel])
            layer.data_setitem(voxel, value ^ 1)
            layer.data_setitem(voxel, value)


class StepLog:
    """A labels layer's undo history as step numbers: a new step comes with the layer's paint event
    (``stepped``), undo and redo (``moved``) are told by whoever calls them; as long as napari's, so a step
    napari let go is let go here too."""

    def __init__(self) -> None:
        self.done: deque[int] = deque(maxlen=Labels._history_limit)
        self.undone: deque[int] = deque(maxlen=Labels._history_limit)
        self._count = 0

    def stepped(self, *_event: Any) -> None:
        self._count += 1
        self.done.append(self._count)
        self.undone.clear()

    def moved(self, undoing: bool) -> None:
        source, target = (self.done, self.undone) if undoing else (self.undone, self.done)
        if source:
            target.append(source.pop())

    def reset(self, *_event: Any) -> None:
        self.done.clear()
        self.undone.clear()

    @property
    def last(self) -> int | None:
        """The newest step in effect."""
        return self.done[-1] if self.done else None

    def state(self, step: int) -> bool | None:
        """Whether ``step`` is in effect, undone, or (None) no longer held."""
        return True if step in self.done else False if step in self.undone else None


def merge(labels_layer: Any, log: StepLog, edited: np.ndarray, proposal: np.ndarray | None, rec: Reviewed,
          region: tuple[slice, ...], overwrite: bool = False, created: bool = False) -> MergeRecord:
    """Merge ``edited[region]`` into ``labels_layer`` as one step of its history (``log`` follows it), mark the
    region reviewed and give the proposal the merged values (they are no longer strokes)."""
    edited = np.asarray(edited)
    target = labels_layer.data
    if tuple(target.shape) != edited.shape:
        raise DataError(f"the prediction has shape {edited.shape} but labels '{labels_layer.name}' "
                        f"have shape {tuple(target.shape)}")
    before = np.asarray(target[region])
    proposed = None if proposal is None else np.asarray(proposal)[region]
    after = merged_values(before, edited[region], proposed, rec.mask()[region], overwrite)
    was = rec.marked()
    patch = Patch.between(before, after, region)
    write_step(labels_layer, patch)
    mark_region(rec, region)
    record = MergeRecord(labels_layer, patch, log.last, frozenset(rec.marked() - was), created=created)
    if proposal is not None:
        record.proposal = proposal
        record.proposal_patch = Patch.between(proposed, edited[region].astype(proposal.dtype), region)
        record.proposal_patch.apply(proposal, True)
    return record


def mark_region(rec: Reviewed, region: tuple[slice, ...]) -> None:
    """Mark the slices of ``region`` (along the record's axis) as reviewed; a full region: all of it."""
    s = region[rec.axis] if len(rec.shape) == 3 else slice(0, 1)
    if len(rec.shape) < 3 or (s.start == 0 and s.stop == rec.shape[rec.axis]):
        rec.whole, rec.slices = True, set()
    else:
        for i in range(s.start, s.stop):
            rec.mark(i)


def follow(record: MergeRecord, state: bool, rec: Reviewed | None, proposal: np.ndarray | None) -> None:
    """The step of ``record`` is now in effect (``state``) or undone: the review record and the proposal
    (``proposal``: the image's current one) follow it."""
    record.applied = state
    if rec is not None:
        set_reviewed(rec, record.slices, state == record.marks)
    if record.proposal_patch is not None and proposal is not None and proposal is record.proposal:
        record.proposal_patch.apply(proposal, state)


def revert(record: MergeRecord, log: StepLog, rec: Reviewed | None) -> MergeRecord:
    """Reverse a merge that is no longer the newest step of its layer, as a new step: the voxels it wrote
    that still hold its values get their old ones back (later strokes stay), its slices are unreviewed
    again, its strokes are strokes again. Returns the new step's record."""
    layer, patch = record.layer, record.labels
    before = np.array(layer.data[patch.box])
    after = before.copy()
    local = tuple(i - s.start for i, s in zip(patch.indices(), patch.box))
    still = before[local] == patch.new
    after[tuple(i[still] for i in local)] = patch.old[still]
    back = Patch.between(before, after, patch.box)
    write_step(layer, back)
    undo = MergeRecord(layer, back, log.last, record.slices, marks=False, proposal=record.proposal,
                       proposal_patch=None if record.proposal_patch is None else record.proposal_patch.inverse(),
                       prediction=record.prediction)
    record.reverted_by = undo
    follow(undo, True, rec, record.proposal)
    return undo
