"""Segmentation backbones: the paper's 3D V-Net and a 2D U-Net.

Both accept any spatial size: the input is zero-padded up to the network's multiple along each axis
(the product of its pooling factors: 16 for four levels of 2) and the output is cropped back. The
pooling per level and axis comes from the voxel spacing (``spacing.pooling``); isotropic data gets the
paper's networks exactly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .spacing import divisors, pooling

Pools = tuple[tuple[int, ...], ...]


class PaddedNet(nn.Module):
    """Pads the input to a multiple of its pooling along each axis and crops the logits back."""

    def __init__(self, pools: Pools):
        super().__init__()
        self.pools = pools
        self.divisors = divisors(pools)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        pad: list[int] = []
        for size, multiple in zip(reversed(spatial), reversed(self.divisors)):
            pad += [0, (-size) % multiple]
        if any(pad):
            x = F.pad(x, pad)
        out = self.body(x)
        return out[(..., *(slice(0, s) for s in spatial))]

    def body(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def batch_statistics_without_dropout(net: nn.Module) -> nn.Module:
    """``net`` in training mode (batch norm on the batch's statistics) with its dropout off: a forward pass that
    draws no dropout mask (settling statistics, checking a precision, a mean teacher)."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.eval()
    return net


class SplitStatistics(nn.Module):
    """A network run apart on the first ``first`` patches of a batch (the labeled ones) and on the others (the
    unlabeled ones), so that batch norm normalises each part with statistics of its own, and its running
    statistics, which a prediction normalises with, are the unlabeled part's alone: gathered over many images
    like those predicted. Normalised together, a network trained on one labeled image learns to tell that image
    from the others through the batch statistics, and predicts the others wrongly once running statistics
    replace them (README, "Batch-norm statistics")."""

    def __init__(self, net: nn.Module, first: int):
        super().__init__()
        self.net, self.first = net, first
        self._norms = [m for m in net.modules() if isinstance(m, _BatchNorm)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.first:
            return self.net(x)
        momenta = [m.momentum for m in self._norms]
        for m in self._norms:
            m.momentum = 0.0  # the labeled part leaves the running statistics as they are
        try:
            first = self.net(x[:self.first])
        finally:
            for m, momentum in zip(self._norms, momenta):
                m.momentum = momentum
        return torch.cat([first, self.net(x[self.first:])])


SPLIT_MIN_VALUES = 16  # values per channel each part of a batch must give batch norm at the coarsest level


def splits_statistics(net: PaddedNet, patch: tuple[int, ...], labeled: int, unlabeled: int) -> bool:
    """Whether both parts of a batch of ``labeled`` + ``unlabeled`` patches (all processes together: their batch
    norm is global) give batch norm at least ``SPLIT_MIN_VALUES`` values per channel at the network's coarsest
    level. Fewer make each part's statistics noise (two 16³ patches: 2 values), so the batch stays one pass."""
    coarsest = math.prod(-(-p // d) for p, d in zip(patch, net.divisors))
    return unlabeled > 0 and min(labeled, unlabeled) * coarsest >= SPLIT_MIN_VALUES


def _conv_stage(conv: type, norm: type, c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [conv(c_in if i == 0 else c_out, c_out, 3, padding=1), norm(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class VNet(PaddedNet):
    """V-Net as used by UA-MT/MC-Net/DMD: 16 base filters, 4 levels, batch norm, dropout 0.5."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, n_filters: int = 16, dropout: float = 0.5,
                 pools: Pools | None = None):
        super().__init__(pools or pooling(None, 3))
        f = [n_filters * 2**i for i in range(5)]
        stages = [1, 2, 3, 3, 3]
        self.enc = nn.ModuleList(
            _conv_stage(nn.Conv3d, nn.BatchNorm3d, in_channels if i == 0 else f[i], f[i], stages[i]) for i in range(5)
        )
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv3d(f[i], f[i + 1], self.pools[i], stride=self.pools[i]), nn.BatchNorm3d(f[i + 1]),
                          nn.ReLU(inplace=True))
            for i in range(4)
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose3d(f[i + 1], f[i], self.pools[i], stride=self.pools[i]),
                          nn.BatchNorm3d(f[i]), nn.ReLU(inplace=True))
            for i in reversed(range(4))
        )
        self.dec = nn.ModuleList(
            _conv_stage(nn.Conv3d, nn.BatchNorm3d, f[i], f[i], n) for i, n in zip((3, 2, 1, 0), (3, 3, 2, 1))
        )
        self.dropout = nn.Dropout3d(dropout)
        self.head = nn.Conv3d(f[0], out_channels, 1)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i in range(4):
            x = self.enc[i](x)
            skips.append(x)
            x = self.down[i](x)
        x = self.dropout(self.enc[4](x))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(up(x) + skip)
        return self.head(self.dropout(x))


class _UNetBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.LeakyReLU(inplace=True),
        )


class UNet2D(PaddedNet):
    """2D U-Net of the semi-supervised code bases: filters 16..256, dropout 0.05..0.5 by depth."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, n_filters: int = 16,
                 dropout: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5), pools: Pools | None = None):
        super().__init__(pools or pooling(None, 2))
        f = [n_filters * 2**i for i in range(5)]
        self.enc = nn.ModuleList(_UNetBlock(in_channels if i == 0 else f[i - 1], f[i], dropout[i]) for i in range(5))
        self.up = nn.ModuleList(nn.ConvTranspose2d(f[i + 1], f[i], self.pools[i], stride=self.pools[i])
                                for i in reversed(range(4)))
        self.dec = nn.ModuleList(_UNetBlock(2 * f[i], f[i], 0.0) for i in reversed(range(4)))
        self.head = nn.Conv2d(f[0], out_channels, 1)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, self.pools[i - 1]))
            skips.append(x)
        x = skips.pop()
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


def build_network(ndim: int, out_channels: int, spacing: tuple[float, ...] | None = None,
                  in_channels: int = 1) -> PaddedNet:
    """A V-Net for 3D data, a 2D U-Net for 2D data, of ``in_channels`` input channels, pooled for ``spacing``
    (None: isotropic), with PyTorch's default layer initialisation."""
    if ndim == 3:
        return VNet(in_channels, out_channels, pools=pooling(spacing, 3))
    if ndim == 2:
        return UNet2D(in_channels, out_channels, pools=pooling(spacing, 2))
    raise ValueError(f"no network for {ndim}-D data")
