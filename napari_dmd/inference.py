"""Sliding-window prediction with both networks, and where they disagree.

Windows of the patch size are laid on a grid (``window_starts``, half-patch stride by default) and
visited in order of their corner along axis 0. Each network's class probabilities are weighted
(``window_weights``: uniformly by default, or by nnU-Net's Gaussian map; uniform measured better on both
benchmark sets, ``benchmarks/weighting.py``) and summed on the model's device into a buffer that holds only
the rows along axis 0 that some window still to come touches (about patch[0] + stride[0] rows).
As soon as no remaining window touches a block of rows, the block is finalised (weighted mean, the labels
from network A or the pair's mean, the disagreement, the per-slice scores), copied to the host and its rows are
freed. Each window is normalised on its own with the image's ``IntensityStats`` (one per channel of a
multi-channel image, ``Channels``): no float32 copy of the whole image is ever made, and a window is padded
only where the image is smaller than the patch.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce

import numpy as np
import torch

from .channels import Channels, describe
from .checkpoint import ModelPair
from .config import COMBINE, COMBINES, PREDICT_BATCH, WEIGHTING, WEIGHTINGS
from .data import IntensityStats, normalised
from .errors import DataError
from .heads import out_channels, probabilities
from .plan import Plan
from .precision import Precision
from .ranking import MEASURE, MEASURES, slice_scores
from .runtime import memory_format

NOT_FINITE = "the model's prediction is not finite (NaN) even in fp32: the model is broken"
MIRRORS = ((), (-1,), (-2,), (-2, -1))  # the in-plane flips a mirrored prediction averages (as training flips)
WRITE_VOXELS = 1 << 18  # a volume's finalised rows go to the host about this many voxels (one CT slice) at a time


@dataclass
class Prediction:
    """The label map (from network A or the pair's mean), the pair's disagreement and per-slice scores over ``rows``.

    ``labels``: uint8 (int32 from 256 classes). ``disagreement`` (float16) is, per voxel, the
    total-variation distance ``½ Σ_c |p_A(c) − p_B(c)|`` between the two networks' class
    distributions: 0 where they agree, 1 where they are sure of different classes (for a binary
    task simply ``|p_A − p_B|``). It is bounded, so its mean ``volume_score`` (computed in float64
    from the float32 values) is comparable across images of any size. ``scores`` maps each measure
    of ``ranking.MEASURES`` that was asked for, and always ``ranking.MEASURE``, to float32 per-slice
    scores (``ranking.slice_scores``: one per index along axis 0 of a volume, a single value for a
    2D image); ``slice_scores``, the ones under ``MEASURE``, rank 'label this next'. ``rows``
    (start, stop) are the indices along axis 0 that the arrays cover: (0, n) for a whole image.
    """

    labels: np.ndarray
    disagreement: np.ndarray
    scores: dict[str, np.ndarray]
    volume_score: float
    rows: tuple[int, int]

    @property
    def slice_scores(self) -> np.ndarray:
        """The per-slice scores under ``ranking.MEASURE``."""
        return self.scores[MEASURE]


def largest_components(labels: np.ndarray) -> np.ndarray:
    """The label map with each foreground class cut to its largest connected component (face
    connectivity); the voxels removed become background. An optional clean-up of stray blobs."""
    from scipy import ndimage

    out = labels.copy()
    for c in np.unique(labels):
        if c == 0:
            continue
        parts, n = ndimage.label(labels == c)
        if n > 1:
            sizes = np.bincount(parts.ravel())
            sizes[0] = 0
            out[(parts > 0) & (parts != sizes.argmax())] = 0
    return out


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Window corners along one axis covering ``size`` with the last window flush with the end."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / stride) + 1
    return sorted({min(i * stride, size - patch) for i in range(n)})


def default_stride(patch: tuple[int, ...]) -> tuple[int, ...]:
    """Half-patch overlap."""
    return tuple(max(1, p // 2) for p in patch)


def window_weights(patch: tuple[int, ...], weighting: str = WEIGHTING) -> np.ndarray:
    """A window's weight per voxel (float32, shape ``patch``) under ``weighting`` (one of ``WEIGHTINGS``)."""
    return gaussian_weights(patch) if weighting == "gaussian" else np.ones(patch, np.float32)


def gaussian_weights(patch: tuple[int, ...]) -> np.ndarray:
    """A window's weight per voxel (float32, shape ``patch``), as nnU-Net and MONAI weight sliding windows:
    a Gaussian centred on the window with sigma 1/8 of the patch along each axis, scaled to a maximum of 1,
    with values that underflow clamped to the smallest nonzero one, so the borders still count."""
    axes = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) for p in patch]
    w = reduce(np.multiply.outer, axes)
    w = (w / w.max()).astype(np.float32)
    return np.maximum(w, w[w > 0].min())


