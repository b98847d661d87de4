"""Backbones: any input size, output shape, different initialisations."""
import pytest
import torch

from napari_dmd.checkpoint import ModelPair
from napari_dmd.config import TrainConfig
from napari_dmd.networks import SplitStatistics, UNet2D, VNet, build_network, splits_statistics


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


@pytest.mark.parametrize("ndim", [2, 3])
def test_split_statistics_normalise_each_part_of_a_batch_apart(ndim):
    torch.manual_seed(0)
    net = build_network(ndim, 1).train()
    for m in net.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout3d)):
            m.p = 0.0
    shape = (16,) * ndim
    x = torch.randn(4, 1, *shape)
    x[2:] = 3 * x[2:] + 5  # the second part differs in intensity
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        split = SplitStatistics(net, 2)(x)
        running = [m.running_mean.clone() for m in norms]
        for m in norms:
            m.reset_running_stats()
        second = net(x[2:])
        apart = torch.cat([net(x[:2]), second])
        joint = net(x)
    assert split.shape == joint.shape == (4, 1, *shape)
    assert torch.allclose(split, apart, atol=1e-5)
    assert not torch.allclose(split, joint, atol=1e-2)
    # the running statistics are the second part's alone: as after one pass of it from a fresh start
    fresh = build_network(ndim, 1).train()
    with torch.no_grad():
        fresh.load_state_dict(net.state_dict())
        for m in fresh.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
            if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout3d)):
                m.p = 0.0
        fresh(x[2:])
    want = [m.running_mean for m in fresh.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(running, want))
    assert all(m.momentum == 0.1 for m in norms)


def test_statistics_are_split_only_where_both_parts_give_enough_values():
    net = build_network(3, 1)  # coarsest level: patch / 16 per axis
    assert splits_statistics(net, (32, 32, 32), 2, 2)  # 2 patches × 8 coarsest voxels = SPLIT_MIN_VALUES
    assert not splits_statistics(net, (32, 32, 32), 1, 2)  # one labeled patch: 8 values
    assert not splits_statistics(net, (16, 16, 16), 2, 2)  # 2 values per part: noise
    assert splits_statistics(net, (32, 48, 32), 2, 2) and splits_statistics(net, (32, 64, 64), 1, 1)
    assert not splits_statistics(net, (32, 64, 64), 2, 0)  # no unlabeled part
