"""Sliding window and disagreement: window weights, streaming along axis 0, slabs, memory."""
import itertools
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from napari_dmd import inference, plan
from napari_dmd.checkpoint import ModelPair
from napari_dmd.config import COMBINE, TrainConfig
from napari_dmd.data import IntensityStats, normalize_intensity
from napari_dmd.errors import DataError
from napari_dmd.heads import class_probabilities
from napari_dmd.inference import (
    WEIGHTING,
    default_stride,
    gaussian_weights,
    largest_components,
    predict,
    window_starts,
    window_weights,
)
from napari_dmd.precision import Precision
from napari_dmd.ranking import MEASURE, MEASURES, slice_scores
from napari_dmd.runtime import resolve_device

from synthetic import SHARED_DATA, make_case


def pair(num_classes=2, ndim=3, patch=(16, 16, 16)):
    cfg = TrainConfig(num_classes=num_classes, patch_size=patch, precision="fp32")
    return ModelPair.create(cfg, ndim, resolve_device("cpu"))


def tiny_pair(num_classes=2) -> ModelPair:
    """Two small networks (one 3×3×3 convolution deep), for tests of the sliding window rather than the V-Net."""
    torch.manual_seed(0)
    k = 1 if num_classes == 2 else num_classes
    nets = tuple(nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, k, 1)) for _ in range(2))
    return ModelPair(nets, TrainConfig(num_classes=num_classes, precision="fp32"), 3, torch.device("cpu"))


def reference(model, image, patch, stride=None, weighting=WEIGHTING, mirror=False):
    """Both networks' class probabilities by the definition: every window of the grid on the whole padded,
    normalised image (with ``mirror``: each window's probabilities averaged over its flips along the last two
    axes, flipped back), weighted by ``window_weights`` and summed into full-size arrays, then divided."""
    stride = stride or default_stride(patch)
    extent = tuple(max(s, p) for s, p in zip(image.shape, patch))
    padded = np.zeros(extent, np.float32)
    padded[tuple(slice(0, s) for s in image.shape)] = normalize_intensity(image)
    weights = window_weights(patch, weighting)
    sums = np.zeros((2, model.num_classes, *extent))
    total = np.zeros(extent)
    for net in model.nets:
        net.eval()
    for corner in itertools.product(*(window_starts(s, p, t) for s, p, t in zip(extent, patch, stride))):
        region = tuple(slice(c, c + p) for c, p in zip(corner, patch))
        x = torch.from_numpy(padded[region])[None, None]
        flips = [(), (-1,), (-2,), (-1, -2)] if mirror else [()]
        for n, net in enumerate(model.nets):
            with torch.no_grad():
                p = [np.flip(class_probabilities(net(x.flip(f) if f else x))[0].numpy(), f) for f in flips]
            sums[(n, slice(None), *region)] += sum(p) / len(p) * weights
        total[region] += weights
    crop = (slice(None), slice(None), *(slice(0, s) for s in image.shape))
    return (sums / total)[crop]


def assert_matches(pred, probs, rows=None, measures=(MEASURE,), combine=COMBINE):
    """``pred`` is what ``probs`` (2, C, ...) of the whole image give over ``rows``: labels where the predicting
    probabilities (network A's, or with ``combine='mean'`` the mean of both) are not near a tie, the float16
    disagreement, the per-slice scores (from network A) and the mean."""
    probs = probs[:, :, slice(*rows)] if rows else probs
    pa, pb = probs
    disagreement = 0.5 * np.abs(pa - pb).sum(axis=0)
    p = (pa + pb) / 2 if combine == "mean" else pa
    top = np.sort(p, axis=0)
    clear = top[-1] - top[-2] > 1e-4
    np.testing.assert_array_equal(pred.labels[clear], p.argmax(axis=0)[clear])
    np.testing.assert_allclose(pred.disagreement, disagreement, atol=1e-3)
    for m in measures:
        np.testing.assert_allclose(pred.scores[m], slice_scores(disagreement, pa, m), rtol=1e-4, atol=1e-5)
    assert pred.volume_score == pytest.approx(float(disagreement.mean()), rel=1e-4)


def test_window_starts_cover_the_axis():
    assert window_starts(44, 32, 2) == [0, 2, 4, 6, 8, 10, 12]
    assert window_starts(70, 64, 9) == [0, 6]
    assert window_starts(10, 16, 4) == [0]


