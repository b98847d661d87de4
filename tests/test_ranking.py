"""'Label this next': only unreviewed slices, one entry per image and slab, spread across images."""
import numpy as np

from napari_dmd.ranking import image_suggestions, slice_means, suggest
from napari_dmd.review import Reviewed


def volume(means, shape=(4, 4)):
    return np.repeat(np.asarray(means, np.float32)[:, None, None], np.prod(shape), axis=1).reshape(-1, *shape)


def test_reviewed_slices_are_never_suggested():
    d = volume([0.9, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7])
    rec = Reviewed(d.shape, slices={0, 1, 9})
    got = suggest({"a": d}, {"a": rec}, count=10, slab=1)
    assert got and all(not rec.is_reviewed(s.index) for s in got)
    assert len(got) == 7
    assert suggest({"a": d}, {"a": Reviewed.complete(d.shape)}) == []


def test_one_entry_per_slab_and_the_score_is_the_slab_mean():
    d = volume([0, 0, 0.2, 0.6, 1.0, 0.6, 0.2, 0, 0, 0, 0, 0])
    got = image_suggestions("a", d, None, slab=5)
    assert got[0].index == 4 and np.isclose(got[0].score, (0.2 + 0.6 + 1.0 + 0.6 + 0.2) / 5)
    indices = [s.index for s in got]
    assert all(abs(a - b) >= 5 for i, a in enumerate(indices) for b in indices[i + 1:])
    # a reviewed neighbour is left out of the mean, not counted as 0
    rec = Reviewed(d.shape, slices={2, 6})
    best = image_suggestions("a", d, rec, slab=5)[0]
    assert best.index == 4 and np.isclose(best.score, (0.6 + 1.0 + 0.6) / 3)


def test_the_list_is_spread_across_images():
    maps = {"hot": volume(np.linspace(0.9, 0.5, 30)), "warm": volume([0.3] * 30), "cool": volume([0.1] * 30)}
    got = suggest(maps, {}, count=6, slab=5)
    assert [s.image for s in got[:3]] == ["hot", "warm", "cool"]
    assert [s.image for s in got[3:]] == ["hot", "warm", "cool"]


def test_2d_images_are_one_entry_unless_reviewed():
    d = np.full((8, 8), 0.4, np.float32)
    assert [(s.image, s.index) for s in suggest({"x": d}, {"x": None})] == [("x", 0)]
    assert suggest({"x": d}, {"x": Reviewed.complete(d.shape)}) == []
    assert np.allclose(slice_means(d), [0.4])
