"""Backbones: any input size, output shape, different initialisations."""
import pytest
import torch

from napari_dmd.checkpoint import ModelPair
from napari_dmd.config import TrainConfig
from napari_dmd.networks import UNet2D, VNet, build_network


@pytest.mark.parametrize("shape", [(16, 16, 16), (13, 20, 17)])
def test_vnet_any_size(shape):
    net = build_network(3, 1).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, *shape))
    assert isinstance(net, VNet) and out.shape == (1, 1, *shape)


def test_unet2d_any_size_multiclass():
    net = build_network(2, 3).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 30, 21))
    assert isinstance(net, UNet2D) and out.shape == (2, 3, 30, 21)


def test_vnet_matches_paper_size():
    """16 base filters and 4 levels, as the UA-MT V-Net (about 9.4 M parameters)."""
    net = VNet(out_channels=2)
    n = sum(p.numel() for p in net.parameters())
    assert 9.0e6 < n < 9.9e6
    assert net.head.in_channels == 16 and net.enc[4][0].out_channels == 256


def test_the_pair_starts_from_different_weights_reproducibly():
    cfg = TrainConfig(seed=3)
    a, b = ModelPair.create(cfg, 3, torch.device("cpu")).nets
    assert not torch.equal(a.enc[0][0].weight, b.enc[0][0].weight)
    assert not torch.equal(a.head.weight, b.head.weight)
    again = ModelPair.create(cfg, 3, torch.device("cpu")).nets
    assert all(torch.equal(p, q) for n, m in zip((a, b), again) for p, q in zip(n.parameters(), m.parameters()))
