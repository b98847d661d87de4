"""Inject the bf16 fault seen on some CPUs: chosen layers return NaN, by default only under autocast.

The machine's own reduced-precision convolutions are replaced first by sound ones (computed in fp32, rounded to
the autocast dtype), so the injected fault is the only one a test sees, whatever the CPU: some CPUs compute the
V-Net's deepest bf16 convolutions wrongly themselves.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def bottleneck(module: nn.Module) -> bool:
    """The V-Net's bottleneck convolutions (256 -> 256 channels), where the real fault shows."""
    return module.in_channels == module.out_channels == 256


CONVOLUTIONS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def sound_reduced_precision(monkeypatch) -> None:
    """Make every convolution under autocast compute in fp32 and round its output to the autocast dtype: what a
    machine whose reduced-precision kernels are correct computes, up to rounding."""
    for cls in CONVOLUTIONS:
        original = cls.forward

        def forward(module, x, *args, _original=original, **kwargs):
            device = x.device.type
            if not torch.is_autocast_enabled(device):
                return _original(module, x, *args, **kwargs)
            dtype = torch.get_autocast_dtype(device)
            with torch.autocast(device, enabled=False):
                return _original(module, x.float(), *args, **kwargs).to(dtype)

        monkeypatch.setattr(cls, "forward", forward)


class NaNFault:
    """While ``active``, layers of type ``layer`` for which ``where(module)`` holds return NaN on the
    calls that ``when(call_number)`` picks (counted over matching calls), only inside autocast unless
    ``autocast_only`` is False. ``hits`` counts the NaN outputs."""

    def __init__(self, monkeypatch, layer: type = nn.Conv3d, where: Callable[[nn.Module], bool] = bottleneck,
                 when: Callable[[int], bool] = lambda call: True, autocast_only: bool = True):
        sound_reduced_precision(monkeypatch)
        self.active, self.calls, self.hits = True, 0, 0
        original = layer.forward
        fault = self

        def forward(module, x):
            out = original(module, x)
            if fault.active and where(module) and (not autocast_only or torch.is_autocast_enabled(x.device.type)):
                fault.calls += 1
                if when(fault.calls):
                    fault.hits += 1
                    return out * float("nan")
            return out

        monkeypatch.setattr(layer, "forward", forward)
