"""Reviewed-aware sampling: labeled crops drawn in proportion to reviewed voxels, always holding a reviewed one."""
import numpy as np
import pytest

from napari_dmd.augment import Augmentation
from napari_dmd.data import PatchSampler, Volume, VoxelPicker
from napari_dmd.review import Reviewed

PATCH = (8, 16, 16)


def one_reviewed_slice(shape=(32, 24, 24), index: int = 5) -> Volume:
    """A tall structure labeled on every slice (the ground truth, as the loop benchmark holds it), only slice
    ``index`` reviewed."""
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    label[2:30, 6:18, 6:18] = 1
    image = (rng.normal(0, 0.3, shape) + 2.0 * label).astype(np.float32)
    return Volume.create(image, label, mask=Reviewed(shape, slices={index}).mask())


@pytest.mark.parametrize("fg,spatial", [(0.0, 0.0), (1.0, 0.0), (0.5, 1.0)])
def test_every_labeled_crop_of_a_single_reviewed_slice_holds_it(fg, spatial):
    v = one_reviewed_slice()
    s = PatchSampler([v], [], PATCH, np.random.default_rng(0), fg, "reviewed", Augmentation(spatial=spatial))
    for _ in range(60):
        _, label, mask = s.labeled_patch()
        assert mask.any()
        reviewed = np.flatnonzero(mask.any(axis=(1, 2)))
        assert len(reviewed) == 1 and mask[reviewed[0]].mean() > 0.5  # the reviewed slice, across the crop


def test_uniform_sampling_centres_foreground_crops_off_the_reviewed_slice():
    """What 'reviewed' mends (and why the test above can fail): today's foreground-centred crops of a partly
    reviewed volume often hold no reviewed voxel."""
    s = PatchSampler([one_reviewed_slice()], [], PATCH, np.random.default_rng(0), 1.0, "uniform")
    assert sum(not s.labeled_patch()[2].any() for _ in range(60)) > 20


def draws_of_partial(sampling: str, n: int = 1000) -> float:
    """Share of labeled crops drawn from a volume with one reviewed slice of 16, beside a fully labeled one."""
    full = Volume.create(*[a[:16] for a in (one_reviewed_slice().image.arrays[0], one_reviewed_slice().label)])
    partial = one_reviewed_slice(shape=(16, 24, 28))
    s = PatchSampler([full, partial], [], PATCH, np.random.default_rng(1), 0.0, sampling)
    shapes = []
    corner = s._corner
    s._corner = lambda shape, centre: shapes.append(shape) or corner(shape, centre)
    for _ in range(n):
        s.labeled_patch()
    return sum(shape == partial.image.shape for shape in shapes) / n


def test_volumes_are_drawn_in_proportion_to_their_reviewed_voxels():
    expected = 24 * 28 / (16 * 24 * 24 + 24 * 28)  # one slice of 24 x 28 against 16 x 24 x 24 voxels: 6.8%
    assert draws_of_partial("reviewed") == pytest.approx(expected, abs=0.025)
    assert draws_of_partial("uniform") == pytest.approx(0.5, abs=0.06)  # today: every volume as often


def test_the_picker_draws_where_every_array_is_nonzero():
    rng = np.random.default_rng(2)
    a, b = rng.random((6, 7, 8)) < 0.4, rng.integers(0, 3, (6, 7, 8))
    both = np.argwhere(a & (b > 0))
    picker = VoxelPicker(b, a)
    assert len(picker) == len(both)
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(50):
        np.testing.assert_array_equal(picker.pick(r2), both[r1.integers(len(both))])
