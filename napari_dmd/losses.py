"""Dice losses of Deep Mutual Distillation.

Logits have shape (B, K, *S) as ``heads`` describes (one sigmoid channel for two classes, a softmax
channel per class otherwise). Dice is computed per foreground channel over the whole batch and averaged.
A training split over several processes passes ``reduce``, a differentiable sum over the processes of
the per-channel sums, so its loss is the loss of the whole (global) batch.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .heads import class_probabilities, foreground, hard_labels, probabilities

EPS = 1e-5
Reduce = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over the processes of a run (differentiably)


def dice_loss(p: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None = None,
              reduce: Reduce | None = None) -> torch.Tensor:
    """``1 - (2Σpq + ε)/(Σp² + Σq² + ε)`` per channel, averaged over channels.

    ``mask`` (B, 1, *S), when given, restricts the sums to the voxels where it is 1; ``reduce``,
    when given, sums the per-channel sums over the processes of a distributed run.
    """
    if p.shape != q.shape:
        raise ValueError(f"Dice loss needs equal shapes, got {tuple(p.shape)} and {tuple(q.shape)}")
    if mask is not None:
        if mask.shape[0] != p.shape[0] or mask.shape[1] != 1 or mask.shape[2:] != p.shape[2:]:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit {tuple(p.shape)}")
        p, q = p * mask, q * mask
    dims = [0, *range(2, p.ndim)]
    inter = (p * q).sum(dims)
    denom = (p * p).sum(dims) + (q * q).sum(dims)
    if reduce is not None:
        inter, denom = reduce(torch.stack([inter, denom])).unbind()
    return (1 - (2 * inter + EPS) / (denom + EPS)).mean()


def one_hot_foreground(labels: torch.Tensor, channels: int) -> torch.Tensor:
    """Labels (B, *S) or (B, 1, *S) as targets (B, K, *S) matching ``foreground`` of K-channel logits."""
    if labels.ndim >= 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if channels == 1:
        return (labels == 1).unsqueeze(1).float()
    return torch.stack([(labels == c) for c in range(1, channels)], dim=1).float()


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                    reduce: Reduce | None = None, ce_weight: float = 0.0) -> torch.Tensor:
    """Dice loss of a network against integer labels, on the annotated voxels (``mask``) only, plus
    ``ce_weight`` times their cross entropy (``cross_entropy``) where it is positive."""
    target = one_hot_foreground(labels, logits.shape[1])
    if target.shape[2:] != logits.shape[2:] or target.shape[0] != logits.shape[0]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    loss = dice_loss(foreground(probabilities(logits)), target, mask, reduce)
    if ce_weight > 0:
        loss = loss + ce_weight * cross_entropy(logits, labels, mask, reduce)
    return loss


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                  reduce: Reduce | None = None) -> torch.Tensor:
    """Mean cross entropy (binary for one sigmoid channel) of a network against integer labels (B, *S) or
    (B, 1, *S) over the voxels where ``mask`` (B, 1, *S) is 1, all voxels without it; 0 where there are none.
    ``reduce`` sums the total and the count over the processes of a distributed run."""
    labels = labels[:, 0] if labels.ndim == logits.ndim else labels
    z = logits.float()
    if z.shape[1] == 1:
        per_voxel = F.binary_cross_entropy_with_logits(z[:, 0], (labels == 1).float(), reduction="none")
    else:
        per_voxel = F.cross_entropy(z, labels.long(), reduction="none")
    weight = torch.ones_like(per_voxel) if mask is None else mask[:, 0].float()
    total, count = torch.stack([(per_voxel * weight).sum(), weight.sum()])
    if reduce is not None:
        total, count = reduce(torch.stack([total, count])).unbind()
    return total / count.clamp_min(1.0)


def distillation_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, temperature: float,
                      reduce: Reduce | None = None, where: torch.Tensor | None = None) -> torch.Tensor:
    """Dice loss between the temperature-softened outputs of the two networks, on the voxels where ``where``
    (B, 1, *S) is 1 when given (``confident``).

    Neither side is detached, so the gradient reaches both networks (mutual distillation); a detached side (a
    mean teacher's output) is a target.
    """
    return dice_loss(foreground(probabilities(logits_a, temperature)), foreground(probabilities(logits_b, temperature)),
                     where, reduce)


@torch.no_grad()
def confident(logits: list[torch.Tensor], threshold: float) -> torch.Tensor:
    """(B, 1, *S): 1 where the mean of the networks' class probabilities (T 1) gives its most likely class at least
    ``threshold``, 0 elsewhere: the voxels a confidence-weighted distillation keeps."""
    p = torch.stack([class_probabilities(z) for z in logits]).mean(0)
    return (p.amax(1, keepdim=True) >= threshold).float()


def pseudo_label_loss(logits: torch.Tensor, other: torch.Tensor, where: torch.Tensor,
                      reduce: Reduce | None = None) -> torch.Tensor:
    """Dice loss of a network against the other network's hard prediction (no gradient to it) on the voxels
    where ``where`` (B, 1, *S) is 1: cross pseudo-supervision of the voxels without a label."""
    return supervised_loss(logits, hard_labels(other.detach()), where, reduce)
