"""DMD training loop: progress reports, stop, checkpoints, resume, warm start, bad input."""
from dataclasses import replace as replace_config

import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint, load_model
from napari_dmd.config import TrainConfig
from napari_dmd.data import PatchSampler, Volume, VoxelPicker
from napari_dmd.errors import CheckpointError, DataError
from napari_dmd.networks import SplitStatistics
from napari_dmd.outputs import LOCK, MANIFEST
from napari_dmd.review import Reviewed
from napari_dmd.training import CHECKPOINT_NAME, SETTLE_BATCHES, Trainer

from synthetic import make_case


def volumes(cases, labeled=True):
    return [Volume.create(img, lab if labeled else None, name=f"case{i}") for i, (img, lab) in enumerate(cases)]


def config(**kw):
    base = dict(iterations=4, patch_size=(16, 16, 16), labeled_batch=1, unlabeled_batch=1, checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def weights(model):
    return [p.detach().clone() for net in model.nets for p in net.parameters()]


def test_run_reports_every_step_and_checkpoints(tiny_cases, tmp_path):
    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(lambda_rampup=0), run_dir=tmp_path)
    reports = list(t.run())
    assert [r.iteration for r in reports] == [1, 2, 3, 4]
    assert [r.checkpoint is not None for r in reports] == [False, True, False, True]
    assert all(np.isfinite([r.sup_loss, r.distill_loss, r.loss, r.eta]).all() for r in reports)
    assert reports[0].loss == pytest.approx(reports[0].sup_loss + 4.0 * reports[0].distill_loss, rel=1e-5)
    assert load_model(tmp_path / CHECKPOINT_NAME).iteration == 4
    assert (tmp_path / "config.json").exists()
    hidden = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert hidden <= {MANIFEST, LOCK}  # no temporary files left, only the output guard's files


def test_lambda_is_constant_or_ramped_up_over_the_models_iterations(tiny_cases):
    lab = volumes(tiny_cases[:1])
    assert Trainer(lab, [], config(lambda_rampup=0)).lambda_at(0) == 4.0
    assert TrainConfig().lambda_rampup == 300  # the default ramps (README: the loop benchmark)
    ramped = Trainer(lab, [], config(lambda_rampup=100))
    assert ramped.lambda_at(0) == pytest.approx(4.0 * np.exp(-5.0))
    assert ramped.lambda_at(50) == pytest.approx(4.0 * np.exp(-1.25))
    assert ramped.lambda_at(100) == ramped.lambda_at(5000) == 4.0
    ramped.model.trained_before = 60  # a warm start of a model with 60 iterations continues its ramp
    assert ramped.lambda_at(0) == pytest.approx(4.0 * np.exp(-5.0 * 0.4 ** 2))
    assert ramped.lambda_at(40) == 4.0


def test_both_networks_learn(tiny_cases):
    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(iterations=1))
    before = weights(t.model)
    list(t.run())
    after = weights(t.model)
    half = len(before) // 2
    assert any(not torch.equal(a, b) for a, b in zip(before[:half], after[:half]))
    assert any(not torch.equal(a, b) for a, b in zip(before[half:], after[half:]))


def test_stop_ends_the_run_with_a_checkpoint(tiny_cases, tmp_path):
    t = Trainer(volumes(tiny_cases[:1]), [], config(iterations=50, checkpoint_every=100), run_dir=tmp_path)
    seen = []
    for r in t.run():
        seen.append(r)
        if r.iteration == 2:
            t.stop()
    assert seen[-1].iteration == 2 and seen[-1].checkpoint is not None
    assert load_model(tmp_path / CHECKPOINT_NAME).iteration == 2


def test_seeded_runs_are_reproducible_and_resume_continues_exactly(tiny_cases, tmp_path):
    lab, unl = volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False)
    full = Trainer(lab, unl, config(precision="fp32"))
    losses = [r.loss for r in full.run()]
    again = Trainer(lab, unl, config(precision="fp32"))
    assert [r.loss for r in again.run()] == losses

    first = Trainer(lab, unl, config(precision="fp32"), run_dir=tmp_path)
    for r in first.run():
        if r.iteration == 2:
            first.stop()
    resumed = Trainer(lab, unl, config(precision="fp32"), run_dir=tmp_path, init=tmp_path / CHECKPOINT_NAME,
                      resume=True)
    rest = [r for r in resumed.run()]
    assert [r.iteration for r in rest] == [3, 4]
    assert [r.loss for r in rest] == pytest.approx(losses[2:], rel=1e-5)
    for a, b in zip(weights(full.model), weights(resumed.model)):
        assert torch.allclose(a, b, atol=1e-5)


