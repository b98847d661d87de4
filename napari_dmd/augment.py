"""Augmentations of the kind nnU-Net uses with little data, on the CPU, one patch at a time.

Spatial: an in-plane rotation (the last two axes) with a scaling, about the patch's centre, sampled from a crop
grown by the margin the transform needs (so the corners show the image, not padding), the image linearly, its
labels and review mask by nearest neighbour: the three stay aligned. The slice axis is left as it is.
Intensity (image only, after normalisation): multiplicative brightness, contrast about the mean (within the
patch's range), gamma (keeping the patch's mean and std), Gaussian noise and an in-plane Gaussian blur.
Each transform fires with its own probability; with both probabilities 0 nothing is drawn from the generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import affine_transform, gaussian_filter

ROTATION_DEGREES = 15.0  # largest in-plane rotation either way
SCALE = (0.85, 1.25)  # >1 shows more of the image (zooms out), as nnU-Net's scale of the sampling grid
BRIGHTNESS = (0.75, 1.25)
CONTRAST = (0.75, 1.25)
GAMMA = (0.7, 1.5)
NOISE_VARIANCE = (0.0, 0.1)  # of the normalised image (std 1)
BLUR_SIGMA = (0.5, 1.0)  # voxels, in-plane


@dataclass(frozen=True)
class Warp:
    """An in-plane rotation by ``angle`` (radians) and scaling by ``scale`` about the patch's centre."""

    angle: float
    scale: float

    def _matrix(self) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.scale * np.array([[c, -s], [s, c]])

    def margin(self, patch: tuple[int, ...]) -> tuple[int, ...]:
        """Voxels the source crop needs beyond the patch on each side, per axis (0 along the slice axis)."""
        half = (np.array(patch[-2:], float) - 1) / 2
        reach = np.abs(self._matrix()) @ half  # the transformed patch's half extent
        return (0,) * (len(patch) - 2) + tuple(int(m) for m in np.maximum(np.ceil(reach - half), 0) + 1)

    def apply(self, source: np.ndarray, patch: tuple[int, ...], order: int) -> np.ndarray:
        """The ``patch``-sized output sampled from ``source`` (the patch's crop grown by ``margin`` on each
        side): ``order`` 1 (linear) for images, 0 (nearest) for labels and masks, in the source's type."""
        n = len(patch)
        matrix = np.eye(n)
        matrix[-2:, -2:] = self._matrix()
        centre_out = (np.array(patch, float) - 1) / 2
        centre_in = (np.array(source.shape, float) - 1) / 2
        offset = centre_in - matrix @ centre_out
        boolean = source.dtype == bool
        out = affine_transform(source.view(np.uint8) if boolean else source, matrix, offset, output_shape=patch,
                               order=order, mode="nearest")
        return out.view(bool) if boolean else out


@dataclass(frozen=True)
class Augmentation:
    """nnU-Net-like augmentation: ``spatial`` the probability of a rotation and of a scaling of a patch,
    ``intensity`` that of each of the five intensity transforms (0: off)."""

    intensity: float = 0.0
    spatial: float = 0.0

    def warp(self, rng: np.random.Generator) -> Warp | None:
        """A random in-plane ``Warp``: a rotation with probability ``spatial`` and, independently, a scaling with
        the same probability; None when neither fires."""
        if self.spatial <= 0:
            return None
        rotate, scale = rng.random() < self.spatial, rng.random() < self.spatial
        if not (rotate or scale):
            return None
        return Warp(math.radians(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES)) if rotate else 0.0,
                    rng.uniform(*SCALE) if scale else 1.0)

    def intensities(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image`` (a normalised float32 patch, changed in place) after the intensity transforms that fire."""
        p = self.intensity
        if p <= 0:
            return image
        if rng.random() < p:
            image *= np.float32(rng.uniform(*BRIGHTNESS))
        if rng.random() < p:
            mean, lo, hi = image.mean(), image.min(), image.max()
            image -= mean
            image *= np.float32(rng.uniform(*CONTRAST))
            image += mean
            np.clip(image, lo, hi, out=image)
        if rng.random() < p:
            lo, hi, mean, std = image.min(), image.max(), image.mean(), image.std()
            if hi > lo:
                image -= lo
                image /= hi - lo
                np.power(image, np.float32(rng.uniform(*GAMMA)), out=image)
                new_std = image.std()
                image -= image.mean()
                image *= std / new_std if new_std > 0 else 0.0
                image += mean
        if rng.random() < p:
            sigma = math.sqrt(rng.uniform(*NOISE_VARIANCE))
            image += sigma * rng.standard_normal(image.shape, dtype=np.float32)
        if rng.random() < p:
            sigma = rng.uniform(*BLUR_SIGMA)
            image[...] = gaussian_filter(image, (0.0,) * (image.ndim - 2) + (sigma, sigma), mode="nearest")
        return image