@pytest.mark.parametrize("patch", [(16, 16, 16), (7, 12, 32), (1, 2, 3)])
def test_gaussian_weights_peak_in_the_middle_and_stay_positive_at_the_border(patch):
    w = gaussian_weights(patch)
    assert w.shape == patch and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0) and w.min() > 0
    for axis in range(3):
        np.testing.assert_allclose(w, np.flip(w, axis), rtol=1e-6)  # symmetric about the window's centre
    if min(patch) > 2:
        middle = tuple(p // 2 for p in patch)
        assert w[middle] > 0.9 and w[0, 0, 0] < 1e-6
        line = w[(slice(None), *middle[1:])]  # along axis 0 a Gaussian with sigma 1/8 of the patch
        g = np.exp(-0.5 * ((np.arange(patch[0]) - (patch[0] - 1) / 2) / (patch[0] / 8)) ** 2)
        np.testing.assert_allclose(line / line.max(), g / g.max(), rtol=1e-4)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_one_window_equals_a_direct_forward_pass(num_classes):
    model = pair(num_classes)
    image = make_case(0, shape=(16, 16, 16))[0]
    pred = predict(model, image, (16, 16, 16), (8, 8, 8))
    x = torch.from_numpy(normalize_intensity(image))[None, None]
    for net in model.nets:
        net.eval()
    with torch.no_grad():
        probs = np.stack([class_probabilities(net(x))[0].numpy() for net in model.nets])
    assert_matches(pred, probs)


@pytest.mark.parametrize("num_classes, weighting", [(2, "uniform"), (3, "uniform"), (2, "gaussian")])
def test_streaming_equals_the_full_volume_reference(num_classes, weighting):
    """Nine row blocks along axis 0, batches that span two of them, every ranking measure per block."""
    model = tiny_pair(num_classes)
    image = make_case(4, shape=(40, 20, 18), classes=num_classes)[0]
    pred = predict(model, image, (8, 16, 16), (4, 7, 5), batch_size=5, measures=MEASURES, weighting=weighting)
    assert pred.rows == (0, 40) and set(pred.scores) == set(MEASURES)
    assert pred.labels.dtype == np.uint8 and pred.disagreement.dtype == np.float16
    assert all(s.dtype == np.float32 and s.shape == (40,) for s in pred.scores.values())
    assert_matches(pred, reference(model, image, (8, 16, 16), (4, 7, 5), weighting), measures=MEASURES)


@pytest.mark.parametrize("num_classes, combine, mirror", [(2, "mean", False), (3, "mean", True), (2, "a", True)])
def test_labels_from_the_pair_mean_and_mirrored_windows_equal_the_reference(num_classes, combine, mirror):
    """The pair's mean decides the labels (the scores stay network A's); mirroring averages each network over
    its in-plane flips, window by window; the disagreement stays network A against network B."""
    model = tiny_pair(num_classes)
    image = make_case(5, shape=(24, 20, 18), classes=num_classes)[0]
    pred = predict(model, image, (8, 16, 16), (4, 7, 5), batch_size=3, measures=MEASURES, combine=combine,
                   mirror=mirror)
    probs = reference(model, image, (8, 16, 16), (4, 7, 5), mirror=mirror)
    assert_matches(pred, probs, measures=MEASURES, combine=combine)
    assert combine == "a" or (pred.labels != probs[0].argmax(axis=0)).any()  # the pair's mean is not network A
    assert not mirror or not np.allclose(probs, reference(model, image, (8, 16, 16), (4, 7, 5)), atol=1e-3)


def test_overlapping_windows_average_and_restore_training_mode():
    model = tiny_pair()
    for net in model.nets:
        net.train()
    image = make_case(1, shape=(20, 30, 26))[0]
    pred = predict(model, image, (16, 16, 16), (4, 7, 5), batch_size=3)
    assert pred.labels.shape == image.shape and pred.labels.dtype == np.uint8
    assert all(net.training for net in model.nets)
    assert_matches(pred, reference(model, image, (16, 16, 16), (4, 7, 5)))


def test_disagreement_is_total_variation_and_slices_rank_by_entropy():
    model = pair(3)
    image = make_case(2, shape=(12, 20, 20), classes=3)[0]  # smaller than the patch in z: padded
    pred = predict(model, image, (16, 16, 16))
    probs = reference(model, image, (16, 16, 16))
    assert_matches(pred, probs)
    assert 0 <= pred.disagreement.min() and pred.disagreement.max() <= 1
    pa = probs[0]
    entropy = -(pa * np.log(np.clip(pa, 1e-12, 1))).sum(axis=0) / np.log(3)  # network A's, 3 classes
    np.testing.assert_allclose(pred.slice_scores, entropy.mean(axis=(1, 2)), rtol=1e-4)


@pytest.mark.parametrize("rows", [(10, 22), (0, 1), (39, 40), (16, 24)])
def test_a_slab_equals_the_whole_predictions_rows(rows):
    model = tiny_pair()
    image = make_case(5, shape=(40, 24, 20))[0]
    whole = predict(model, image, (16, 16, 16), batch_size=3, measures=MEASURES)
    slab = predict(model, image, (16, 16, 16), batch_size=2, rows=rows, measures=MEASURES)
    assert whole.rows == (0, 40) and slab.rows == rows and slab.labels.shape == (rows[1] - rows[0], 24, 20)
    window = slice(*rows)
    np.testing.assert_array_equal(slab.labels, whole.labels[window])
    np.testing.assert_allclose(slab.disagreement.astype(np.float32), whole.disagreement[window], atol=1e-3)
    for m in MEASURES:
        np.testing.assert_allclose(slab.scores[m], whole.scores[m][window], rtol=1e-4, atol=1e-6)


def test_arguments_that_do_not_fit_are_refused():
    model = pair()
    image = make_case(0)[0]
    for kwargs in ({"rows": (5, 5)}, {"rows": (0, 17)}, {"stride": (17, 8, 8)}, {"combine": "median"}):
        with pytest.raises(DataError):
            predict(model, image, (16, 16, 16), **kwargs)
    with pytest.raises(ValueError, match="unknown measure"):
        predict(model, image, measures=("loudest",))
    with pytest.raises(DataError, match="volume"):
        predict(pair(ndim=2, patch=(32, 32)), make_case(0, shape=(40, 36))[0], rows=(0, 4))


def test_progress_counts_windows_to_the_total():
    calls = []
    predict(tiny_pair(), make_case(0, shape=(40, 24, 24))[0], (16, 16, 16), batch_size=4,
            progress=lambda done, total: calls.append((done, total)))
    total = 4 * 2 * 2  # windows along z, y, x
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


class Faulty(nn.Module):
    """``net`` computed in fp32 whatever the autocast; from its ``after``-th call inside autocast (or its
    ``after``-th call at all, ``anywhere``) it returns NaN. ``calls`` counts its calls."""

    def __init__(self, net: nn.Module, after: int, anywhere: bool = False):
        super().__init__()
        self.net, self.after, self.anywhere, self.calls, self.faulty = net, after, anywhere, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        counted = self.anywhere or torch.is_autocast_enabled("cpu")
        self.faulty += counted
        with torch.autocast("cpu", enabled=False):
            out = self.net(x.float())
        return out * float("nan") if counted and self.faulty >= self.after else out


def test_a_non_finite_row_block_is_computed_again_in_fp32_and_so_is_the_rest(monkeypatch):
    model = tiny_pair()
    image = make_case(6, shape=(48, 20, 20))[0]
    expected = predict(model, image, (8, 16, 16), batch_size=2)  # 11 levels along z of 4 windows
    model.nets = tuple(Faulty(net, after=7) for net in model.nets)
    monkeypatch.setattr(plan, "choose_precision", lambda *a: Precision(torch.bfloat16, (), "checked"))
    pred = predict(model, image, (8, 16, 16), batch_size=2)
    np.testing.assert_array_equal(pred.labels, expected.labels)
    np.testing.assert_array_equal(pred.disagreement, expected.disagreement)
    np.testing.assert_allclose(pred.slice_scores, expected.slice_scores, rtol=1e-6)
    # batches 7 and 8 (level 3, z 12) were NaN: found when rows 12..16 are done, rows 12.. are computed again
    # in fp32 from the first window touching them (level 2, z 8), and every later batch too
    assert [net.calls for net in model.nets] == [8 + 18] * 2
    model.nets = tuple(Faulty(net.net, after=3, anywhere=True) for net in model.nets)
    monkeypatch.setattr(plan, "choose_precision", lambda *a: Precision(torch.float32, (), "asked for"))
    with pytest.raises(DataError, match="not finite .* even in fp32"):
        predict(model, image, (8, 16, 16), batch_size=2)


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
    image = make_case(0, shape=(40, 36))[0]
    pred = predict(model, image, measures=MEASURES)
    assert pred.labels.shape == (40, 36) and pred.slice_scores.shape == (1,) and pred.rows == (0, 40)
    assert_matches(pred, reference(model, image, (32, 32)), measures=MEASURES)


def test_a_volume_is_predicted_without_a_full_size_float32_array(monkeypatch):
    """64×256×256 int16 (16.8 MB as float32). ``tracemalloc`` sees NumPy's allocations, not torch's CPU
    tensors: the buffer of open rows (on the model's device) is bounded by its shape (spied on): patch[0] +
    stride[0] rows of both networks' channels and of the weights, whatever the volume's length."""
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, (64, 256, 256)).astype(np.int16)
    image[20:40, 100:180, 60:200] += 500
    patch, float32_size = (16, 128, 128), 4 * image.size
    buffers, peaks = [], []
    init, of = inference._Buffer.__init__, IntensityStats.of

    def spy_buffer(self, *args):
        init(self, *args)
        buffers.append(self)

    def stats_then_reset_peak(cls, image):
        stats = of(image)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()
        return stats

    monkeypatch.setattr(inference._Buffer, "__init__", spy_buffer)
    monkeypatch.setattr(IntensityStats, "of", classmethod(stats_then_reset_peak))
    tracemalloc.start()
    try:
        pred = predict(tiny_pair(), image, patch)
        peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    outputs = pred.labels.nbytes + pred.disagreement.nbytes  # 3 bytes a voxel
    assert max(peaks) < 3 * float32_size  # the image's statistics (a histogram), then the streaming
    assert peaks[1] - outputs < float32_size, f"{peaks[1] / 1e6:.1f} MB traced: a full-size float32 array was made"
    (buffer,) = buffers
    rows = patch[0] + default_stride(patch)[0]
    assert buffer.sums.shape == (2, 1, rows, 256, 256) and buffer.weight.shape == (rows, 256, 256)
    assert 2 * rows < image.shape[0]


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
    assert pred.labels.shape == cases[1][0].shape and set(pred.scores) == {MEASURE}