def test_warm_start_loads_weights_and_restarts_the_schedule(tiny_cases, tmp_path):
    lab = volumes(tiny_cases[:2])
    first = Trainer(lab, [], config(iterations=2), run_dir=tmp_path / "a")
    list(first.run())
    warm = Trainer(lab, [], config(iterations=2), init=tmp_path / "a" / CHECKPOINT_NAME)
    for a, b in zip(weights(first.model), weights(warm.model)):
        assert torch.equal(a, b)
    assert [r.iteration for r in warm.run()] == [1, 2]


def test_warm_starts_and_resumes_keep_the_model_iterations_in_the_checkpoint(tiny_cases, tmp_path):
    lab = volumes(tiny_cases[:2])
    list(Trainer(lab, [], config(iterations=3), run_dir=tmp_path / "a").run())
    assert load_model(tmp_path / "a" / CHECKPOINT_NAME).model_iterations == 3
    warm = Trainer(lab, [], config(iterations=4), run_dir=tmp_path / "b", init=tmp_path / "a" / CHECKPOINT_NAME)
    for r in warm.run():
        if r.iteration == 2:
            warm.stop()
    saved = load_model(tmp_path / "b" / CHECKPOINT_NAME)
    assert (saved.iteration, saved.model_iterations) == (2, 5)  # the run's count, the weights' count
    resumed = Trainer(lab, [], config(iterations=4), run_dir=tmp_path / "b", init=tmp_path / "b" / CHECKPOINT_NAME,
                      resume=True)
    assert [r.iteration for r in resumed.run()] == [3, 4]
    saved = load_model(tmp_path / "b" / CHECKPOINT_NAME)
    assert (saved.iteration, saved.model_iterations) == (4, 7)
    again = Trainer(lab, [], config(iterations=1), run_dir=tmp_path / "c", init=tmp_path / "b" / CHECKPOINT_NAME)
    list(again.run())
    assert load_model(tmp_path / "c" / CHECKPOINT_NAME).model_iterations == 8


def test_warm_start_refuses_a_model_for_other_classes(tiny_cases, tmp_path):
    list(Trainer(volumes(tiny_cases[:1]), [], config(iterations=1), run_dir=tmp_path).run())
    img, lab = make_case(0, classes=3)
    with pytest.raises(CheckpointError, match="3 classes"):
        Trainer([Volume.create(img, lab)], [], config(num_classes=3), init=tmp_path / CHECKPOINT_NAME)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a napari-dmd checkpoint"):
        load_checkpoint(bad)


def test_multiclass_and_2d_train(tiny_cases):
    img, lab = make_case(1, classes=3)
    t = Trainer([Volume.create(img, lab)], [], config(num_classes=3, iterations=2))
    assert t.model.nets[0].head.out_channels == 3
    assert len(list(t.run())) == 2
    img2, lab2 = make_case(2, shape=(40, 36))
    t2 = Trainer([Volume.create(img2, lab2)], [Volume.create(img2 * 2)], config(iterations=2, patch_size=None))
    assert t2.patch == (32, 32) and len(list(t2.run())) == 2
    assert t2.model.config.patch_size == (32, 32)  # a saved model remembers the patch chosen from the data


@pytest.mark.parametrize("problem,match", [
    ("none", "no labeled image"),
    ("classes", "value 2"),
    ("empty", "all background"),
    ("mixed", "2D, or all 3D"),
])
def test_bad_data_is_refused_clearly(tiny_cases, problem, match):
    img, lab = tiny_cases[0]
    labeled = {"none": [], "classes": [Volume.create(img, lab * 2)], "empty": [Volume.create(img, lab * 0)],
               "mixed": [Volume.create(img, lab)]}[problem]
    unlabeled = [Volume.create(img[0])] if problem == "mixed" else []
    with pytest.raises(DataError, match=match):
        Trainer(labeled, unlabeled, config())