@dataclass(frozen=True)
class _Grid:
    """The windows to compute (corners, ordered along axis 0) and the rows of buffer they need."""

    corners: list[tuple[int, ...]]
    patch: tuple[int, ...]
    extent: tuple[int, ...]  # the image's shape, each axis at least the patch (windows past the image are padded)
    span: int  # rows the buffer holds: enough for any batch of windows
    stream: bool  # rows are finalised block by block (a volume); else all at the end (a 2D image)

    @classmethod
    def of(cls, shape: tuple[int, ...], patch: tuple[int, ...], stride: tuple[int, ...], rows: tuple[int, int],
           batch_size: int) -> _Grid:
        """The full image's grid, less the windows that miss ``rows``."""
        starts = [window_starts(s, p, t) for s, p, t in zip(shape, patch, stride)]
        starts[0] = [z for z in starts[0] if z < rows[1] and z + patch[0] > rows[0]]
        corners = list(itertools.product(*starts))
        extent = tuple(max(s, p) for s, p in zip(shape, patch))
        stream = len(shape) == 3
        if stream:
            last = [corners[min(i + batch_size, len(corners)) - 1][0] - c[0] for i, c in enumerate(corners)]
            span = min(max(last) + patch[0], extent[0])
        else:
            span = extent[0]
        return cls(corners, patch, extent, span, stream)

    def ready(self, done: int) -> int:
        """Rows below this are touched by none of the windows from index ``done`` on."""
        if done >= len(self.corners):
            return self.corners[-1][0] + self.patch[0]
        return self.corners[done][0] if self.stream else 0

    def first_touching(self, row: int) -> int:
        """Index of the first window that touches ``row`` or a later row."""
        return next(i for i, c in enumerate(self.corners) if c[0] + self.patch[0] > row)


class _Buffer:
    """Weighted sums of both networks' probabilities (2, K, span, ...) and of the weights over the
    open rows ``base``..``base + span`` along axis 0, on the model's device; ``bad`` records, without a host
    sync, whether any added probability was not finite."""

    def __init__(self, grid: _Grid, channels: int, device: torch.device, weighting: str):
        self.grid, self.base = grid, grid.corners[0][0]
        self.weights = torch.from_numpy(window_weights(grid.patch, weighting)).to(device)
        self.sums = torch.zeros((2, channels, grid.span, *grid.extent[1:]), device=device)
        self.weight = torch.zeros((grid.span, *grid.extent[1:]), device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)

    def add(self, corners: Sequence[tuple[int, ...]], probs: list[torch.Tensor]) -> None:
        """Add each window's probabilities (both networks, B × K × patch) at its corner; rows below
        ``base`` (already finalised) are left out."""
        self.bad |= ~torch.isfinite(sum(p.sum() for p in probs))  # NaN or Inf anywhere shows in the sum of [0, 1]s
        for b, corner in enumerate(corners):
            skip = max(0, self.base - corner[0])
            rows = slice(corner[0] + skip - self.base, corner[0] + self.grid.patch[0] - self.base)
            region = (rows, *(slice(c, c + p) for c, p in zip(corner[1:], self.grid.patch[1:])))
            w = self.weights[skip:]
            for n, p in enumerate(probs):
                self.sums[(n, slice(None), *region)].addcmul_(p[b, :, skip:], w)
            self.weight[region] += w

    def not_finite(self) -> bool:
        """Whether any probability added since the last ``clear`` was not finite (one host sync)."""
        return bool(self.bad)

    def clear(self) -> None:
        """Forget every sum (to compute the open rows again)."""
        self.sums.zero_()
        self.weight.zero_()
        self.bad.zero_()

    def free(self, stop: int) -> None:
        """Forget the rows ``base``..``stop`` (finalised): the open rows move to the front, ``base`` to ``stop``."""
        k = stop - self.base
        for i in range(0, self.grid.span - k, k):  # move the open rows to the front, k rows at a time
            n = min(k, self.grid.span - k - i)
            self.sums[:, :, i:i + n] = self.sums[:, :, i + k:i + k + n]
            self.weight[i:i + n] = self.weight[i + k:i + k + n]
        self.sums[:, :, self.grid.span - k:] = 0
        self.weight[self.grid.span - k:] = 0
        self.base = stop


