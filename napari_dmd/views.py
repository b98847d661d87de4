"""What each network of the pair sees of a batch: the same patches (the paper), or its own random view of the
unlabeled ones, so that mutual distillation compares the two networks across perturbations (as cross
pseudo-supervision and UniMatch do) instead of on identical inputs.

A view is made on the device, from the batch as drawn: in-plane flips (the same for every unlabeled patch of one
view), then per patch and channel a brightness factor, a contrast about the patch's mean and Gaussian noise, in the
ranges of ``augment``'s intensity augmentation. The labeled patches stay as they are (their labels need no change);
``View.back`` undoes the flips on a network's output, so both outputs are compared voxel by voxel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import BRIGHTNESS, CONTRAST, NOISE_VARIANCE


@dataclass(frozen=True)
class View:
    """A network's input ``image`` and the in-plane axes ``flips`` its patches from ``first`` on were flipped along."""

    image: torch.Tensor
    first: int = 0
    flips: tuple[int, ...] = ()

    def back(self, output: torch.Tensor) -> torch.Tensor:
        """``output`` of the view (B, K, *P) in the batch's frame: the flipped patches flipped back."""
        if not self.flips:
            return output
        return torch.cat([output[:self.first], output[self.first:].flip(self.flips)])


def _uniform(low_high: tuple[float, float], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    low, high = low_high
    return low + (high - low) * torch.rand(shape, device=like.device, dtype=like.dtype)


def own_view(image: torch.Tensor, first: int) -> View:
    """A random view of the patches of ``image`` (B, C, *P) from index ``first`` on (a new tensor; ``image`` kept)."""
    unlabeled = image[first:]
    if not len(unlabeled):
        return View(image)
    flips = tuple(ax for ax in (-2, -1) if torch.rand(()) < 0.5)
    dims = tuple(range(2, image.ndim))
    per_patch = (*unlabeled.shape[:2],) + (1,) * len(dims)
    seen = unlabeled * _uniform(BRIGHTNESS, per_patch, image)
    mean = seen.mean(dims, keepdim=True)
    seen = (seen - mean) * _uniform(CONTRAST, per_patch, image) + mean
    seen = seen + _uniform(NOISE_VARIANCE, per_patch, image).sqrt() * torch.randn_like(seen)
    if flips:
        seen = seen.flip(flips)
    return View(torch.cat([image[:first], seen]), first, flips)


def network_views(image: torch.Tensor, first: int, networks: int, kind: str) -> list[View]:
    """One view per network of a batch whose unlabeled patches start at ``first``: the batch itself for each
    (``kind`` 'same'), or each network its own random view of the unlabeled patches ('own'; ``config.VIEWS``)."""
    if kind == "same":
        return [View(image)] * networks
    return [own_view(image, first) for _ in range(networks)]
