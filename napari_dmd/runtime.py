"""Device and numeric precision: CUDA when present, bf16 autocast where the hardware has it."""
from __future__ import annotations

import contextlib

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
        raise DataError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU (see README to install the CUDA build)")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: bf16 on CPUs with native bf16 and on recent GPUs, fp16 on older GPUs."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast for ``dtype``, or nothing for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last (measured faster for the V-Net on the CPU, see benchmarks/speed.py)."""
    return torch.channels_last_3d if ndim == 3 else torch.channels_last
