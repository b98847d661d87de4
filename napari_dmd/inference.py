"""Sliding-window prediction with both networks, and where they disagree."""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import ModelPair
from .data import normalize_intensity
from .errors import DataError
from .heads import class_probabilities, out_channels
from .precision import Precision, choose_precision
from .ranking import MEASURE, slice_scores
from .runtime import memory_format


@dataclass
class Prediction:
    """Network A's label map and class probabilities, and the disagreement of the pair.

    ``disagreement`` is, per voxel, the total-variation distance ``½ Σ_c |p_A(c) − p_B(c)|`` between
    the two networks' class distributions: 0 where they agree, 1 where they are sure of different
    classes (for a binary task simply ``|p_A − p_B|``). It is bounded, so its mean ``volume_score``
    is comparable across images of any size. ``slice_scores`` rank 'label this next' (one per index
    along axis 0 of a volume, a single value for a 2D image): ``ranking.slice_scores`` under
    ``ranking.MEASURE``.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    disagreement: np.ndarray
    slice_scores: np.ndarray
    volume_score: float


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


def _windows(shape: tuple[int, ...], patch: tuple[int, ...], stride: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    for corner in itertools.product(*(window_starts(s, p, t) for s, p, t in zip(shape, patch, stride))):
        yield tuple(slice(c, c + p) for c, p in zip(corner, patch))


def sliding_window_probabilities(model: ModelPair, image: np.ndarray, patch: tuple[int, ...],
                                 stride: tuple[int, ...], batch_size: int = 4,
                                 progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """Per network, class probabilities (C, *shape) averaged over overlapping windows.

    ``image`` is already normalised. A volume smaller than the patch is padded and cropped back.
    Memory: two accumulators of C × voxels float32 plus one batch of windows. The precision is the
    model's setting as checked on this machine (``choose_precision``); a window batch with a non-finite
    result in reduced precision is computed again in fp32, and so is the rest of the image.
    """
    shape = image.shape
    padded_shape = tuple(max(s, p) for s, p in zip(shape, patch))
    padded = np.zeros(padded_shape, np.float32)
    padded[tuple(slice(0, s) for s in shape)] = image
    c = model.num_classes
    acc = [np.zeros((c, *padded_shape), np.float32) for _ in model.nets]
    count = np.zeros(padded_shape, np.float32)
    fmt = memory_format(model.ndim)
    precision = choose_precision(model.config.precision, model.device, model.ndim, out_channels(c),
                                 (batch_size, 1, *patch), fmt)
    windows = list(_windows(padded_shape, patch, stride))
    modes = [net.training for net in model.nets]
    for net in model.nets:
        precision.apply(net)
        net.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                chunk = windows[start:start + batch_size]
                x = torch.from_numpy(np.stack([padded[w] for w in chunk])[:, None]).to(model.device)
                x = x.contiguous(memory_format=fmt)
                probs = _window_probabilities(model, x, precision)
                if probs is None:
                    precision = Precision(torch.float32, (), "a reduced-precision result was not finite")
                    probs = _window_probabilities(model, x, precision)
                if probs is None:
                    raise DataError("the model's prediction is not finite (NaN) even in fp32: the model is broken")
                for a, p in zip(acc, probs):
                    for w, pw in zip(chunk, p):
                        a[(slice(None), *w)] += pw
                for w in chunk:
                    count[w] += 1
                if progress:
                    progress(min(start + batch_size, len(windows)), len(windows))
    finally:
        for net, mode in zip(model.nets, modes):
            net.train(mode)
    crop = (slice(None), *(slice(0, s) for s in shape))
    return [(a / count)[crop] for a in acc]


def _window_probabilities(model: ModelPair, x: torch.Tensor, precision: Precision) -> list[np.ndarray] | None:
    """Class probabilities of both networks for a batch of windows; ``None`` if any is not finite."""
    with precision.autocast(model.device):
        probs = [class_probabilities(net(x)) for net in model.nets]
    if not all(bool(torch.isfinite(p).all()) for p in probs):
        return None
    return [p.cpu().numpy() for p in probs]


def default_stride(patch: tuple[int, ...]) -> tuple[int, ...]:
    """Half-patch overlap."""
    return tuple(max(1, p // 2) for p in patch)


def predict(model: ModelPair, image: np.ndarray, patch_size: tuple[int, ...] | None = None,
            stride: tuple[int, ...] | None = None, batch_size: int = 4,
            progress: Callable[[int, int], None] | None = None) -> Prediction:
    """Predict a raw image (any dtype and range) with network A; disagreement from both networks."""
    image = np.asarray(image)
    if image.ndim != model.ndim:
        raise DataError(f"the model is {model.ndim}-D, the image has shape {image.shape}")
    patch = tuple(patch_size or model.config.patch_size or image.shape)
    stride = tuple(stride or default_stride(patch))
    if len(patch) != image.ndim or len(stride) != image.ndim or min(stride) < 1:
        raise DataError(f"patch {patch} and stride {stride} need {image.ndim} positive values")
    pa, pb = sliding_window_probabilities(model, normalize_intensity(image), patch, stride, batch_size, progress)
    labels = pa.argmax(axis=0).astype(np.uint8 if model.num_classes < 256 else np.int32)
    disagreement = 0.5 * np.abs(pa - pb).sum(axis=0)
    slices = slice_scores(disagreement, pa, MEASURE)
    return Prediction(labels, pa, disagreement.astype(np.float32), slices.astype(np.float32),
                      float(disagreement.mean()))
