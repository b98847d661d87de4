"""Segmentation metrics with medpy's definitions (``medpy.metric.binary`` dc, jc, hd95, asd).

Surfaces are the voxels of a mask that a connectivity-1 erosion removes; distances are Euclidean
between voxel centres, in voxels or, with ``spacing`` (array order), in its units (mm).

Empty masks get defined values instead of medpy's error: both empty is a perfect match (Dice and
Jaccard 1, HD95 and ASD 0; ``napari-dmd evaluate`` leaves such a class out of its mean instead, as
MONAI's ``ignore_empty`` does, and ``summarize`` skips NaN); exactly one empty is the worst match
(Dice and Jaccard 0, HD95 and ASD the length of the image diagonal, shape × spacing, which no
distance between voxels exceeds).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from .errors import DataError

METRICS = ("dice", "jaccard", "hd95", "asd", "hd95_mm", "asd_mm")


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise DataError(f"prediction has shape {pred.shape}, the reference {ref.shape}")
    return pred, ref


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    spacing = (1.0,) * ndim if spacing is None else np.broadcast_to(np.asarray(spacing, float), (ndim,))
    return tuple(float(s) for s in spacing)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|P∩R| / (|P|+|R|); 1 when both masks are empty."""
    pred, ref = _pair(pred, ref)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 1.0 if total == 0 else 2.0 * np.count_nonzero(pred & ref) / total


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """Jaccard index |P∩R| / |P∪R|; 1 when both masks are empty."""
    pred, ref = _pair(pred, ref)
    union = np.count_nonzero(pred | ref)
    return 1.0 if union == 0 else np.count_nonzero(pred & ref) / union


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ binary_erosion(mask, structure=generate_binary_structure(mask.ndim, 1))


def _surface_distances(pred: np.ndarray, ref: np.ndarray,
                       spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of pred to ref's surface, and from ref's to pred's."""
    sp, sr = _surface(pred), _surface(ref)
    to_ref = distance_transform_edt(~sr, sampling=spacing)[sp]
    to_pred = distance_transform_edt(~sp, sampling=spacing)[sr]
    return to_ref, to_pred


def _distances(pred: np.ndarray, ref: np.ndarray, spacing: float | Sequence[float] | None) -> tuple[float, float]:
    """(hd95, asd) of two boolean masks of the same shape, with the empty-mask rules."""
    spacing = _spacing(spacing, pred.ndim)
    has_pred, has_ref = pred.any(), ref.any()
    if not has_pred and not has_ref:
        return 0.0, 0.0
    if not has_pred or not has_ref:
        diagonal = float(np.linalg.norm(np.multiply(pred.shape, spacing)))
        return diagonal, diagonal
    to_ref, to_pred = _surface_distances(pred, ref, spacing)
    return float(np.percentile(np.concatenate([to_ref, to_pred]), 95)), float(to_ref.mean())


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """95th percentile of the surface distances both ways (symmetric); see the module for empty masks."""
    return _distances(*_pair(pred, ref), spacing)[0]


def asd(pred: np.ndarray, ref: np.ndarray, spacing: float | Sequence[float] | None = None) -> float:
    """Mean distance from pred's surface to ref's (directed, as medpy's asd); see the module for empty masks."""
    return _distances(*_pair(pred, ref), spacing)[1]


def evaluate_case(pred: np.ndarray, ref: np.ndarray, num_classes: int,
                  spacing: float | Sequence[float] | None = None) -> list[dict]:
    """One row per foreground class 1..num_classes-1: class, dice, jaccard, hd95, asd, hd95_mm, asd_mm.

    hd95/asd are in voxels; the _mm ones use ``spacing`` (array order) and equal them without it.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction has shape {pred.shape}, the reference {ref.shape}")
    if num_classes < 2:
        raise DataError(f"{num_classes} classes: there must be at least 2 (background and one structure)")
    rows = []
    for c in range(1, num_classes):
        p, r = pred == c, ref == c
        voxels = _distances(p, r, None)
        mm = voxels if spacing is None else _distances(p, r, spacing)
        rows.append({"class": c, "dice": dice(p, r), "jaccard": jaccard(p, r),
                     "hd95": voxels[0], "asd": voxels[1], "hd95_mm": mm[0], "asd_mm": mm[1]})
    return rows


def _mean(values: list[float]) -> float:
    """The mean of the values that are not NaN; NaN when none is."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def summarize(rows: list[dict]) -> list[dict]:
    """Mean of each metric per class over the rows, leaving NaN out (``evaluate`` gives NaN to a class absent
    from both prediction and label); other keys, such as a case name, are ignored."""
    by_class: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_class[row["class"]].append(row)
    return [{"class": c, **{k: _mean([r[k] for r in group]) for k in METRICS}}
            for c, group in sorted(by_class.items())]
