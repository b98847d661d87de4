"""Batches made ahead (napari_dmd/prefetch.py): the same batches in the same order as made one at a time."""
import numpy as np
import pytest
import torch

from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.prefetch import BatchMaker
from napari_dmd.training import CHECKPOINT_NAME, Trainer

CPU = torch.device("cpu")


def maker(ahead: bool, seed: int = 0) -> BatchMaker:
    rng = np.random.default_rng(seed)

    def draw(iteration: int) -> dict[str, np.ndarray]:
        image = rng.random((2, 1, 2, 2, 2), dtype=np.float32) + iteration
        return {"image": image, "label": (image[:1] > iteration + 0.5).astype(np.uint8),
                "mask": np.ones((1, 1, 2, 2, 2), np.float32)}

    return BatchMaker(draw, rng, CPU, torch.contiguous_format, ahead)


def test_batches_made_ahead_are_those_made_one_at_a_time():
    inline, ahead = maker(False), maker(True)
    try:
        for i in range(6):
            a, b = inline.take(i), ahead.take(i, more=i < 5)
            assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
            assert ahead.rng_state() == inline.rng_state()  # what a checkpoint keeps: before the batch made ahead
    finally:
        ahead.close()


def test_a_batch_made_for_another_iteration_is_drawn_again_from_where_it_began():
    inline, ahead = maker(False), maker(True)
    ahead.take(0)  # iteration 1 is drawn meanwhile
    inline.take(0)
    np.testing.assert_array_equal(ahead.take(7).image.numpy(), inline.take(7).image.numpy())
    ahead.close()
    assert ahead.rng.bit_generator.state == inline.rng.bit_generator.state  # the one made ahead is given back


def volumes(cases, labeled=True):
    return [Volume.create(img, lab if labeled else None) for img, lab in cases]


@pytest.fixture
def run_config():
    return TrainConfig(iterations=4, patch_size=(16, 16, 16), labeled_batch=1, unlabeled_batch=1, checkpoint_every=2,
                       precision="fp32", mix_probability=0.5, augment_spatial=0.3)


def test_seeded_runs_are_the_same_with_batches_made_ahead_and_resume_exactly(tiny_cases, run_config, tmp_path):
    lab, unl = volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False)
    torch.manual_seed(0)
    inline = [r.loss for r in Trainer(lab, unl, run_config, ahead=False).run()]
    torch.manual_seed(0)
    ahead = Trainer(lab, unl, run_config, run_dir=tmp_path, ahead=True)
    losses = []
    for r in ahead.run():
        losses.append(r.loss)
        if r.iteration == 2:
            ahead.stop()
    assert losses == inline[:2]  # the same batches, the same losses, to the bit
    resumed = Trainer(lab, unl, run_config, run_dir=tmp_path, init=tmp_path / CHECKPOINT_NAME, resume=True,
                      ahead=True)
    assert [r.loss for r in resumed.run()] == pytest.approx(inline[2:], rel=1e-6)
