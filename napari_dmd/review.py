"""What the user reviewed of an image's labels: the whole image, or slices along one axis.

A reviewed voxel supervises training whatever its label value, so a reviewed slice left at
background teaches "nothing here". The record lives beside the label file as
``<case>.reviewed.json``; a label file without one counts as completely reviewed. A run folder keeps
what supervised it in ``reviewed.json`` (``write_run_record``), from the dock and the command line alike.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError

SIDECAR_SUFFIX = ".reviewed.json"
RUN_RECORD = "reviewed.json"  # in a run folder: the review records and ignored label value that supervised it


@dataclass
class Reviewed:
    """What the user reviewed of one image: all of it, or slices along one axis.

    A 2D image is reviewed whole or not at all: ``mark`` and ``unmark`` of any index set ``whole``.
    """

    shape: tuple[int, ...]
    axis: int = 0
    slices: set[int] = field(default_factory=set)
    whole: bool = False

    def __post_init__(self) -> None:
        try:
            self.shape = tuple(int(s) for s in self.shape)
            self.axis = int(self.axis)
            self.slices = {int(i) for i in self.slices}
        except (TypeError, ValueError) as exc:
            raise DataError(f"not a valid review record: {exc}") from exc
        self.whole = bool(self.whole)
        if len(self.shape) not in (2, 3) or min(self.shape) < 1:
            raise DataError(f"a review record needs a 2D or 3D shape, got {self.shape}")
        if not 0 <= self.axis < len(self.shape):
            raise DataError(f"review axis {self.axis} is not an axis of shape {self.shape}")
        if len(self.shape) == 2 and self.slices:
            raise DataError("a 2D image is reviewed whole or not at all, not by slices")
        outside = sorted(i for i in self.slices if not 0 <= i < self.shape[self.axis])
        if outside:
            raise DataError(f"reviewed slice {outside[0]} lies outside the {self.shape[self.axis]} slices "
                            f"along axis {self.axis}")

    @classmethod
    def complete(cls, shape: Sequence[int]) -> Reviewed:
        """A record of an image reviewed whole (a complete label volume)."""
        return cls(tuple(shape), whole=True)

    @property
    def _sliced(self) -> bool:
        return len(self.shape) == 3

    def _check(self, index: int) -> int:
        index = int(index)
        if self._sliced and not 0 <= index < self.shape[self.axis]:
            raise DataError(f"slice {index} is outside the {self.shape[self.axis]} slices along axis {self.axis}")
        return index

    def mark(self, index: int) -> None:
        """Mark slice ``index`` (along ``axis``) as reviewed; for a 2D image, the whole image."""
        index = self._check(index)
        if not self._sliced:
            self.whole = True
        elif not self.whole:
            self.slices.add(index)

    def unmark(self, index: int) -> None:
        """Mark slice ``index`` as not reviewed (a whole record keeps every other slice); 2D: the image."""
        index = self._check(index)
        if not self._sliced:
            self.whole = False
            return
        if self.whole:
            self.whole, self.slices = False, set(range(self.shape[self.axis]))
        self.slices.discard(index)

    def is_reviewed(self, index: int) -> bool:
        """Whether slice ``index`` (a 2D image: the image) is reviewed."""
        return self.whole or (self._sliced and int(index) in self.slices)

    def marked(self) -> frozenset[int]:
        """The reviewed slices (a 2D image: {0} when reviewed)."""
        if not self._sliced:
            return frozenset({0} if self.whole else ())
        return frozenset(range(self.shape[self.axis])) if self.whole else frozenset(self.slices)

    def mask(self) -> np.ndarray:
        """Boolean array of ``shape``: True on reviewed voxels (they supervise, whatever their label)."""
        if self.whole:
            return np.ones(self.shape, dtype=bool)
        out = np.zeros(self.shape, dtype=bool)
        if self.slices:
            index: list[Any] = [slice(None)] * len(self.shape)
            index[self.axis] = sorted(self.slices)
            out[tuple(index)] = True
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for JSON."""
        return {"shape": list(self.shape), "axis": self.axis, "slices": sorted(self.slices), "whole": self.whole}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reviewed:
        """Inverse of :meth:`to_dict`; ``DataError`` for anything else."""
        if not isinstance(d, dict) or "shape" not in d:
            raise DataError("not a valid review record: no shape")
        if not isinstance(d.get("slices", []), list):
            raise DataError("not a valid review record: slices must be a list")
        return cls(d["shape"], d.get("axis", 0), set(d.get("slices", [])), d.get("whole", False))


def sidecar_path(label_path: str | Path) -> Path:
    """``<case>.reviewed.json`` beside the label file ``<case>.<ext>``."""
    from .io import case_name

    label_path = Path(label_path)
    return label_path.parent / f"{case_name(label_path)}{SIDECAR_SUFFIX}"


def save_reviewed(rec: Reviewed, path: str | Path) -> None:
    """Write the record as JSON, atomically."""
    from .io import write_text

    write_text(path, json.dumps(rec.to_dict(), indent=1) + "\n")


def load_reviewed(path: str | Path, shape: Sequence[int]) -> Reviewed:
    """The record at ``path`` of an image of ``shape``; ``DataError`` for a bad file or another shape."""
    path = Path(path)
    try:
        rec = Reviewed.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read the review record {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    if rec.shape != tuple(int(s) for s in shape):
        raise DataError(f"{path} records shape {rec.shape}, but its labels have shape {tuple(shape)}")
    return rec


def write_run_record(run_dir: Path, partly_reviewed: dict[str, Reviewed], ignore_label: int | None = None) -> Path:
    """Keep in ``run_dir/reviewed.json`` what supervised a run: the record of each partly reviewed image (the
    others were reviewed whole) and the label value ignored, if any. Written atomically."""
    from .io import write_text

    record = {"ignore_label": ignore_label, "partly_reviewed": {n: r.to_dict() for n, r in partly_reviewed.items()}}
    path = Path(run_dir) / RUN_RECORD
    write_text(path, json.dumps(record, indent=1) + "\n")
    return path
