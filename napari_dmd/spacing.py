"""Per-axis pooling and patch size from the voxel spacing, planned as nnU-Net plans them.

An axis is down-sampled at a level only while its spacing (after the levels before) is at most about
twice the finest; a scan with 5 mm slices and 1.25 mm pixels is pooled in-plane first, until its
pixels are as coarse as its slices. Isotropic or unknown spacing pools 2 along every axis at every
level: today's V-Net exactly. The patch covers a similar physical extent along every axis.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

LEVELS = 4  # down-sampling levels of both networks
ANISOTROPY = 2.0  # an axis coarser than this many times the finest is not pooled
DEFAULT_MAX_VOXELS = 64 * 128 * 128
PLAUSIBLE_MM = (1e-3, 1e3)  # a voxel side outside this range (mm) is a header error, not a scan


def pooling(spacing: Sequence[float] | None, ndim: int) -> tuple[tuple[int, ...], ...]:
    """The down-sampling factor (1 or 2) along each axis at each of the ``LEVELS`` levels."""
    if spacing is None:
        return ((2,) * ndim,) * LEVELS
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing {tuple(spacing)} is not {ndim} positive numbers")
    current = [float(s) for s in spacing]
    levels = []
    for _ in range(LEVELS):
        limit = ANISOTROPY * min(current) * (1 + 1e-3)
        step = tuple(2 if s <= limit else 1 for s in current)
        levels.append(step)
        current = [s * k for s, k in zip(current, step)]
    return tuple(levels)


def implausible(spacing: Sequence[float]) -> int | None:
    """The index of the first value of ``spacing`` that is no voxel size in mm: 0, negative, not finite or
    outside ``PLAUSIBLE_MM``; None if every value is one."""
    low, high = PLAUSIBLE_MM
    return next((i for i, s in enumerate(spacing) if not (math.isfinite(s) and low <= s <= high)), None)


def data_spacing(spacings: Sequence[Sequence[float] | None]) -> tuple[float, ...] | None:
    """The median spacing per axis of some volumes; None when one of them has no spacing."""
    if not spacings or any(s is None for s in spacings):
        return None
    return tuple(float(sorted(axis)[len(axis) // 2]) for axis in zip(*spacings))


def divisors(pools: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The multiple each axis of a network input is padded to: the product of its pooling factors."""
    return tuple(math.prod(axis) for axis in zip(*pools))


def is_isotropic(pools: Sequence[Sequence[int]]) -> bool:
    """Whether every level pools 2 along every axis."""
    return all(k == 2 for level in pools for k in level)


def choose_patch(shapes: Sequence[Sequence[int]], spacing: Sequence[float] | None = None,
                 max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[int, ...]:
    """A patch from the data: the median shape rounded down to each axis's multiple (at least one
    multiple), then the axis of largest physical extent halved until the patch fits ``max_voxels``."""
    ndim = len(shapes[0])
    multiple = divisors(pooling(spacing, ndim))
    median = np.median(np.array(shapes), axis=0)
    patch = [max(d, int(m) // d * d) for m, d in zip(median, multiple)]
    scale = spacing or (1.0,) * ndim
    while math.prod(patch) > max_voxels:
        extents = [p * s for p, s in zip(patch, scale)]
        i = extents.index(max(extents))
        patch[i] = max(multiple[i], patch[i] // 2 // multiple[i] * multiple[i])
    return tuple(patch)


def describe(spacing: Sequence[float] | None, pools: Sequence[Sequence[int]]) -> str:
    """The pooling in a few words, e.g. 'pooling 1×2×2, 2×2×2, 2×2×2, 2×2×2 for spacing 5×1.25×1.25'."""
    if spacing is None:
        return "isotropic pooling (spacing unknown)"
    given = "×".join(f"{s:g}" for s in spacing)
    if is_isotropic(pools):
        return f"isotropic pooling (spacing {given})"
    return f"pooling {', '.join('×'.join(map(str, level)) for level in pools)} for spacing {given}"
