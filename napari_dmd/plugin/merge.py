"""Merge an edited prediction into the labels used for training, undoably (napari layers, no Qt).

The merge writes through ``Labels.data_setitem`` inside ``Labels.block_history``: napari records
it as one step of the labels layer's own undo history (Ctrl+Z in the viewer undoes it). The dock's
'Undo merge' button restores the values the merge replaced from a ``MergeRecord``, also as one
undoable step, so it works even after the user painted something else in between.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError


@dataclass
class MergeRecord:
    """What one merge changed: enough to put the old values back."""

    layer: Any  # the napari Labels layer written
    indices: tuple[np.ndarray, ...]
    old: np.ndarray
    new: np.ndarray
    created: bool = False  # the labels layer was made by this merge

    @property
    def count(self) -> int:
        return int(self.old.size)


def region_of(shape: tuple[int, ...], index: int | None) -> tuple[slice, ...]:
    """The whole array (``index`` None) or slice ``index`` along axis 0 of a volume."""
    if index is None or len(shape) < 3:
        return tuple(slice(0, s) for s in shape)
    if not 0 <= index < shape[0]:
        raise DataError(f"slice {index} is outside the volume (0..{shape[0] - 1})")
    return (slice(index, index + 1),) + tuple(slice(0, s) for s in shape[1:])


def merge(labels_layer: Any, prediction: np.ndarray, region: tuple[slice, ...], created: bool = False) -> MergeRecord:
    """Copy ``prediction[region]`` into ``labels_layer.data[region]`` as one undoable edit."""
    prediction = np.asarray(prediction)
    target = labels_layer.data
    if tuple(target.shape) != prediction.shape:
        raise DataError(f"the prediction has shape {prediction.shape} but labels '{labels_layer.name}' "
                        f"have shape {tuple(target.shape)}")
    changed = np.asarray(target[region]) != prediction[region]
    local = np.nonzero(changed)
    indices = tuple(i + s.start for i, s in zip(local, region))
    old = np.array(target[indices], copy=True)
    new = prediction[indices].astype(target.dtype)
    if old.size:
        with labels_layer.block_history():
            labels_layer.data_setitem(indices, new)
    return MergeRecord(labels_layer, indices, old, new, created)


def undo(record: MergeRecord) -> None:
    """Put back the values a merge replaced (one undoable edit of the labels layer)."""
    if record.old.size:
        with record.layer.block_history():
            record.layer.data_setitem(record.indices, record.old)
