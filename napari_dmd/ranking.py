"""'Label this next': the unreviewed slabs where the model is least sure (no Qt).

A slice's score is ``slice_scores(..., MEASURE)``: the mean entropy of network A's class
probabilities over the slice, divided by log(classes), so 0 means A is sure of every voxel and 1
that it cannot tell the classes apart anywhere; being a mean, it does not grow with the image size.
A slab's score is the mean over the ``slab`` slices centred on the suggested slice (fewer at the
volume's ends). Reviewed slices are never suggested nor counted, and neither are the slices around one
reviewed since the scores were computed (``recent``): the model has not learnt from it yet, so its
neighbours would repeat it.

Why entropy and not the pair's disagreement (which the disagreement layer shows): in the simulated
correction loop (``benchmarks/loop.py``, README) review guided by entropy reached a higher Dice than
review guided by the mean disagreement, its 99th percentile or the disagreement near the structure,
on both data sets; ``MEASURES`` are the scores compared there.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .config import RANKING_SLAB

if TYPE_CHECKING:
    from .review import Reviewed

SCORE_HELP = ("Doubt: how unsure the model is of its own outline over the suggested slice and its neighbours, "
              "from 0 = sure of every voxel to 100 % = cannot tell the structure from the background anywhere. "
              "Slices already reviewed, and the slices next to one you just reviewed, are left out.")


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


MEASURES = ("mean", "structure", "peak", "entropy")
MEASURE = "entropy"  # the one that ranks 'label this next'


def slice_scores(disagreement: np.ndarray, probabilities: np.ndarray, measure: str = MEASURE,
                 axis: int = 0) -> np.ndarray:
    """One score per slice along ``axis`` (one value for a 2D image), each in [0, 1]:

    - ``mean``: the mean disagreement of the slice (``slice_means``);
    - ``structure``: the mean disagreement near the structure: over the voxels that network A calls
      foreground or where the networks disagree by 0.25 or more, grown by 2 voxels in the slice's
      plane (0 for a slice with no such voxel);
    - ``peak``: the 99th percentile of the slice's disagreement (a few very unsure voxels count);
    - ``entropy``: the mean entropy of network A's class probabilities (``probabilities``, classes
      first), divided by log(classes): one network's own doubt, without its partner.
    """
    d = np.asarray(disagreement, dtype=np.float32)
    if measure == "mean":
        return slice_means(d, axis)
    p = np.asarray(probabilities, dtype=np.float32)
    if measure == "entropy":
        h = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=0) / np.log(p.shape[0])
        return slice_means(h, axis)
    planes = np.moveaxis(d, axis, 0) if d.ndim == 3 else d[None]
    if measure == "peak":
        return np.percentile(planes.reshape(len(planes), -1), 99, axis=1).astype(np.float32)
    if measure != "structure":
        raise ValueError(f"unknown measure {measure!r}: one of {', '.join(MEASURES)}")
    from scipy import ndimage

    fg = p.argmax(axis=0) > 0
    region = (np.moveaxis(fg, axis, 0) if d.ndim == 3 else fg[None]) | (planes >= 0.25)
    grow = np.zeros((3, 3, 3), bool)
    grow[1] = ndimage.generate_binary_structure(2, 1)  # in the slice's plane only
    region = ndimage.binary_dilation(region, grow, iterations=2)
    total = (planes * region).reshape(len(planes), -1).sum(axis=1)
    return (total / np.maximum(region.reshape(len(planes), -1).sum(axis=1), 1)).astype(np.float32)


def _unreviewed(rec: Reviewed | None, n: int) -> np.ndarray:
    """True for each of the ``n`` slices not reviewed yet (a 2D image: one 'slice', reviewed whole or not)."""
    if rec is None:
        return np.ones(n, bool)
    if rec.whole:
        return np.zeros(n, bool)
    if len(rec.shape) < 3:
        return np.ones(n, bool)
    return np.array([not rec.is_reviewed(i) for i in range(n)], bool)


def image_suggestions(name: str, scores: np.ndarray, reviewed: Reviewed | None = None,
                      slab: int = RANKING_SLAB, axis: int = 0,
                      recent: frozenset[int] = frozenset()) -> list[Suggestion]:
    """The image's unreviewed slabs, best first, at least ``slab`` slices apart (one entry per slab);
    ``scores`` holds one value per slice along ``axis`` (one value for a 2D image). No slab is centred
    within the slab around a slice of ``recent`` (reviewed since the scores were computed)."""
    per_slice = np.asarray(scores, dtype=np.float64).ravel()
    n, half = len(per_slice), max(0, slab // 2)
    free = _unreviewed(reviewed, n)
    near = np.zeros(n, bool)
    for r in recent:
        near[max(0, r - half):max(0, r + half + 1)] = True
    lo, hi = np.maximum(np.arange(n) - half, 0), np.minimum(np.arange(n) + half + 1, n)  # each slab, cut at the ends
    sums = np.concatenate([[0.0], np.cumsum(np.where(free, per_slice, 0.0))])
    counts = np.concatenate([[0], np.cumsum(free)])
    slab_scores = np.where(free, (sums[hi] - sums[lo]) / np.maximum(counts[hi] - counts[lo], 1), -np.inf)
    out: list[Suggestion] = []
    for i in np.argsort(-slab_scores, kind="stable"):
        if not np.isfinite(slab_scores[i]):
            break
        if not near[i] and all(abs(int(i) - s.index) >= max(1, slab) for s in out):
            out.append(Suggestion(name, axis, int(i), float(slab_scores[i])))
    return out


def suggest(scores: Mapping[str, np.ndarray], reviewed: Mapping[str, Reviewed | None],
            count: int = 10, slab: int = RANKING_SLAB, axis: int = 0,
            recent: Mapping[str, frozenset[int]] | None = None) -> list[Suggestion]:
    """Up to ``count`` unreviewed slabs, spread across images, from each image's per-slice ``scores``
    (``recent``: per image, the slices reviewed since its scores were computed: their slabs are skipped).

    Every image's best slab comes first (highest score first), then every image's second
    best, and so on: one image cannot fill the list with neighbouring slices.
    """
    recent = recent or {}
    per_image = [image_suggestions(name, v, reviewed.get(name), slab, axis, recent.get(name, frozenset()))
                 for name, v in scores.items()]
    out: list[Suggestion] = []
    rank = 0
    while len(out) < count and any(rank < len(s) for s in per_image):
        tier = sorted((s[rank] for s in per_image if rank < len(s)), key=lambda s: (-s.score, s.image))
        out += tier[:count - len(out)]
        rank += 1
    return out
