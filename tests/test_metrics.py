"""Metrics: hand-computed cases, empty-mask rules, directed ASD, and agreement with medpy."""
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from napari_dmd.errors import DataError
from napari_dmd.metrics import METRICS, asd, dice, evaluate_case, hd95, jaccard, summarize


def rod(start: int, stop: int, shape=(3, 3, 20)) -> np.ndarray:
    """A one-voxel-thick rod along x: all of its voxels are surface voxels."""
    mask = np.zeros(shape, bool)
    mask[1, 1, start:stop] = True
    return mask


def test_shifted_rod():
    ref, pred = rod(2, 10), rod(4, 12)  # 8 voxels each, shifted by 2, overlap 6
    assert dice(pred, ref) == pytest.approx(12 / 16)
    assert jaccard(pred, ref) == pytest.approx(6 / 10)
    # distances each way: six 0, one 1, one 2; 95th percentile of the 16 is 2
    assert hd95(pred, ref) == pytest.approx(2.0)
    assert asd(pred, ref) == pytest.approx(3 / 8) == asd(ref, pred)
    # only the x spacing (last array axis) matters for a shift along x
    assert hd95(pred, ref, spacing=(3.0, 2.0, 0.5)) == pytest.approx(1.0)
    assert asd(pred, ref, spacing=(3.0, 2.0, 0.5)) == pytest.approx(3 / 16)


def test_asd_is_directed():
    ref, pred = rod(2, 10), rod(2, 6)  # pred lies on ref; ref reaches 1..4 voxels past pred
    assert asd(pred, ref) == 0.0
    assert asd(ref, pred) == pytest.approx((1 + 2 + 3 + 4) / 8)
    # hd95 is symmetric: 8 zeros and 1, 2, 3, 4 -> position 0.95 * 11 = 10.45 between 3 and 4
    assert hd95(pred, ref) == hd95(ref, pred) == pytest.approx(3.45)


def test_surfaces_exclude_the_inside():
    big, small = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    big[2:7, 2:7] = True  # 5x5: a ring of 16 surface pixels
    small[3:6, 3:6] = True  # 3x3: a ring of 8 around one inner pixel
    assert asd(small, big) == pytest.approx(1.0)
    assert asd(big, small) == pytest.approx((12 + 4 * math.sqrt(2)) / 16)  # corners are diagonal
    assert dice(small, big) == pytest.approx(18 / 34)


def test_empty_masks():
    empty, box = np.zeros((4, 5, 6), bool), np.zeros((4, 5, 6), bool)
    box[1:3, 1:3, 1:3] = True
    assert (dice(empty, empty), jaccard(empty, empty), hd95(empty, empty), asd(empty, empty)) == (1, 1, 0, 0)
    for a, b in ((empty, box), (box, empty)):
        assert dice(a, b) == 0 and jaccard(a, b) == 0
        assert hd95(a, b) == asd(a, b) == pytest.approx(math.sqrt(4**2 + 5**2 + 6**2))
        assert hd95(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(8**2 + 5**2 + 3**2))


def test_evaluate_case_and_summarize():
    ref = np.zeros((4, 6, 20), np.uint8)
    ref[1, 1, 2:10], ref[2, 4, 2:10] = 1, 2
    pred = ref.copy()
    pred[1, 1, 2:10], pred[1, 1, 4:12] = 0, 1  # class 1 shifted by 2 along x, class 2 exact
    rows = evaluate_case(pred, ref, 4, spacing=(1.0, 1.0, 0.5))
    assert [r["class"] for r in rows] == [1, 2, 3] and all(set(r) == {"class", *METRICS} for r in rows)
    one, two, three = rows
    assert (one["dice"], one["hd95"], one["hd95_mm"], one["asd"], one["asd_mm"]) == pytest.approx(
        (0.75, 2.0, 1.0, 0.375, 0.1875))
    assert (two["dice"], two["jaccard"], two["hd95"], two["asd_mm"]) == (1.0, 1.0, 0.0, 0.0)
    assert (three["dice"], three["hd95"]) == (1.0, 0.0)  # absent from both
    no_spacing = evaluate_case(pred, ref, 3)
    assert all(r["hd95_mm"] == r["hd95"] and r["asd_mm"] == r["asd"] for r in no_spacing)

    table = [{"case": "a", **r} for r in rows] + [{"case": "b", **r} for r in evaluate_case(ref, ref, 4)]
    means = summarize(table)
    assert [m["class"] for m in means] == [1, 2, 3] and set(means[0]) == {"class", *METRICS}
    assert means[0]["dice"] == pytest.approx(0.875) and means[0]["hd95_mm"] == pytest.approx(0.5)
    assert summarize([]) == []


def test_evaluate_case_errors():
    with pytest.raises(DataError, match="shape"):
        evaluate_case(np.zeros((2, 3, 4), int), np.zeros((2, 3, 5), int), 2)
    with pytest.raises(DataError, match="at least 2"):
        evaluate_case(np.zeros((2, 3, 4), int), np.zeros((2, 3, 4), int), 1)
    with pytest.raises(DataError, match="shape"):
        dice(np.zeros(3, bool), np.zeros(4, bool))


def blob(seed: int, shape) -> np.ndarray:
    noise = gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.5)
    return noise > np.quantile(noise, 0.7)


@pytest.mark.parametrize("shape", [(12, 14, 16), (30, 40)])
@pytest.mark.parametrize("spacing", [None, "anisotropic"])
def test_agrees_with_medpy(shape, spacing):
    binary = pytest.importorskip("medpy.metric.binary")
    spacing = None if spacing is None else (2.0, 0.7, 1.1)[-len(shape):]
    for seed in range(3):
        pred, ref = blob(seed, shape), blob(seed + 10, shape)
        assert dice(pred, ref) == pytest.approx(binary.dc(pred, ref), rel=1e-12)
        assert jaccard(pred, ref) == pytest.approx(binary.jc(pred, ref), rel=1e-12)
        assert hd95(pred, ref, spacing) == pytest.approx(binary.hd95(pred, ref, spacing), rel=1e-12)
        assert asd(pred, ref, spacing) == pytest.approx(binary.asd(pred, ref, spacing), rel=1e-12)
        assert asd(ref, pred, spacing) == pytest.approx(binary.asd(ref, pred, spacing), rel=1e-12)