@pytest.mark.parametrize("setting,match", [
    ({"lr_step": 0}, "lr_step"), ({"checkpoint_every": 0}, "checkpoint_every"), ({"lr_gamma": 0}, "lr_gamma"),
    ({"momentum": 1.0}, "momentum"), ({"foreground_fraction": 1.5}, "foreground_fraction"),
    ({"precision": "fp8"}, "precision"), ({"num_classes": 1}, "num_classes"),
])
def test_invalid_settings_are_refused_clearly(setting, match):
    with pytest.raises(DataError, match=match):
        config(**setting)


def test_resume_needs_a_checkpoint(tiny_cases):
    with pytest.raises(DataError, match="resuming needs"):
        Trainer(volumes(tiny_cases[:1]), [], config(), resume=True)


def test_volume_validation_and_normalisation():
    img, lab = make_case(0, dtype=np.uint8, scale=60)
    v = Volume.create(img, lab)
    assert v.image.arrays[0] is img  # held as given; patches are normalised with its statistics
    x = v.stats[0].apply(v.image.arrays[0])
    assert x.dtype == np.float32 and abs(x.mean()) < 1e-4 and abs(x.std() - 1) < 1e-3
    big = Volume.create(make_case(0, scale=1e6)[0])
    assert abs(big.stats[0].apply(big.image.arrays[0]).std() - 1) < 1e-3
    with pytest.raises(DataError, match="shape"):
        Volume.create(img, lab[:-1])
    with pytest.raises(DataError, match="per channel"):
        Volume.create(np.zeros((4, 8, 8, 3)))
    with pytest.raises(DataError, match="negative"):
        Volume.create(img, lab.astype(int) - 1)


def test_the_sampler_covers_a_single_reviewed_slice():
    img, lab = make_case(3)
    sparse = np.zeros_like(lab)
    sparse[8] = lab[8]
    mask = Reviewed(lab.shape, slices={8}).mask()
    assert mask[8].all() and mask.sum() == mask[8].size
    v = Volume.create(img, sparse, mask=mask)
    s = PatchSampler([v], [], (8, 16, 16), np.random.default_rng(0))
    for _ in range(20):
        _, _, m = s.labeled_patch()
        assert m.any()


def test_foreground_fraction_centres_labeled_crops_on_the_structure():
    img = np.random.default_rng(0).random((16, 64, 64)).astype(np.float32)
    lab = np.zeros(img.shape, np.uint8)
    lab[6:9, 50:53, 4:7] = 1  # a small structure far from the volume's centre
    v = Volume.create(img, lab)

    def hits(fraction: float) -> int:
        s = PatchSampler([v], [], (8, 16, 16), np.random.default_rng(0), fraction)
        return sum(bool(s.labeled_patch()[1].any()) for _ in range(40))

    assert hits(1.0) == 40
    assert hits(0.0) < 20  # uniform crops mostly miss it


def test_augmentation_keeps_the_slice_order_and_the_labels_aligned():
    z, y, x = np.meshgrid(np.arange(16), np.arange(32), np.arange(32), indexing="ij")
    v = Volume.create((1000 * z + 30 * y + x).astype(np.float32), (30 * y + x > 500).astype(np.uint8))
    values = v.stats[0].apply(v.image.arrays[0])
    label_of = dict(zip(values.ravel().tolist(), v.label.ravel().tolist()))  # one label each
    s = PatchSampler([v], [v], (8, 16, 16), np.random.default_rng(0))
    flipped_in_plane = 0
    for _ in range(40):
        (image,), label, _ = s.labeled_patch()  # one channel
        assert (np.diff(image, axis=0) > 0).all()  # the slice axis is never flipped
        np.testing.assert_array_equal(label, np.vectorize(label_of.get)(image))
        flipped_in_plane += bool((np.diff(image, axis=-1) < 0).any())
    assert 0 < flipped_in_plane < 40
    for _ in range(10):
        assert (np.diff(s.unlabeled_patch()[0], axis=0) > 0).all()


