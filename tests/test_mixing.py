"""Bidirectional copy-paste: mixed images keep their labels and review masks where they came from."""
import numpy as np
import pytest

from napari_dmd.mixing import copy_paste, random_box


def batch(n_lab: int, n_unl: int, shape=(8, 12, 10)) -> dict[str, np.ndarray]:
    """Each patch's image holds its own index (labeled 0.., unlabeled 100..) plus the voxel's position, so every
    mixed voxel tells where it came from; labels and masks are random."""
    rng = np.random.default_rng(0)
    pos = np.arange(np.prod(shape)).reshape(shape) / 1e6
    images = [k + pos for k in range(n_lab)] + [100 + k + pos for k in range(n_unl)]
    return {"image": np.stack(images)[:, None].astype(np.float32),
            "label": rng.integers(0, 3, (n_lab, 1, *shape)).astype(np.uint8),
            "mask": (rng.random((n_lab, 1, *shape)) < 0.7).astype(np.float32)}


@pytest.mark.parametrize("n_lab,n_unl", [(2, 2), (1, 3), (3, 1)])
def test_the_pasted_labeled_region_carries_its_label_and_mask_and_the_rest_none(n_lab, n_unl):
    b = batch(n_lab, n_unl)
    out = copy_paste(b, 0.5, np.random.default_rng(1))
    n = n_lab + n_unl
    assert out["image"].shape == b["image"].shape
    assert out["label"].shape == out["mask"].shape == (n, *b["label"].shape[1:])
    source = np.floor(out["image"] + 1e-3).astype(int)  # which patch each voxel comes from
    pos = out["image"] - source
    np.testing.assert_allclose(pos, np.broadcast_to(b["image"][0], pos.shape), atol=1e-5)  # pasted at the same place
    for k in range(n):
        own = k if k < n_lab else 100 + k - n_lab
        from_lab = source[k] < 100
        assert (source[k] == own).mean() == pytest.approx(1 - 0.5 ** 3, abs=0.05)  # a box of half each side
        assert from_lab.any() and (~from_lab).any()
        for i in np.unique(source[k][from_lab]):  # the labeled voxels keep their source's label and mask
            at = source[k] == i
            np.testing.assert_array_equal(out["label"][k][at], b["label"][i][at])
            np.testing.assert_array_equal(out["mask"][k][at], b["mask"][i][at])
        assert not out["mask"][k][~from_lab].any()  # voxels of unlabeled images are never supervised
        assert not out["label"][k][~from_lab].any()


def test_each_pair_swaps_the_same_box_as_bcp():
    b = batch(2, 2)
    out = copy_paste(b, 0.67, np.random.default_rng(3))
    for i in range(2):  # labeled i and unlabeled i together hold each of their voxels once
        both = np.sort(np.concatenate([out["image"][i].ravel(), out["image"][2 + i].ravel()]))
        np.testing.assert_array_equal(both, np.sort(np.concatenate([b["image"][i].ravel(), b["image"][2 + i].ravel()])))
        assert out["mask"][i].sum() + out["mask"][2 + i].sum() == b["mask"][i].sum()


def test_without_unlabeled_patches_the_batch_is_unchanged():
    b = batch(2, 0)
    assert copy_paste(b, 0.5, np.random.default_rng(0)) is b


def test_the_box_side_is_the_ratio_of_the_patch():
    rng = np.random.default_rng(0)
    for _ in range(20):
        box = random_box((16, 32, 30), 0.67, rng)
        assert [s.stop - s.start for s in box] == [11, 21, 20]
        assert all(0 <= s.start and s.stop <= p for s, p in zip(box, (16, 32, 30)))
