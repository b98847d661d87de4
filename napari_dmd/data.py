"""Volumes (images held as given, or memory-mapped), intensity normalisation and the random patch sampler."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .augment import Augmentation, Warp
from .channels import Channels
from .errors import DataError

NORMALIZATION = "percentile-0.5-99.5-zscore"


SUBSAMPLE = 1_000_000  # voxels a float image's statistics are computed from (a fixed random subsample)
HISTOGRAM_BINS = 1 << 24  # integer images spanning at most this many values get exact statistics from a histogram
SLAB_VOXELS = 1 << 20  # voxels per block of a pass over a whole image (histogram, checks, float16 copy)


def slabs(shape: tuple[int, ...]) -> Iterator[slice]:
    """Consecutive ranges of the first axis of an array of ``shape`` holding about ``SLAB_VOXELS`` voxels each:
    a pass over a whole image block by block allocates per block, never per image."""
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(shape[1:]))))
    return (slice(i, i + step) for i in range(0, shape[0], step))


@dataclass(frozen=True)
class IntensityStats:
    """How an image is normalised: clip to its 0.5–99.5 percentiles ``lo``..``hi``, then subtract ``mean`` and
    divide by ``std`` (the clipped image's). Computed once per image, applied to any block of it (a patch, a
    window), so no normalised copy of a whole volume is ever needed."""

    lo: float
    hi: float
    mean: float
    std: float

    @classmethod
    def of(cls, image: np.ndarray) -> IntensityStats:
        """Exactly from a histogram for integer (and boolean) images; from every finite voxel of a float image
        up to ``SUBSAMPLE`` voxels, from a fixed random subsample of that many beyond. Non-finite voxels are left
        out; an image with no finite voxel gets statistics that map it to zeros."""
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.view(np.uint8)
        if np.issubdtype(image.dtype, np.integer) and image.size:
            low, high = int(image.min()), int(image.max())
            if high - low < HISTOGRAM_BINS:
                counts = np.zeros(high - low + 1, np.int64)
                for s in slabs(image.shape):
                    counts += np.bincount(np.subtract(image[s], low, dtype=np.intp).reshape(-1),
                                          minlength=counts.size)
                return cls._from_histogram(np.arange(low, high + 1, dtype=np.float64), counts)
        if image.size > SUBSAMPLE:  # drawn with replacement: no index array of the image's size
            picked = np.sort(np.random.default_rng(0).integers(0, image.size, SUBSAMPLE))
            x = image[np.unravel_index(picked, image.shape)].astype(np.float64)
        else:
            x = image.reshape(-1).astype(np.float64)
        x = x[np.isfinite(x)]
        if not x.size:
            return cls(0.0, 0.0, 0.0, 0.0)
        lo, hi = np.percentile(x, [0.5, 99.5])
        x = np.clip(x, lo, hi)
        return cls(float(lo), float(hi), float(x.mean()), float(x.std()))

    @classmethod
    def identity(cls) -> IntensityStats:
        """The statistics of an image stored already normalised (``Volume.create(..., compact=True)``):
        ``apply`` only converts to float32."""
        return cls(-np.inf, np.inf, 0.0, 1.0)

    @classmethod
    def _from_histogram(cls, values: np.ndarray, counts: np.ndarray) -> IntensityStats:
        """Percentiles as ``np.percentile`` computes them (linear between ranks), clipped mean and std."""
        keep = counts > 0
        values, counts = values[keep], counts[keep]
        cumulative = np.cumsum(counts)
        n = int(cumulative[-1])

        def at_rank(k: int) -> float:
            return float(values[np.searchsorted(cumulative, k, side="right")])

        def percentile(q: float) -> float:
            pos = q / 100 * (n - 1)
            k = int(np.floor(pos))
            a, b = at_rank(k), at_rank(min(k + 1, n - 1))
            return a + (b - a) * (pos - k)

        lo, hi = percentile(0.5), percentile(99.5)
        clipped = np.clip(values, lo, hi)
        mean = float((clipped * counts).sum() / n)
        return cls(lo, hi, mean, float(np.sqrt((counts * (clipped - mean) ** 2).sum() / n)))

    def apply(self, block: np.ndarray) -> np.ndarray:
        """``block`` (any part of the image) normalised, as a new float32 array (zeros for a constant image)."""
        x = np.array(block, dtype=np.float32)
        if not np.isfinite(x).all():
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        if self.std <= 0:
            x[...] = 0.0
            return x
        np.clip(x, self.lo, self.hi, out=x)
        x -= self.mean
        x /= self.std
        return x


def normalised(blocks: list[np.ndarray], stats: tuple[IntensityStats, ...]) -> np.ndarray:
    """The same region of each channel (``Channels.crop``), each normalised with its own statistics, stacked
    channel first as a new float32 array (C, *region)."""
    return np.stack([s.apply(b) for s, b in zip(stats, blocks)])


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    """The whole image normalised as float32 (``IntensityStats``): for small images and tests; large ones are
    normalised block by block."""
    return IntensityStats.of(image).apply(image)


def label_dtype(top: int) -> np.dtype:
    """The smallest integer type that holds label values 0..``top`` and that torch takes (uint8, int16, ...)."""
    return next(np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.int64) if top <= np.iinfo(t).max)


def _check_image(image: Channels, who: str) -> None:
    """``DataError`` for an image that cannot train: wrong shape or type, NaN or infinite values, every channel
    constant. Float channels are checked block by block (no full-size copy); integer ones hold only finite
    values."""
    if image.ndim not in (2, 3) or min(image.shape) < 1:
        raise DataError(f"{who} has shape {image.shape}: expected a 2D image or a 3D volume per channel")
    for name, channel in zip(image.names, image.arrays):
        which = who if image.count == 1 else f"channel {name!r} of {who}"
        if not (np.issubdtype(channel.dtype, np.number) or channel.dtype == bool) or np.iscomplexobj(channel):
            raise DataError(f"{which} has data type {channel.dtype}: expected real numbers")
        if np.issubdtype(channel.dtype, np.floating):
            bad = sum(channel[s].size - int(np.count_nonzero(np.isfinite(channel[s]))) for s in slabs(channel.shape))
            if bad:
                raise DataError(f"{which} holds {bad} NaN or infinite values: replace them before training")
    if all(c.max() == c.min() for c in image.arrays):
        raise DataError(f"{who} is constant (every voxel {image.arrays[0].flat[0]}): there is nothing to learn "
                        f"from it")


def _checked_label(label: np.ndarray, shape: tuple[int, ...], who: str) -> np.ndarray:
    """Labels in the smallest integer type that holds them: the same array when it is in that type already,
    a view when a type of the same size holds them (bool as uint8), a converted copy otherwise."""
    label = np.asarray(label)
    if label.shape != shape:
        raise DataError(f"labels of {who} have shape {label.shape}, the image {shape}")
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
        if not all(np.array_equal(label[s], np.round(label[s])) for s in slabs(shape)):
            raise DataError(f"labels of {who} are not whole numbers")
    if label.min() < 0:
        raise DataError(f"labels of {who} hold negative values")
    target = label_dtype(int(label.max()))
    if label.dtype == target:
        return label
    if label.dtype.kind in "biu" and label.dtype.itemsize == target.itemsize:
        return label.view(target)  # whole numbers 0..max of target have the same bytes in either type
    return label.astype(target)


def _checked_mask(mask: np.ndarray, labeled: bool, shape: tuple[int, ...], who: str) -> np.ndarray:
    """The review mask as booleans (the same array when it is boolean already)."""
    if not labeled:
        raise DataError(f"{who}: a mask of reviewed voxels needs labels")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise DataError(f"review mask of {who} has shape {mask.shape}, the image {shape}")
    if not mask.any():
        raise DataError(f"nothing of {who} is reviewed (its mask is empty): review some of it, "
                        f"or use it as an unlabeled image")
    return mask


def normalised_float16(image: np.ndarray, stats: IntensityStats) -> np.ndarray:
    """``image`` normalised with ``stats`` as a new float16 array, converted block by block."""
    out = np.empty(image.shape, np.float16)
    for s in slabs(image.shape):
        out[s] = stats.apply(image[s])
    return out


@dataclass
class Volume:
    """An image (its ``Channels``, each in its own type, not copied) with how each channel is normalised
    (``stats``, computed on first use), and, for labeled data, integer labels (in the smallest type that holds
    them) and, when only part of it was reviewed, a mask of the reviewed voxels (they supervise, whatever their
    label, so a reviewed background teaches "nothing here"). Patches are normalised one by one
    (``PatchSampler``)."""

    image: Channels
    label: np.ndarray | None = None
    mask: np.ndarray | None = None
    name: str = ""
    spacing: tuple[float, ...] | None = None
    known_stats: tuple[IntensityStats, ...] | None = field(default=None, repr=False)  # None: computed by ``stats``

    @classmethod
    def create(cls, image: np.ndarray | Channels, label: np.ndarray | None = None, mask: np.ndarray | None = None,
               name: str = "", spacing: tuple[float, ...] | None = None, compact: bool = False) -> Volume:
        """Check the input and hold it without copying it (a napari layer's data is used in place); bad input
        (NaN or infinite values, a constant image, labels that are not non-negative whole numbers, an empty
        review mask) raises ``DataError`` naming the volume. Labels all background are accepted: a reviewed
        background is valid supervision.

        ``image`` is an array (one channel) or ``Channels``. ``compact`` (for a caller that owns ``image``,
        such as the command line): each float32 or float64 channel is replaced by its normalised float16 copy,
        a half or a quarter of its size."""
        image = Channels.of(image)
        who = f"image {name!r}" if name else "image"
        _check_image(image, who)
        if label is not None:
            label = _checked_label(label, image.shape, who)
        if mask is not None:
            mask = _checked_mask(mask, label is not None, image.shape, who)
        if spacing is not None and len(spacing) != image.ndim:
            raise DataError(f"{who}: spacing {spacing} does not have {image.ndim} values")
        stats = None
        wide = [a.dtype.kind == "f" and a.dtype.itemsize > 2 for a in image.arrays]  # float32 or float64
        if compact and any(wide):
            found = [IntensityStats.of(a) for a in image.arrays]
            image = Channels([normalised_float16(a, s) if w else a for a, s, w in zip(image.arrays, found, wide)],
                             image.names)
            stats = tuple(IntensityStats.identity() if w else s for s, w in zip(found, wide))
        return cls(image, label, mask, name, tuple(map(float, spacing)) if spacing else None, stats)

    @property
    def stats(self) -> tuple[IntensityStats, ...]:
        """How each channel is normalised, computed on first use (one pass over each channel)."""
        if self.known_stats is None:
            self.known_stats = tuple(IntensityStats.of(a) for a in self.image.arrays)
        return self.known_stats

    @property
    def labeled(self) -> bool:
        """Whether the volume carries labels."""
        return self.label is not None

    def has_structure(self) -> bool:
        """Whether some supervised voxel is foreground, checked block by block (no full-size copy)."""
        if self.label is None:
            return False
        if self.mask is None:
            return bool(self.label.any())
        return any(np.logical_and(self.label[s], self.mask[s]).any() for s in slabs(self.label.shape))


class VoxelPicker:
    """Uniformly random voxels nonzero in every one of the given arrays (boolean masks; labels: their
    foreground), held as per-slice counts rather than a list of coordinates (which would cost 24 bytes per
    voxel of a large, fully annotated volume); the arrays are used as they are, not copied."""

    def __init__(self, *arrays: np.ndarray):
        self.arrays = arrays
        self.cumulative = np.cumsum([np.count_nonzero(self._slice(s)) for s in range(len(arrays[0]))],
                                    dtype=np.int64)

    def _slice(self, s: int) -> np.ndarray:
        """Slice ``s`` of the first array, or where slice ``s`` of every array is nonzero."""
        out = self.arrays[0][s]
        for a in self.arrays[1:]:
            out = np.logical_and(out, a[s])
        return out

    def __len__(self) -> int:
        return int(self.cumulative[-1]) if len(self.cumulative) else 0

    def pick(self, rng: np.random.Generator) -> np.ndarray:
        """Coordinates of one such voxel (C order, as ``np.argwhere(mask)[k]``)."""
        k = int(rng.integers(len(self)))
        s = int(np.searchsorted(self.cumulative, k, side="right"))
        within = k - (int(self.cumulative[s - 1]) if s else 0)
        flat = np.flatnonzero(self._slice(s))[within]
        return np.array((s, *np.unravel_index(flat, self.arrays[0].shape[1:])))


class PatchSampler:
    """Random crops with in-plane flips and 90° rotations; batches of labeled + unlabeled patches.

    The slice axis (the first of a 3D patch) is never flipped: anatomy is not mirror-symmetric from
    head to foot, and the paper's augmentation keeps it too.

    Crops are cut from the images as they are held and normalised one by one (``Volume.stats``), then
    padded with 0 (the mean) where the volume is smaller than the patch.

    Labeled crops are centred on a random foreground voxel with probability ``foreground_fraction``
    (0 by default: uniform crops, as in the paper) and otherwise always cover at least one
    annotated voxel. Unlabeled crops are uniform; when there is no unlabeled volume the unlabeled
    half is filled from the labeled volumes (their images only), so distillation still sees every
    voxel of every volume.

    ``sampling`` 'uniform' draws every labeled volume as often; 'reviewed' draws them in proportion to their
    reviewed voxels (a volume with one reviewed slice contributes that slice's share) and centres
    foreground-centred crops on reviewed foreground, so every labeled crop of a partly reviewed volume holds a
    reviewed voxel. ``augmentation`` adds nnU-Net-like rotations, scalings and intensity changes
    (``augment.Augmentation``; none by default).
    """

    def __init__(self, labeled: list[Volume], unlabeled: list[Volume], patch: tuple[int, ...],
                 rng: np.random.Generator, foreground_fraction: float = 0.0, sampling: str = "uniform",
                 augmentation: Augmentation | None = None):
        self.labeled, self.unlabeled = labeled, unlabeled or labeled
        self.patch, self.rng, self.fg = tuple(patch), rng, foreground_fraction
        self.augmentation = augmentation or Augmentation()
        self._ann_voxels = [VoxelPicker(v.mask) if v.mask is not None else None for v in labeled]
        reviewed = sampling == "reviewed"
        self._fg_voxels = [VoxelPicker(v.label, v.mask) if reviewed and v.mask is not None else VoxelPicker(v.label)
                           for v in labeled]  # labels are >= 0: nonzero is foreground
        self.reviewed_voxels = [len(a) if a is not None else v.image.size for v, a in zip(labeled, self._ann_voxels)]
        weights = np.array(self.reviewed_voxels, float)
        self._volume_p = weights / weights.sum() if reviewed else None
        self._jitter = np.array(self.patch) // 4

    def _corner(self, shape: tuple[int, ...], centre: np.ndarray | None) -> list[int]:
        corner = []
        for i, (s, p) in enumerate(zip(shape, self.patch)):
            hi = max(s - p, 0)
            c = self.rng.integers(0, hi + 1) if centre is None else int(np.clip(centre[i] - p // 2, 0, hi))
            corner.append(int(c))
        return corner

    def _crop(self, arr: np.ndarray, corner: list[int], fill: float, stats: IntensityStats | None = None,
              warp: Warp | None = None, order: int = 0) -> np.ndarray:
        """The patch at ``corner`` (normalised with ``stats``, if given), padded with ``fill`` past the edges;
        with a ``warp``, cut from the crop grown by its margin and resampled (``order`` 1: linear, 0: nearest)."""
        margin = warp.margin(self.patch) if warp is not None else (0,) * len(self.patch)
        size = [p + 2 * m for p, m in zip(self.patch, margin)]
        lo = [c - m for c, m in zip(corner, margin)]
        out = arr[tuple(slice(max(a, 0), a + n) for a, n in zip(lo, size))]
        if stats is not None:
            out = stats.apply(out)
        pad = [(max(-a, 0), n - s - max(-a, 0)) for a, n, s in zip(lo, size, out.shape)]
        if any(a or b for a, b in pad):
            out = np.pad(out, pad, constant_values=fill)
        return out if warp is None else warp.apply(out, self.patch, order)

    def _image(self, v: Volume, corner: list[int], warp: Warp | None) -> np.ndarray:
        """The patch at ``corner`` of every channel of ``v``, each normalised on its own, (C, *patch)."""
        return np.stack([self._crop(a, corner, 0.0, s, warp, order=1) for a, s in zip(v.image.arrays, v.stats)])

    def _intensities(self, image: np.ndarray) -> np.ndarray:
        """The intensity augmentation of each channel of a (C, *patch) patch, on its own (in place)."""
        for channel in image:
            self.augmentation.intensities(channel, self.rng)
        return image

    def _flip_rotate(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        square = self.patch[-1] == self.patch[-2]
        k = int(self.rng.integers(0, 4)) if square else 2 * int(self.rng.integers(0, 2))
        flips = [ax for ax in (-2, -1) if self.rng.random() < 0.5]
        out = []
        for a in arrays:
            a = np.rot90(a, k, axes=(-2, -1))
            if flips:
                a = np.flip(a, axis=flips)
            out.append(np.ascontiguousarray(a))
        return out

    def labeled_patch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (C, *P), label, annotated mask) of one random labeled crop."""
        n = len(self.labeled)
        i = int(self.rng.integers(n)) if self._volume_p is None else int(self.rng.choice(n, p=self._volume_p))
        v, fg, ann = self.labeled[i], self._fg_voxels[i], self._ann_voxels[i]
        centre = None
        if len(fg) and self.rng.random() < self.fg:
            centre = fg.pick(self.rng)
        elif ann is not None:
            centre = ann.pick(self.rng) + self.rng.integers(-self._jitter, self._jitter + 1)
        corner = self._corner(v.image.shape, centre)
        warp = self.augmentation.warp(self.rng)
        mask = v.mask if v.mask is not None else np.broadcast_to(np.True_, v.image.shape)  # no full-size copy
        img = self._image(v, corner, warp)
        lab, msk = self._crop(v.label, corner, 0, None, warp), self._crop(mask, corner, False, None, warp)
        img, lab, msk = self._flip_rotate([img, lab, msk])
        return self._intensities(img), lab, msk

    def unlabeled_patch(self) -> np.ndarray:
        """The image (C, *P) of one random uniform crop of an unlabeled volume."""
        v = self.unlabeled[int(self.rng.integers(len(self.unlabeled)))]
        corner = self._corner(v.image.shape, None)
        img = self._image(v, corner, self.augmentation.warp(self.rng))
        return self._intensities(self._flip_rotate([img])[0])

    def batch(self, n_labeled: int, n_unlabeled: int) -> dict[str, np.ndarray]:
        """Arrays ``image`` (B, C, *P), ``label`` and ``mask`` (n_labeled, 1, *P), labeled first."""
        lab = [self.labeled_patch() for _ in range(n_labeled)]
        unl = [self.unlabeled_patch() for _ in range(n_unlabeled)]
        images = [x[0] for x in lab] + unl
        return {
            "image": np.stack(images),
            "label": np.stack([x[1] for x in lab])[:, None],
            "mask": np.stack([x[2] for x in lab])[:, None].astype(np.float32),
        }