@pytest.mark.parametrize("shape", [(5, 7, 9), (6, 8)])
def test_voxel_picker_draws_uniformly_like_argwhere(shape):
    mask = np.random.default_rng(1).random(shape) < 0.2
    every = np.argwhere(mask)
    picker = VoxelPicker(mask)
    assert len(picker) == len(every)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(100):
        np.testing.assert_array_equal(picker.pick(r2), every[r1.integers(len(every))])


def test_sampler_pads_small_volumes_and_batches():
    v = Volume.create(*make_case(0, shape=(10, 12, 12)))
    s = PatchSampler([v], [Volume.create(make_case(1)[0])], (16, 16, 16), np.random.default_rng(0))
    b = s.batch(2, 2)
    assert b["image"].shape == (4, 1, 16, 16, 16) and b["label"].shape == (2, 1, 16, 16, 16)
    assert (b["mask"].reshape(2, -1).sum(axis=1) == 10 * 12 * 12).all()  # padding is not annotated



def test_pseudo_labels_supervise_only_voxels_without_a_label(tiny_cases):
    """Cross pseudo-supervision adds to the supervised loss where no label is, ramped as λ, nothing elsewhere."""
    lab, unl = volumes(tiny_cases[:1]), volumes(tiny_cases[2:3], False)
    cfg = config(iterations=1, precision="fp32", lambda_distill=0.0, lambda_rampup=0, labeled_batch=2)
    losses = {}
    for weight in (0.0, 2.0):
        for unlabeled in (0, 1):
            torch.manual_seed(3)
            t = Trainer(lab, unl, replace_config(cfg, pseudo_weight=weight, unlabeled_batch=unlabeled))
            losses[weight, unlabeled] = t.step(0).sup_loss
    assert losses[2.0, 0] == pytest.approx(losses[0.0, 0], rel=1e-6)  # fully labeled patches: no pseudo term
    assert losses[2.0, 1] > losses[0.0, 1] + 0.1  # an unlabeled patch: the other network's labels supervise it
    ramped = Trainer(lab, unl, replace_config(cfg, pseudo_weight=2.0, lambda_rampup=100))
    assert ramped.ramp_at(0) == pytest.approx(np.exp(-5.0)) and ramped.ramp_at(100) == 1.0


def test_cross_entropy_weight_adds_to_the_supervised_loss_of_both_networks(tiny_cases):
    """``ce_weight`` adds that many times each network's cross entropy on the labeled voxels to the step's loss."""
    lab, unl = volumes(tiny_cases[:1]), volumes(tiny_cases[2:3], False)
    cfg = config(iterations=1, precision="fp32", lambda_distill=0.0, lambda_rampup=0)
    losses = {}
    for weight in (0.0, 1.0, 3.0):
        torch.manual_seed(3)
        losses[weight] = Trainer(lab, unl, replace_config(cfg, ce_weight=weight)).step(0).sup_loss
    ce = losses[1.0] - losses[0.0]
    assert ce > 0.1  # two untrained networks, each about log 2 per voxel
    assert losses[3.0] - losses[0.0] == pytest.approx(3 * ce, rel=1e-4)


def test_batch_norm_statistics_are_apart_where_one_image_holds_most_of_the_supervision(tiny_cases):
    """'auto' (the default) splits the batch-norm pass where one image holds more than half of the reviewed voxels
    (one labeled volume, or one plus a few reviewed slices of others) and keeps one pass where several share them;
    'split' and 'joint' force either; patches too small for two parts stay one pass."""
    (image, label), (image2, label2) = tiny_cases[:2]
    unl = volumes(tiny_cases[2:], False)
    whole, other = Volume.create(image, label), Volume.create(image2, label2)
    slices = np.zeros(image2.shape, bool)
    slices[:3] = True  # 3 of 16 slices reviewed: the whole volume keeps most of the supervision
    few = Volume.create(image2, label2, mask=slices)
    assert TrainConfig().batch_norm == "auto"
    patch = {"labeled_batch": 2, "unlabeled_batch": 2, "patch_size": (32, 32, 32)}
    one = Trainer([whole], unl, config(**patch))
    assert all(isinstance(n, SplitStatistics) and n.first == 2 for n in one.dmd.running.nets)
    assert one.batch_norm == "split"
    assert Trainer([whole, few], unl, config(**patch)).batch_norm == "split"
    several = Trainer([whole, other], unl, config(**patch))  # half each: one pass
    assert several.dmd.running.nets == list(several.model.nets) and several.batch_norm == "joint"
    assert Trainer([whole, other], unl, config(**patch, batch_norm="split")).batch_norm == "split"
    assert Trainer([whole], unl, config(**patch, batch_norm="joint")).batch_norm == "joint"
    tiny = Trainer([whole], unl, config(labeled_batch=2, unlabeled_batch=2))  # 16³: 2 values per part, coarsest level
    assert tiny.batch_norm == "joint"


