"""Device and memory format: CUDA when present, channels-last."""
from __future__ import annotations

import torch

from .errors import DataError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else the CPU; 'cuda' without a GPU is refused clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DataError(f"unknown device {name!r}: use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU "
                        "(see README to install the CUDA build)")
    return device


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last (measured faster for the V-Net on the CPU, see benchmarks/speed.py)."""
    return torch.channels_last_3d if ndim == 3 else torch.channels_last
