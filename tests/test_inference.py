"""Sliding window and disagreement."""
import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import ModelPair
from napari_dmd.config import TrainConfig
from napari_dmd.data import normalize_intensity
from napari_dmd.heads import probabilities
from napari_dmd.inference import largest_components, predict, sliding_window_probabilities, window_starts
from napari_dmd.runtime import resolve_device

from synthetic import SHARED_DATA, make_case


def pair(num_classes=2, ndim=3, patch=(16, 16, 16)):
    cfg = TrainConfig(num_classes=num_classes, patch_size=patch, precision="fp32")
    return ModelPair.create(cfg, ndim, resolve_device("cpu"))


def test_window_starts_cover_the_axis():
    assert window_starts(44, 32, 2) == [0, 2, 4, 6, 8, 10, 12]
    assert window_starts(70, 64, 9) == [0, 6]
    assert window_starts(10, 16, 4) == [0]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_one_window_equals_a_direct_forward_pass(num_classes):
    model = pair(num_classes)
    image = make_case(0, shape=(16, 16, 16))[0]
    pa, pb = sliding_window_probabilities(model, normalize_intensity(image), (16, 16, 16), (8, 8, 8))
    x = torch.from_numpy(normalize_intensity(image))[None, None]
    for net, p in zip(model.nets, (pa, pb)):
        net.eval()
        with torch.no_grad():
            q = probabilities(net(x))[0].numpy()
        q = np.concatenate([1 - q, q]) if q.shape[0] == 1 else q
        np.testing.assert_allclose(p, q, atol=1e-5)


def test_overlapping_windows_average_and_restore_training_mode():
    model = pair()
    for net in model.nets:
        net.train()
    image = make_case(1, shape=(20, 30, 26))[0]
    pred = predict(model, image, (16, 16, 16), (4, 7, 5), batch_size=3)
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (2, *image.shape)
    np.testing.assert_allclose(pred.probabilities.sum(axis=0), 1, atol=1e-5)
    assert all(net.training for net in model.nets)


def test_disagreement_is_total_variation_and_slices_rank_by_entropy():
    model = pair(3)
    image = make_case(2, shape=(12, 20, 20), classes=3)[0]  # smaller than the patch in z: padded
    pred = predict(model, image, (16, 16, 16))
    pa, pb = sliding_window_probabilities(model, normalize_intensity(image), (16, 16, 16), (8, 8, 8))
    np.testing.assert_allclose(pred.disagreement, 0.5 * np.abs(pa - pb).sum(axis=0), atol=1e-6)
    assert 0 <= pred.disagreement.min() and pred.disagreement.max() <= 1
    entropy = -(pa * np.log(np.clip(pa, 1e-12, 1))).sum(axis=0) / np.log(3)  # network A's, 3 classes
    np.testing.assert_allclose(pred.slice_scores, entropy.mean(axis=(1, 2)), rtol=1e-4)
    assert pred.volume_score == pytest.approx(float(pred.disagreement.mean()), rel=1e-5)


def test_identical_networks_do_not_disagree():
    model = pair()
    model.nets[1].load_state_dict(model.nets[0].state_dict())
    pred = predict(model, make_case(3)[0], (16, 16, 16))
    assert pred.volume_score < 1e-6


def test_largest_components_keeps_the_biggest_blob_of_each_class():
    labels = np.zeros((6, 10, 10), np.uint8)
    labels[1:4, 1:5, 1:5] = 1  # 48 voxels
    labels[5, 8:10, 8:10] = 1  # a stray blob
    labels[1:3, 6:9, 6:9] = 2  # 18 voxels
    labels[4, 0, 9] = 2
    labels[4, 0, 7] = 2  # two single voxels, not face-connected to each other
    out = largest_components(labels)
    expected = labels.copy()
    expected[5, 8:10, 8:10] = 0
    expected[4, 0, [7, 9]] = 0
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(largest_components(expected), expected)  # nothing more to remove


def test_2d_prediction():
    model = pair(ndim=2, patch=(32, 32))
    pred = predict(model, make_case(0, shape=(40, 36))[0])
    assert pred.labels.shape == (40, 36) and pred.slice_scores.shape == (1,)


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "hippocampus").is_dir(), reason="../shared/data is absent")
def test_real_hippocampus_mixed_dtypes_train_and_predict():
    """A uint8 and a float32 case of the MSD set (3 classes, different ranges) train and predict."""
    from napari_dmd.data import Volume
    from napari_dmd.io import read_image
    from napari_dmd.training import Trainer

    root = SHARED_DATA / "hippocampus"
    cases = [read_image(root / d / "hippocampus_001.nii.gz")[0] for d in ("images", "labels")], \
        [read_image(root / d / "hippocampus_003.nii.gz")[0] for d in ("images", "labels")]
    assert {cases[0][0].dtype, cases[1][0].dtype} == {np.dtype(np.uint8), np.dtype(np.float32)}
    vols = [Volume.create(img, lab) for img, lab in cases]
    cfg = TrainConfig(num_classes=3, iterations=2, patch_size=(16, 32, 16), labeled_batch=1, unlabeled_batch=1)
    trainer = Trainer(vols[:1], [Volume.create(cases[1][0])], cfg)
    assert all(np.isfinite(p.loss) for p in trainer.run())
    pred = predict(trainer.model, cases[1][0])
    assert pred.labels.shape == cases[1][0].shape and pred.probabilities.shape[0] == 3
