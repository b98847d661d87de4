"""Bidirectional copy-paste (BCP; Bai et al., CVPR 2023) adapted to two mutually distilled networks.

BCP pastes a box of an unlabeled image into a labeled one and the same box of the labeled image into the
unlabeled one, so labeled and unlabeled data share one distribution. Here a batch of ``PatchSampler.batch``
(labeled patches first) is mixed in place of itself: labeled patch ``i`` receives the box ``i`` of unlabeled
patch ``i mod U`` and unlabeled patch ``j`` the box ``j`` of labeled patch ``j mod L``, so with as many
labeled as unlabeled patches each pair swaps one box, BCP's scheme. Every mixed patch carries labels and a
review mask where its voxels come from a labeled patch (and were reviewed there), none elsewhere: the pasted
labeled region is supervised by its labels, every voxel by the distillation between the two networks.
"""
from __future__ import annotations

import numpy as np


def random_box(patch: tuple[int, ...], ratio: float, rng: np.random.Generator) -> tuple[slice, ...]:
    """A box whose side along every axis is ``ratio`` of the patch's (rounded), at a random place inside it."""
    sides = [int(round(ratio * p)) for p in patch]
    starts = [int(rng.integers(0, p - s + 1)) for p, s in zip(patch, sides)]
    return tuple(slice(a, a + s) for a, s in zip(starts, sides))


def copy_paste(batch: dict[str, np.ndarray], ratio: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The batch mixed (new arrays): ``image`` as before, ``label`` and ``mask`` now for every patch (B, 1, *P).
    A batch without unlabeled patches is returned as it is."""
    image, label, mask = batch["image"], batch["label"], batch["mask"]
    n_lab, n_all = len(label), len(image)
    n_unl = n_all - n_lab
    if n_unl == 0:
        return batch
    boxes = [(slice(None),) + random_box(image.shape[2:], ratio, rng) for _ in range(max(n_lab, n_unl))]
    mixed = image.copy()
    labels = np.zeros((n_all, *label.shape[1:]), label.dtype)
    masks = np.zeros((n_all, *mask.shape[1:]), mask.dtype)
    labels[:n_lab], masks[:n_lab] = label, mask
    for i in range(n_lab):  # a box of unlabeled image: not supervised there
        box, j = boxes[i], n_lab + i % n_unl
        mixed[i][box] = image[j][box]
        labels[i][box], masks[i][box] = 0, 0
    for j in range(n_unl):  # a box of labeled image, with its labels and review mask
        box, i = boxes[j], j % n_lab
        mixed[n_lab + j][box] = image[i][box]
        labels[n_lab + j][box], masks[n_lab + j][box] = label[i][box], mask[i][box]
    return {"image": mixed, "label": labels, "mask": masks}
