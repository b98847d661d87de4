"""'Label this next': the unreviewed slabs where the two networks disagree most (no Qt).

The score of a slab is the mean disagreement of its voxels: the total-variation distance between
the class distributions of networks A and B (``inference.Prediction.disagreement``), averaged over
the ``slab`` slices centred on the suggested slice (fewer at the volume's ends). 0 means the two
networks agree everywhere in the slab, 1 that they are sure of different classes everywhere; being
a mean, it does not grow with the image size. Reviewed slices are never suggested nor counted.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .review import Reviewed

SCORE_HELP = ("mean disagreement of the two networks over the slab of slices around the suggested one: "
              "0 = they agree everywhere, 1 = they are sure of different classes everywhere; "
              "reviewed slices are left out")


@dataclass(frozen=True)
class Suggestion:
    """One entry of 'label this next': a slice of an image (index 0 for a 2D image) and its score."""

    image: str
    axis: int
    index: int
    score: float


def slice_means(disagreement: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean disagreement of each slice along ``axis`` (one value for a 2D image)."""
    d = np.asarray(disagreement, dtype=np.float32)
    if d.ndim < 3:
        return np.array([float(d.mean())])
    return np.moveaxis(d, axis, 0).reshape(d.shape[axis], -1).mean(axis=1)


def _unreviewed(rec: Reviewed | None, n: int, ndim: int) -> np.ndarray:
    """True for each slice not reviewed yet (a 2D image: one 'slice', reviewed whole or not)."""
    if rec is None:
        return np.ones(n, bool)
    if rec.whole:
        return np.zeros(n, bool)
    if ndim < 3:
        return np.ones(n, bool)
    return np.array([not rec.is_reviewed(i) for i in range(n)], bool)


def image_suggestions(name: str, disagreement: np.ndarray, reviewed: Reviewed | None = None,
                      slab: int = 5, axis: int = 0) -> list[Suggestion]:
    """The image's unreviewed slabs, best first, at least ``slab`` slices apart (one entry per slab)."""
    d = np.asarray(disagreement)
    means = slice_means(d, axis)
    n = len(means)
    free = _unreviewed(reviewed, n, d.ndim)
    if d.ndim < 3:
        return [Suggestion(name, axis, 0, float(means[0]))] if free[0] else []
    half = max(0, slab // 2)
    kernel = np.ones(2 * half + 1)
    sums = np.convolve(np.where(free, means, 0.0), kernel, mode="same")
    counts = np.convolve(free.astype(float), kernel, mode="same")
    scores = np.where(free, sums / np.maximum(counts, 1), -np.inf)
    out: list[Suggestion] = []
    for i in np.argsort(-scores, kind="stable"):
        if not np.isfinite(scores[i]):
            break
        if all(abs(int(i) - s.index) >= max(1, slab) for s in out):
            out.append(Suggestion(name, axis, int(i), float(scores[i])))
    return out


def suggest(disagreement: Mapping[str, np.ndarray], reviewed: Mapping[str, Reviewed | None],
            count: int = 10, slab: int = 5, axis: int = 0) -> list[Suggestion]:
    """Up to ``count`` unreviewed slabs, spread across images.

    Every image's best slab comes first (most disagreement first), then every image's second
    best, and so on: one image cannot fill the list with neighbouring slices.
    """
    per_image = [image_suggestions(name, d, reviewed.get(name), slab, axis) for name, d in disagreement.items()]
    out: list[Suggestion] = []
    rank = 0
    while len(out) < count and any(rank < len(s) for s in per_image):
        tier = sorted((s[rank] for s in per_image if rank < len(s)), key=lambda s: (-s.score, s.image))
        out += tier[:count - len(out)]
        rank += 1
    return out