def _statistics(trainer):
    return [b.clone() for b in trainer._buffers if b.is_floating_point()]


@pytest.mark.real_settling
def test_settling_replaces_running_statistics_without_touching_training(tiny_cases):
    """Before a checkpoint the running statistics are recomputed at the current weights from unlabeled patches of
    their own generator: the patches and dropout masks training draws next stay the same."""
    lab, unl = volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False)
    t = Trainer(lab, unl, config(labeled_batch=2, unlabeled_batch=2, precision="fp32", patch_size=(32, 32, 32),
                                   batch_norm="split"))
    assert t.batch_norm == "split"
    t.step(0)
    before, rng, torch_rng = _statistics(t), t.sampler.rng.bit_generator.state, torch.get_rng_state()
    momenta = [m.momentum for net in t.model.nets for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    t.settle_statistics(1)
    settled = _statistics(t)
    assert any(not torch.allclose(a, b) for a, b in zip(before, settled))
    assert t.sampler.rng.bit_generator.state == rng and torch.equal(torch.get_rng_state(), torch_rng)
    assert [m.momentum for net in t.model.nets for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)] == momenta
    assert all(net.training for net in t.model.nets) and all(m.training for net in t.model.nets for m in net.modules())
    t.settle_statistics(1)  # the same iteration: the same patches, the same statistics
    assert all(torch.allclose(a, b) for a, b in zip(settled, _statistics(t)))
    # the unlabeled part alone: by hand, a cumulative average over the batches of unlabeled patches
    t.sampler.rng, saved = np.random.default_rng([t.config.seed, 1, 0]), t.sampler.rng
    batches = [t._settle_batch() for _ in range(SETTLE_BATCHES)]
    t.sampler.rng = saved
    assert all(b.shape[0] == 2 for b in batches)
    first = t.model.nets[0].enc[0][1]  # the first batch norm sees the first convolution of the raw patches
    conv = t.model.nets[0].enc[0][0]
    with torch.no_grad():
        means = torch.stack([conv(torch.from_numpy(b)).mean((0, 2, 3, 4)) for b in batches])
    assert torch.allclose(first.running_mean, means.mean(0), atol=1e-3)


def test_settling_keeps_the_old_statistics_when_the_new_ones_are_not_finite(tiny_cases):
    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(labeled_batch=2, unlabeled_batch=2))
    before = _statistics(t)
    t._settle_batch = lambda: np.full((4, 1, 16, 16, 16), np.nan, np.float32)
    t.settle_statistics(1)
    assert all(torch.equal(a, b) for a, b in zip(before, _statistics(t)))


def test_an_ordinary_training_step_makes_the_host_wait_for_nothing(tiny_cases):
    """Trainer.step (batch, copy-paste, forward, losses, guard, update) reads no device value on the host: the
    operations that would (``_local_scalar_dense``, ``is_nonzero``, ``tolist``, ``numpy``) are counted while it
    runs; the losses are read afterwards, once. benchmarks/README.md reports the counts (step_ops.py)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from step_ops import StepOps

    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False),
                config(labeled_batch=2, unlabeled_batch=2, mix_probability=1.0, pseudo_weight=1.0, ce_weight=1.0))
    t.step(0)
    with StepOps() as ops:
        step = t.step(1)
    assert ops.host_reads == 0, ops.reads
    assert ops.kernels > 100  # the counter sees the step's operations
    assert step.problem == "" and np.isfinite([step.sup_loss, step.distill_loss, step.loss]).all()
