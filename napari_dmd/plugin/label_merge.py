"""Merge a corrected prediction into the labels used for training, undoably (napari layers, no Qt).

What a merge writes (``merged_values``): the user's strokes on the prediction layer (voxels where
it differs from what the model proposed) everywhere, and the prediction itself only on slices not
yet reviewed; reviewed labels are replaced by the prediction only with ``overwrite=True``, the
user's explicit choice. The merged region then counts as reviewed.

The write goes through ``Labels.data_setitem`` inside ``Labels.block_history``: napari records it
as one step of the labels layer's own undo history (Ctrl+Z undoes it). The dock's 'Undo merge'
puts back the values from a ``MergeRecord``, which keeps them compactly: the bounding box of the
changed voxels, a bit per voxel of that box, and the old and new values in the labels' own type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from ..review import Reviewed


@dataclass
class MergeRecord:
    """What one merge changed: enough to put the old values and the old review record back."""

    layer: Any  # the napari Labels layer written
    box: tuple[slice, ...]  # bounding box of the changed voxels
    changed: np.ndarray  # np.packbits of the changed voxels within ``box``
    old: np.ndarray  # their values before, in the labels' type
    new: np.ndarray
    reviewed_before: dict | None = None  # Reviewed.to_dict() before the merge
    created: bool = False  # the labels layer was made by this merge

    @property
    def count(self) -> int:
        return int(self.old.size)

    def indices(self) -> tuple[np.ndarray, ...]:
        """Index arrays of the changed voxels (built only when writing)."""
        shape = tuple(s.stop - s.start for s in self.box)
        mask = np.unpackbits(self.changed, count=int(np.prod(shape))).reshape(shape).astype(bool)
        return tuple(i + s.start for i, s in zip(np.nonzero(mask), self.box))


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


def merge(labels_layer: Any, edited: np.ndarray, proposed: np.ndarray | None, rec: Reviewed,
          region: tuple[slice, ...], overwrite: bool = False, created: bool = False) -> MergeRecord:
    """Merge ``edited[region]`` into ``labels_layer`` as one undoable edit and mark the region reviewed."""
    edited = np.asarray(edited)
    target = labels_layer.data
    if tuple(target.shape) != edited.shape:
        raise DataError(f"the prediction has shape {edited.shape} but labels '{labels_layer.name}' "
                        f"have shape {tuple(target.shape)}")
    before = np.asarray(target[region])
    after = merged_values(before, edited[region], None if proposed is None else np.asarray(proposed)[region],
                          rec.mask()[region], overwrite)
    changed = before != after
    local = np.nonzero(changed)
    previous = rec.to_dict()
    if local[0].size:
        lo = [int(i.min()) for i in local]
        hi = [int(i.max()) + 1 for i in local]
        inner = tuple(slice(a, b) for a, b in zip(lo, hi))
        box = tuple(slice(s.start + a, s.start + b) for s, a, b in zip(region, lo, hi))
        record = MergeRecord(labels_layer, box, np.packbits(changed[inner]), before[changed].copy(),
                             after[changed], previous, created)
        with labels_layer.block_history():
            labels_layer.data_setitem(record.indices(), record.new)
    else:
        empty = np.zeros(0, dtype=before.dtype)
        record = MergeRecord(labels_layer, region, np.zeros(0, np.uint8), empty, empty, previous, created)
    mark_region(rec, region)
    return record


def mark_region(rec: Reviewed, region: tuple[slice, ...]) -> None:
    """Mark the slices of ``region`` (along the record's axis) as reviewed; a full region: all of it."""
    s = region[rec.axis] if len(rec.shape) == 3 else slice(0, 1)
    if len(rec.shape) < 3 or (s.start == 0 and s.stop == rec.shape[rec.axis]):
        rec.whole, rec.slices = True, set()
    else:
        for i in range(s.start, s.stop):
            rec.mark(i)


def undo(record: MergeRecord, rec: Reviewed | None) -> None:
    """Put back the values a merge replaced (one undoable edit) and the review record it changed."""
    if record.count:
        with record.layer.block_history():
            record.layer.data_setitem(record.indices(), record.old)
    if rec is not None and record.reviewed_before is not None:
        old = Reviewed.from_dict(record.reviewed_before)
        rec.whole, rec.slices = old.whole, old.slices
