"""Inject the bf16 fault seen on some CPUs: chosen layers return NaN, by default only under autocast."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def bottleneck(module: nn.Module) -> bool:
    """The V-Net's bottleneck convolutions (256 -> 256 channels), where the real fault shows."""
    return module.in_channels == module.out_channels == 256


class NaNFault:
    """While ``active``, layers of type ``layer`` for which ``where(module)`` holds return NaN on the
    calls that ``when(call_number)`` picks (counted over matching calls), only inside autocast unless
    ``autocast_only`` is False. ``hits`` counts the NaN outputs."""

    def __init__(self, monkeypatch, layer: type = nn.Conv3d, where: Callable[[nn.Module], bool] = bottleneck,
                 when: Callable[[int], bool] = lambda call: True, autocast_only: bool = True):
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
