"""nnU-Net-like augmentation: rotations and scalings keep labels and masks on their image, intensity changes
leave them alone."""
import math

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion

from napari_dmd.augment import Augmentation, Warp
from napari_dmd.data import PatchSampler, Volume

PATCH = (8, 24, 24)


def off_border(image: np.ndarray, label: np.ndarray, threshold: float) -> int:
    """Voxels where ``label`` is not the threshold of ``image`` though the label is the same all around them
    in-plane (3 × 3; the patch's outermost ring, whose neighbours are unseen, left out): interpolation at the
    label's borders aside, how far the label is off the image."""
    fg = label == 1
    plane = np.zeros((1, 3, 3), bool)
    plane[0] = True
    border = binary_dilation(fg, plane) & ~binary_erosion(fg, plane, border_value=1)
    return int((((image > threshold) != fg) & ~border)[..., 1:-1, 1:-1].sum())


def smooth_volume(shape=(16, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image with blobs and its label: the threshold of the image at 0.5."""
    z, y, x = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    image = np.sin(y / 3) * np.cos(x / 4) + 0.02 * z
    return image.astype(np.float32), (image > 0.5).astype(np.uint8)


def test_a_quarter_turn_is_a_rotation_of_the_crop():
    rng = np.random.default_rng(0)
    warp = Warp(math.pi / 2, 1.0)
    m = warp.margin((4, 10, 10))
    source = rng.random((4, 10 + 2 * m[1], 10 + 2 * m[2])).astype(np.float32)
    crop = source[:, m[1]:m[1] + 10, m[2]:m[2] + 10]
    for order in (0, 1):
        np.testing.assert_allclose(warp.apply(source, (4, 10, 10), order), np.rot90(crop, -1, axes=(1, 2)),
                                   atol=1e-5)


@pytest.mark.parametrize("angle,scale", [(0.26, 1.0), (-0.26, 1.25), (0.1, 0.85), (0.0, 1.25)])
def test_the_margin_holds_the_transformed_patch(angle, scale):
    """Sampled from a source whose margin is marked, a warped patch never reaches the mark."""
    warp = Warp(angle, scale)
    m = warp.margin(PATCH)
    inner = np.ones((PATCH[0], PATCH[1] + 2 * m[1], PATCH[2] + 2 * m[2]), np.uint8)
    inner[:, :1], inner[:, -1:], inner[:, :, :1], inner[:, :, -1:] = 0, 0, 0, 0  # the outermost ring marked 0
    assert warp.apply(inner, PATCH, 0).all()


def test_rotation_and_scaling_keep_the_label_on_the_image():
    image, label = smooth_volume()
    v = Volume.create(image, label)
    threshold = v.stats[0].apply(np.float32(0.5))
    s = PatchSampler([v], [], PATCH, np.random.default_rng(0), augmentation=Augmentation(spatial=1.0))
    plain = PatchSampler([v], [], PATCH, np.random.default_rng(0))
    moved = 0
    for _ in range(20):
        (img,), lab, msk = s.labeled_patch()  # one channel
        assert img.shape == lab.shape == msk.shape == PATCH and lab.dtype == np.uint8 and msk.dtype == bool
        assert off_border(img, lab, threshold) == 0  # padding: image 0 (below the threshold), label 0
        plain_img = plain.labeled_patch()[0][0]
        moved += not np.allclose(img, plain_img)
    assert moved >= 15  # the patches were transformed


def test_a_label_left_unwarped_would_not_match():
    """The check above can fail: a rotated image against its unrotated label disagrees on many voxels."""
    image, label = smooth_volume()
    warp = Warp(0.26, 1.2)
    m = warp.margin(PATCH)
    src = (slice(4, 12), slice(12 - m[1], 36 + m[1]), slice(12 - m[2], 36 + m[2]))
    img = warp.apply(image[src], PATCH, 1)
    wrong = label[4:12, 12:36, 12:36]
    assert off_border(img, wrong, 0.5) > 100
    assert off_border(img, warp.apply(label[src], PATCH, 0), 0.5) == 0


def test_intensity_changes_the_image_only():
    image, label = smooth_volume()
    mask = np.zeros(label.shape, bool)
    mask[5] = True
    v = Volume.create(image, label, mask=mask)
    a = PatchSampler([v], [v], PATCH, np.random.default_rng(0), augmentation=Augmentation(intensity=1.0))
    b = PatchSampler([v], [v], PATCH, np.random.default_rng(0))
    img_a, lab_a, msk_a = a.labeled_patch()
    img_b, lab_b, msk_b = b.labeled_patch()
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(msk_a, msk_b)
    assert np.isfinite(img_a).all() and img_a.dtype == np.float32 and not np.allclose(img_a, img_b)


@pytest.mark.parametrize("name", ["brightness", "contrast", "gamma", "noise", "blur"])
def test_each_intensity_transform_fires(name, monkeypatch):
    """With the others' ranges made identities, each transform alone still changes the patch."""
    import napari_dmd.augment as aug

    identity = {"brightness": ("BRIGHTNESS", (1.0, 1.0)), "contrast": ("CONTRAST", (1.0, 1.0)),
                "gamma": ("GAMMA", (1.0, 1.0)), "noise": ("NOISE_VARIANCE", (0.0, 0.0)),
                "blur": ("BLUR_SIGMA", (1e-6, 1e-6))}
    for other, (attr, value) in identity.items():
        if other != name:
            monkeypatch.setattr(aug, attr, value)
    x = np.random.default_rng(0).normal(size=PATCH).astype(np.float32)
    out = Augmentation(intensity=1.0).intensities(x.copy(), np.random.default_rng(1))
    assert np.isfinite(out).all() and not np.allclose(out, x, atol=1e-4)


def test_2d_images_are_augmented_too():
    image, label = smooth_volume()
    v = Volume.create(image[3], label[3])
    s = PatchSampler([v], [v], (24, 24), np.random.default_rng(0), augmentation=Augmentation(1.0, 1.0))
    b = s.batch(2, 2)
    assert b["image"].shape == (4, 1, 24, 24) and np.isfinite(b["image"]).all()

