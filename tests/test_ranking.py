"""'Label this next': only unreviewed slices, one entry per image and slab, spread across images."""
import numpy as np
import pytest

from napari_dmd.ranking import image_suggestions, slice_means, slice_scores, suggest
from napari_dmd.review import Reviewed


def volume(scores):
    return np.asarray(scores, np.float32)


def test_reviewed_slices_are_never_suggested():
    d = volume([0.9, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7])
    rec = Reviewed((len(d), 4, 4), slices={0, 1, 9})
    got = suggest({"a": d}, {"a": rec}, count=10, slab=1)
    assert got and all(not rec.is_reviewed(s.index) for s in got)
    assert len(got) == 7
    assert suggest({"a": d}, {"a": Reviewed.complete((len(d), 4, 4))}) == []


def test_one_entry_per_slab_and_the_score_is_the_slab_mean():
    d = volume([0, 0, 0.2, 0.6, 1.0, 0.6, 0.2, 0, 0, 0, 0, 0])
    got = image_suggestions("a", d, None, slab=5)
    assert got[0].index == 4 and np.isclose(got[0].score, (0.2 + 0.6 + 1.0 + 0.6 + 0.2) / 5)
    indices = [s.index for s in got]
    assert all(abs(a - b) >= 5 for i, a in enumerate(indices) for b in indices[i + 1:])
    # a reviewed neighbour is left out of the mean, not counted as 0
    rec = Reviewed((len(d), 4, 4), slices={2, 6})
    best = image_suggestions("a", d, rec, slab=5)[0]
    assert best.index == 4 and np.isclose(best.score, (0.6 + 1.0 + 0.6) / 3)


def test_the_list_is_spread_across_images():
    maps = {"hot": volume(np.linspace(0.9, 0.5, 30)), "warm": volume([0.3] * 30), "cool": volume([0.1] * 30)}
    got = suggest(maps, {}, count=6, slab=5)
    assert [s.image for s in got[:3]] == ["hot", "warm", "cool"]
    assert [s.image for s in got[3:]] == ["hot", "warm", "cool"]


def test_2d_images_and_thin_volumes():
    d = np.full((8, 8), 0.4, np.float32)
    assert np.allclose(slice_means(d), [0.4])
    assert [(s.image, s.index) for s in suggest({"x": slice_means(d)}, {"x": None})] == [("x", 0)]
    assert suggest({"x": slice_means(d)}, {"x": Reviewed.complete(d.shape)}) == []
    thin = image_suggestions("t", [0.1, 0.5, 0.2], None, slab=5)  # fewer slices than the slab
    assert len(thin) == 1 and np.isclose(thin[0].score, 0.8 / 3)  # every slab is the whole volume


def test_slice_scores_measures_tell_apart_what_they_measure():
    """Three slices of 10x10: 0 a small unsure structure, 1 a large half-unsure one, 2 all-sure background."""
    d = np.zeros((3, 10, 10), np.float32)
    p = np.zeros((2, 3, 10, 10), np.float32)
    p[0] = 1.0  # network A: background everywhere ...
    p[:, 0, 4:6, 4:6] = 0.5  # ... except a 2x2 structure it doubts on slice 0
    d[0, 4:6, 4:6] = 0.8
    p[:, 1, :, :5] = np.array([0.1, 0.9])[:, None, None]  # a large structure on slice 1, half of it disputed
    d[1, :, :2] = 0.3
    mean = slice_scores(d, p, "mean")
    assert np.allclose(mean, [3.2 / 100, 6.0 / 100, 0.0])
    structure = slice_scores(d, p, "structure")  # near the structure only: the small doubt counts more
    assert structure[0] > structure[1] > structure[2] == 0.0
    assert structure[0] > 3 * mean[0]
    peak = slice_scores(d, p, "peak")
    assert peak[0] == pytest.approx(0.8) and peak[1] == pytest.approx(0.3) and peak[2] == 0.0
    entropy = slice_scores(d, p, "entropy")  # A's own doubt: the 2x2 at p=0.5 (entropy 1), 50 voxels at 0.1/0.9
    assert entropy[2] == 0.0 and 0 < entropy[0] < entropy[1] < 1
    with pytest.raises(ValueError, match="unknown measure"):
        slice_scores(d, p, "max")
