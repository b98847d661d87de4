"""The user's labels layers as the dock knows them: their data (by reference), a cached ``LabelStats`` per
layer (updated on that layer's own edits, never by scanning every volume) and the ``Reviewed`` record of each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .cases import Layer
from .review import Reviewed


@dataclass
class LabelStats:
    """What the training table says about a labels layer: the largest value of each slice (along
    axis 0; one value for a 2D image), so an edit of a few slices updates only those."""

    shape: tuple[int, ...]
    slice_max: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray) -> LabelStats:
        a = np.asarray(labels)
        return cls(tuple(a.shape), cls._maxima(a))

    @staticmethod
    def _maxima(a: np.ndarray) -> np.ndarray:
        if a.size == 0:
            return np.zeros(1, np.int64)
        return a.reshape(a.shape[0], -1).max(axis=1).astype(np.int64) if a.ndim == 3 else np.array([a.max()])

    def update(self, labels: np.ndarray, slices: set[int]) -> None:
        """Recompute the given slices of a 3D volume after an edit."""
        idx = sorted(i for i in slices if 0 <= i < len(self.slice_max))
        if idx and len(self.shape) == 3:
            self.slice_max[idx] = self._maxima(np.asarray(labels[idx]))
        else:
            self.slice_max = self._maxima(np.asarray(labels))

    @property
    def top(self) -> int:
        """The largest label value."""
        return int(self.slice_max.max())

    @property
    def labeled_slices(self) -> int:
        """Slices holding a label (1 for a labeled 2D image)."""
        return int((self.slice_max > 0).sum())


def slices_of(atoms: Any, axis: int = 0) -> set[int]:
    """The indices along ``axis`` touched by a napari Labels paint event's history atoms."""
    out: set[int] = set()
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            s = key[axis]
            out.update(range(s.start or 0, s.stop))
        elif isinstance(atom, tuple) and atom and len(atom[0]) > axis:
            out.update(int(i) for i in np.unique(np.asarray(atom[0][axis])))
    return out


def review_summary(rec: Reviewed, stats: LabelStats) -> str:
    """'35/35 reviewed, 25 labeled' (slices), '2/35 reviewed, all background', 'not reviewed' ..."""
    if len(stats.shape) < 3:
        return "reviewed" if rec.whole else "not reviewed"
    n = stats.shape[rec.axis]
    labeled = f", {stats.labeled_slices} labeled" if stats.top else ", all background"
    done = n if rec.whole else len(rec.slices)
    return f"{done}/{n} reviewed{labeled}"


class LabelBook:
    """Labels layers by name (data by reference, class names), their statistics and review records."""

    def __init__(self) -> None:
        self.layers: dict[str, Layer] = {}
        self.stats: dict[str, LabelStats] = {}
        self.reviewed: dict[str, Reviewed] = {}

    def add(self, name: str, data: Any, class_names: tuple[str, ...] | None = None,
            reviewed: Reviewed | None = None) -> None:
        """A labels layer; without a record (or one of another shape), non-empty labels count as reviewed
        whole (a complete label volume), empty ones as not reviewed at all."""
        self.layers[name] = Layer(name, data, class_names=class_names or None)
        self.update_stats(name)
        shape = self.stats[name].shape
        if reviewed is None or reviewed.shape != shape:
            reviewed = Reviewed.complete(shape) if self.stats[name].top else Reviewed(shape)
        self.reviewed[name] = reviewed

    def update_stats(self, name: str) -> LabelStats | None:
        """Recompute the cached statistics of one labels layer (after its own edit)."""
        if name not in self.layers:
            return None
        self.stats[name] = LabelStats.of(self.layers[name].data)
        return self.stats[name]

    def replace(self, name: str, data: Any) -> None:
        """The layer got a new array: a record of another shape restarts."""
        self.layers[name].data = data
        self.update_stats(name)
        rec = self.reviewed.get(name)
        if rec is None or rec.shape != self.stats[name].shape:
            self.reviewed[name] = Reviewed(self.stats[name].shape)

    def painted(self, name: str, slices: set[int]) -> set[int]:
        """The user painted these slices of a labels layer: they are reviewed now. Returns the slices this
        stroke made reviewed (those that were not before), which undoing the stroke unmarks."""
        rec, new = self.reviewed.get(name), set()
        if rec is not None:
            before = rec.marked()
            for i in slices:
                if 0 <= i < rec.shape[rec.axis]:
                    rec.mark(i)
            new = set(rec.marked() - before)
        if name in self.stats:
            self.stats[name].update(self.layers[name].data, slices)
        return new

    def tables(self) -> tuple[dict[str, Any], ...]:
        """Every per-layer table."""
        return self.layers, self.stats, self.reviewed
