"""Pooling and patch planned from the voxel spacing."""
import numpy as np
import pytest
import torch

from napari_dmd.networks import VNet, build_network
from napari_dmd.spacing import choose_patch, data_spacing, describe, divisors, is_isotropic, pooling


def test_isotropic_or_unknown_spacing_pools_two_everywhere():
    for spacing in (None, (1.25, 1.25, 1.25), (1.0, 1.9, 1.0)):
        pools = pooling(spacing, 3)
        assert is_isotropic(pools) and divisors(pools) == (16, 16, 16)


def test_thick_slices_are_pooled_in_plane_first():
    pools = pooling((5.0, 1.25, 1.25), 3)
    assert pools == ((1, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2))
    assert divisors(pools) == (8, 16, 16)
    cine = pooling((10.0, 1.5, 1.5), 3)  # cardiac cine MR: the slices are pooled only at the deepest levels
    assert [level[0] for level in cine] == [1, 1, 2, 2] and divisors(cine) == (4, 16, 16)
    assert "1×2×2" in describe((5.0, 1.25, 1.25), pools)


def test_bad_spacing_is_refused():
    with pytest.raises(ValueError):
        pooling((0.0, 1.0, 1.0), 3)
    with pytest.raises(ValueError):
        pooling((1.0, 1.0), 3)


def test_patch_from_data_unchanged_for_isotropic_data():
    assert choose_patch([(44, 80, 100), (44, 70, 90)]) == (32, 64, 80)
    assert choose_patch([(44, 80, 100), (44, 70, 90)], (1.25, 1.25, 1.25)) == (32, 64, 80)
    assert choose_patch([(10, 12, 12)]) == (16, 16, 16)
    # the median per axis, axes kept in order (z larger than y and x here)
    assert choose_patch([(200, 40, 50), (90, 70, 60), (120, 60, 40)]) == (112, 48, 48)
    assert np.prod(choose_patch([(300, 512, 512)])) <= 64 * 128 * 128


def test_patch_covers_similar_physical_extent():
    # 60 slices of 5 mm (300 mm) and 512×512 pixels of 0.7 mm (358 mm): too big, so halve the longest extent
    patch = choose_patch([(60, 512, 512)], (5.0, 0.7, 0.7), max_voxels=32 * 128 * 128)
    assert np.prod(patch) <= 32 * 128 * 128
    assert all(p % d == 0 for p, d in zip(patch, divisors(pooling((5.0, 0.7, 0.7), 3))))
    extents = np.array(patch) * (5.0, 0.7, 0.7)
    assert extents.max() / extents.min() < 2.5
    assert choose_patch([(11, 72, 100)], (5.0, 1.25, 1.25)) == (8, 64, 96)  # 11 slices: one multiple of 8


def test_isotropic_network_is_the_paper_vnet():
    torch.manual_seed(0)
    default = VNet()
    torch.manual_seed(0)
    planned = build_network(3, 1, (1.25, 1.25, 1.25))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), planned.state_dict().values()))


@pytest.mark.parametrize("ndim,spacing,shape", [(3, (5.0, 1.25, 1.25), (11, 20, 24)), (2, (3.0, 1.0), (10, 40))])
def test_anisotropic_network_keeps_the_input_size(ndim, spacing, shape):
    net = build_network(ndim, 3, spacing).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, *shape))
    assert out.shape == (1, 3, *shape)
    assert net.divisors[0] < 16


def test_data_spacing_is_the_median_or_unknown():
    assert data_spacing([(5.0, 1.0, 1.0), (4.0, 1.2, 1.0), (6.0, 1.1, 1.0)]) == (5.0, 1.1, 1.0)
    assert data_spacing([(5.0, 1.0, 1.0), None]) is None


def test_a_run_on_thick_slices_pools_in_plane_and_the_checkpoint_keeps_it(tmp_path):
    from napari_dmd.checkpoint import load_model
    from napari_dmd.config import TrainConfig
    from napari_dmd.data import Volume
    from napari_dmd.training import Trainer

    from synthetic import make_case

    image, label = make_case(0, shape=(12, 32, 32))
    volumes = [Volume.create(image, label, spacing=(5.0, 1.25, 1.25))]
    cfg = TrainConfig(iterations=2, labeled_batch=1, unlabeled_batch=0, precision="fp32", lambda_distill=0.0)
    trainer = Trainer(volumes, [], cfg, run_dir=tmp_path)
    assert trainer.patch[0] == 8 and trainer.model.nets[0].pools[0] == (1, 2, 2)
    list(trainer.run())
    model = load_model(tmp_path / "model.pt", "cpu")
    assert model.config.spacing == (5.0, 1.25, 1.25) and model.nets[0].pools[0] == (1, 2, 2)
    warm = Trainer([Volume.create(image, label)], [], cfg, init=tmp_path / "model.pt")
    assert warm.model.nets[0].pools[0] == (1, 2, 2) and warm.config.spacing == (5.0, 1.25, 1.25)


def test_the_dock_passes_each_layers_scale_and_shows_the_pooling():
    from napari_dmd.config import RunOptions
    from napari_dmd.pairing import Row, build_volumes, training_set
    from napari_dmd.plan import describe_plan, make_plan

    from synthetic import make_case

    image, label = make_case(0, shape=(12, 32, 32))
    thick = (5.0, 1.25, 1.25)
    rows = [Row("a", image, True, label, "a labels", spacing=thick), Row("b", image, True, spacing=thick)]
    labeled, unlabeled = build_volumes(training_set(rows))
    assert labeled[0].spacing == unlabeled[0].spacing == thick
    plan = make_plan({"a": image.shape, "b": image.shape}, 2, "cpu", "fp32", "auto", 4, thick)
    assert plan.patch[0] == 8
    text, _ = describe_plan(plan, 0.1, 10, RunOptions())
    assert "pooling 1×2×2" in text
    iso = make_plan({"a": image.shape}, 2, "cpu", "fp32", "auto", 4, (1.0, 1.0, 1.0))
    assert iso.patch[0] == 16 and "pooling" not in describe_plan(iso, 0.1, 10, RunOptions())[0]
