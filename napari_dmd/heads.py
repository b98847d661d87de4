"""The output convention of the networks, in one place.

Two classes: one sigmoid channel (the foreground). More classes: one softmax channel per class.
Logits have shape (B, K, *S).
"""
from __future__ import annotations

import torch


def out_channels(num_classes: int) -> int:
    """K: one sigmoid channel for a binary task, one softmax channel per class otherwise."""
    return 1 if num_classes == 2 else num_classes


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``sigmoid(z/T)`` for one channel, ``softmax(z/T)`` over channels otherwise (computed in fp32)."""
    z = logits.float() / temperature
    return torch.sigmoid(z) if z.shape[1] == 1 else torch.softmax(z, dim=1)


def foreground(p: torch.Tensor) -> torch.Tensor:
    """The foreground channels of ``probabilities`` (all of a binary output, 1.. of a softmax)."""
    return p if p.shape[1] == 1 else p[:, 1:]


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """One probability channel per class, background first (B, C, *S), whatever K is."""
    p = probabilities(logits)
    return torch.cat([1 - p, p], dim=1) if p.shape[1] == 1 else p


def hard_labels(logits: torch.Tensor) -> torch.Tensor:
    """The class each voxel is predicted (B, 1, *S): ``z > 0`` for one channel, the largest channel otherwise."""
    return (logits > 0).long() if logits.shape[1] == 1 else logits.argmax(1, keepdim=True)