class _Outputs:
    """The host arrays of a prediction, filled block of rows by block of rows."""

    def __init__(self, shape: tuple[int, ...], rows: tuple[int, int], num_classes: int, measures: Sequence[str],
                 combine: str):
        n = rows[1] - rows[0]
        self.rows, self.shape, self.measures, self.combine = rows, shape, measures, combine
        self.labels = np.zeros((n, *shape[1:]), np.uint8 if num_classes < 256 else np.int32)
        self.disagreement = np.zeros((n, *shape[1:]), np.float16)
        self.scores = {m: np.zeros(n if len(shape) == 3 else 1, np.float32) for m in measures}
        self.total = 0.0

    def write(self, start: int, stop: int, buffer: _Buffer) -> None:
        """Finalise the rows ``start``..``stop`` (the buffer's first ones) that the prediction covers, a few
        slices of a volume at a time (a 2D image's single score needs it whole)."""
        lo, hi = max(start, self.rows[0]), min(stop, self.rows[1])
        step = max(1, WRITE_VOXELS // math.prod(self.shape[1:])) if len(self.shape) == 3 else hi - lo
        for a in range(lo, hi, step):
            self._write(a, min(a + step, hi), buffer)

    def _write(self, lo: int, hi: int, buffer: _Buffer) -> None:
        """Labels, disagreement and scores of the rows ``lo``..``hi`` to the host."""
        crop = (slice(lo - buffer.base, hi - buffer.base), *(slice(0, s) for s in self.shape[1:]))
        pa, pb = (_class_channels(buffer.sums[(n, slice(None), *crop)] / buffer.weight[crop]) for n in (0, 1))
        disagreement = (0.5 * (pa - pb).abs().sum(dim=0)).cpu().numpy()
        p = (pa + pb) / 2 if self.combine == "mean" else pa
        labels = p.max(dim=0).indices.to(torch.uint8 if self.labels.dtype == np.uint8 else torch.int32).cpu().numpy()
        pa = pa.cpu().numpy()
        out = slice(lo - self.rows[0], hi - self.rows[0])
        self.labels[out] = labels
        self.disagreement[out] = disagreement
        self.total += float(disagreement.sum(dtype=np.float64))
        for m in self.measures:
            self.scores[m][out if len(self.shape) == 3 else slice(None)] = slice_scores(disagreement, pa, m)

    def prediction(self) -> Prediction:
        return Prediction(self.labels, self.disagreement, self.scores, self.total / max(self.labels.size, 1),
                          self.rows)


def _class_channels(p: torch.Tensor) -> torch.Tensor:
    """One probability channel per class (classes first) from the networks' K channels (``heads``)."""
    return torch.cat([1 - p, p]) if p.shape[0] == 1 else p


def _batch(image: Channels, stats: tuple[IntensityStats, ...], corners: Sequence[tuple[int, ...]],
           patch: tuple[int, ...]) -> np.ndarray:
    """The windows at ``corners``, each channel normalised, as a (B, C, *patch) float32 batch; zeros past the
    image."""
    x = np.zeros((len(corners), image.count, *patch), np.float32)
    for b, corner in enumerate(corners):
        window = normalised(image.crop(tuple(slice(c, c + p) for c, p in zip(corner, patch))), stats)
        x[(b, slice(None), *(slice(0, s) for s in window.shape[1:]))] = window
    return x


def _forward(model: ModelPair, batch: np.ndarray, precision: Precision, fmt: torch.memory_format, mirror: bool
             ) -> list[torch.Tensor]:
    """Both networks' probabilities (B, K, *patch; fp32) for a batch of windows; with ``mirror``, each the mean
    over the windows flipped in-plane (``MIRRORS``), flipped back."""
    x = torch.from_numpy(batch).to(model.device).contiguous(memory_format=fmt)
    flips = MIRRORS if mirror else ((),)
    with precision.autocast(model.device):
        return [sum(_flip(probabilities(net(_flip(x, f))), f) for f in flips) / len(flips) for net in model.nets]


def _flip(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``t`` flipped along ``axes`` (itself for none)."""
    return t.flip(axes) if axes else t


def _stream(model: ModelPair, image: Channels, stats: tuple[IntensityStats, ...], grid: _Grid, out: _Outputs,
            precision: Precision, batch_size: int, progress: Callable[[int, int], None] | None,
            weighting: str, mirror: bool) -> None:
    """Compute the grid's windows batch by batch into ``out``. A row block with a non-finite result in
    reduced precision is computed again in fp32, and so is the rest of the image."""
    fmt = memory_format(model.ndim)
    buffer = _Buffer(grid, out_channels(model.num_classes), model.device, weighting)
    done = 0
    while done < len(grid.corners):
        corners = grid.corners[done:done + batch_size]
        buffer.add(corners, _forward(model, _batch(image, stats, corners, grid.patch), precision, fmt, mirror))
        done += len(corners)
        stop = grid.ready(done)
        if stop > buffer.base:
            if buffer.not_finite():
                if precision.dtype == torch.float32:
                    raise DataError(NOT_FINITE)
                precision = Precision(torch.float32, (), "a reduced-precision result was not finite")
                buffer.clear()
                done = grid.first_touching(buffer.base)
                continue
            out.write(buffer.base, stop, buffer)
            buffer.free(stop)
        if progress:
            progress(done, len(grid.corners))


def _check(model: ModelPair, image: Channels, patch: tuple[int, ...], stride: tuple[int, ...],
           rows: tuple[int, int] | None, measures: Sequence[str], weighting: str, combine: str) -> None:
    """``DataError`` (``ValueError`` for an unknown measure) when the arguments do not fit the model and image."""
    if image.ndim != model.ndim:
        raise DataError(f"the model is {model.ndim}-D, the image has shape {image.shape}")
    if image.count != len(model.channels):
        raise DataError(f"the model takes {describe(model.channels)}; the image has {image.count}")
    if len(patch) != image.ndim or len(stride) != image.ndim or min(stride) < 1:
        raise DataError(f"patch {patch} and stride {stride} need {image.ndim} positive values")
    if any(t > p for t, p in zip(stride, patch)):
        raise DataError(f"stride {stride} larger than the patch {patch} would leave voxels unpredicted")
    if rows is not None and (image.ndim != 3 or not 0 <= rows[0] < rows[1] <= image.shape[0]):
        raise DataError(f"rows {rows} must be a non-empty range of the {image.shape[0]} slices of a volume")
    if weighting not in WEIGHTINGS:
        raise DataError(f"window weighting {weighting!r}: one of {', '.join(WEIGHTINGS)}")
    if combine not in COMBINES:
        raise DataError(f"labels from {combine!r}: one of {', '.join(COMBINES)}")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise ValueError(f"unknown measure {unknown[0]!r}: one of {', '.join(MEASURES)}")


def predict(model: ModelPair, image: np.ndarray | Channels, patch_size: tuple[int, ...] | None = None,
            stride: tuple[int, ...] | None = None, batch_size: int = PREDICT_BATCH,
            progress: Callable[[int, int], None] | None = None, rows: tuple[int, int] | None = None,
            measures: Sequence[str] = (), weighting: str = WEIGHTING,
            stats: tuple[IntensityStats, ...] | None = None, combine: str = COMBINE, mirror: bool = False
            ) -> Prediction:
    """Predict a raw image (any dtype and range; an array, or ``Channels`` for a multi-channel model): labels
    from network A (``combine='a'``) or from the mean of both networks' probabilities (``'mean'``);
    disagreement from both networks; the per-slice scores from network A and the disagreement, whichever labels.
    ``mirror`` averages each network's probabilities over the in-plane flips
    of every window (``MIRRORS``: 4 forward passes instead of 1).

    ``rows`` (start, stop) predicts only those slices along axis 0 of a volume, with the windows of the
    whole volume's grid that touch them, so they equal the whole prediction's rows. ``measures`` adds
    per-slice scores under those ``ranking.MEASURES`` to ``Prediction.scores``. ``weighting`` weighs each
    window's voxels (``window_weights``). ``stats`` are the image's normalisation statistics, one per
    channel, when already known (a training volume's, ``Volume.stats``); else they are computed here.
    ``progress(done, total)`` is called after each batch of ``batch_size`` windows (``done`` goes back by the
    windows computed again after a fall-back to fp32). Memory: the output arrays (3 bytes per voxel),
    one batch of windows and the open rows (about patch[0] + stride[0] rows, K channels, both networks)
    on the model's device. The precision is the model's setting as checked on this machine for this
    plan of windows (``plan.Plan.choose_precision``).
    """
    image = Channels.of(image)
    patch = tuple(patch_size or model.config.patch_size or image.shape)
    stride = tuple(stride or default_stride(patch))
    _check(model, image, patch, stride, rows, measures, weighting, combine)
    rows = (int(rows[0]), int(rows[1])) if rows is not None else (0, image.shape[0])
    grid = _Grid.of(image.shape, patch, stride, rows, batch_size)
    stats = stats or tuple(IntensityStats.of(a) for a in image.arrays)  # before the outputs (their temporaries)
    out = _Outputs(image.shape, rows, model.num_classes, tuple(dict.fromkeys((MEASURE, *measures))), combine)
    precision = Plan.of_config(model.config, model.device, patch, batch_size, training=False).choose_precision()
    modes = [net.training for net in model.nets]
    for net in model.nets:
        precision.apply(net)
        net.eval()
    try:
        with torch.inference_mode():
            _stream(model, image, stats, grid, out, precision, batch_size, progress, weighting, mirror)
    finally:
        for net, mode in zip(model.nets, modes):
            net.train(mode)
    return out.prediction()
