"""Training data held once, as given or memory-mapped: no full-size copies, the same patches as before."""
import os
import tracemalloc

import numpy as np
import pytest

from napari_dmd import data as data_module
from napari_dmd.channels import Channels
from napari_dmd.cli import main
from napari_dmd.data import IntensityStats, PatchSampler, Volume, normalize_intensity
from napari_dmd.errors import DataError
from napari_dmd.folders import load_training_data
from napari_dmd.io import Geometry, read_image, write_image
from napari_dmd.training import check_volumes

from synthetic import SHARED_DATA, make_case

GEOM = Geometry(spacing=(0.8, 0.8, 2.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))


def percentile_stats(image):
    """The statistics as defined: percentiles over every voxel, clipped mean and std (float64)."""
    x = np.asarray(image, dtype=np.float64).ravel()
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip(x, lo, hi)
    return lo, hi, x.mean(), x.std()


def old_normalize(image):
    """The whole-volume normalisation training used before (float32 throughout)."""
    x = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip(x, lo, hi)
    return ((x - x.mean()) / float(x.std())).astype(np.float32)


def normalised_first(v, normalize=normalize_intensity):
    """The old algorithm: the volume normalised whole up front, its patches cut from that copy."""
    return Volume(Channels([normalize(v.image.arrays[0])]), v.label, v.mask, v.name,
                  known_stats=(IntensityStats.identity(),))


def batches(labeled, unlabeled, patch, seed=0, n=4, fraction=0.5):
    s = PatchSampler(labeled, unlabeled, patch, np.random.default_rng(seed), fraction)
    return [s.batch(2, 2) for _ in range(n)]


def assert_same_batches(a, b, **tol):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype, k
            if tol and k == "image":
                np.testing.assert_allclose(x[k], y[k], **tol)
            else:
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ---------------------------------------------------------------- (a) clinical size, no full-size copy
def test_a_large_int16_volume_is_held_as_given_and_sampled_without_full_size_copies():
    rng = np.random.default_rng(0)
    shape = (200, 512, 512)
    image = rng.integers(-1024, 3072, shape, dtype=np.int16)
    label = np.zeros(shape, np.uint8)
    label[80:120, 200:300, 200:300] = 1
    tracemalloc.start()
    try:
        v = Volume.create(image, label, name="ct")
        assert v.image.arrays[0] is image and v.label is label and v.known_stats is None  # statistics on first use
        assert check_volumes([v], [], 2) == 3
        sampler = PatchSampler([v], [], (32, 64, 64), np.random.default_rng(1), foreground_fraction=0.5)
        for _ in range(3):
            batch = sampler.batch(2, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (4, 1, 32, 64, 64)
    assert v.known_stats is not None
    assert peak < 0.5 * image.nbytes, f"traced peak {peak / 2**20:.0f} MiB"  # a float32 copy: 8x the bound


def test_a_labels_and_masks_are_not_copied_when_already_compact():
    img, lab = make_case(0)
    mask = np.zeros(lab.shape, bool)
    mask[3] = True
    v = Volume.create(img, lab, mask)
    assert v.image.arrays[0] is img and v.label is lab and v.mask is mask
    as_bool = Volume.create(img, lab.astype(bool))
    assert as_bool.label.dtype == np.uint8 and np.shares_memory(as_bool.label, as_bool.label.view(bool))
    wide = lab.astype(np.uint16) * 300
    assert Volume.create(img, wide).label.dtype == np.int16 and np.shares_memory(Volume.create(img, wide).label, wide)
    assert Volume.create(img, lab.astype(np.int64)).label.dtype == np.uint8


# ---------------------------------------------------------------- (b) exact statistics of integer images
@pytest.mark.parametrize("dtype,low,high", [(np.int16, -32768, 32768), (np.int16, -1024, 3072), (np.uint8, 0, 256),
                                            (np.uint16, 0, 65536), (np.int32, -5, 40)])
def test_b_integer_statistics_equal_the_percentile_ones(monkeypatch, dtype, low, high):
    monkeypatch.setattr(data_module, "SLAB_VOXELS", 5000)  # many blocks
    image = np.random.default_rng(2).integers(low, high, (23, 40, 36)).astype(dtype)
    image[0, 0, :2] = (low, high - 1)  # the extremes of the type: no overflow
    got = IntensityStats.of(image)
    np.testing.assert_allclose([got.lo, got.hi, got.mean, got.std], percentile_stats(image), rtol=1e-12)
    strided = image[:, ::2, 1::3]  # a view, not contiguous
    got = IntensityStats.of(strided)
    np.testing.assert_allclose([got.lo, got.hi, got.mean, got.std], percentile_stats(strided), rtol=1e-12)


def test_b_float_statistics_of_a_small_image_use_every_voxel():
    image = make_case(4, scale=1e6)[0]
    got = IntensityStats.of(image)
    np.testing.assert_allclose([got.lo, got.hi, got.mean, got.std], percentile_stats(image), rtol=1e-12)


# ---------------------------------------------------------------- (c) the same patches as before
def synthetic_volumes():
    """Integer and float volumes, one smaller than the patch, one partly reviewed."""
    img0, lab0 = make_case(0, shape=(20, 40, 36), dtype=np.float32, scale=300)
    img1, lab1 = make_case(1, shape=(12, 30, 48), classes=3)
    mask = np.zeros(lab1.shape, bool)
    mask[4:7] = True
    lab = [Volume.create((img0 - 100).astype(np.int16), lab0), Volume.create(img1, lab1, mask),
           Volume.create((img0 * 0.5).clip(0, 255).astype(np.uint8), lab0)]
    unl = [Volume.create(make_case(k, shape=(18, 34, 34), scale=1e3)[0].astype(np.float64)) for k in (2, 3)]
    return lab, unl


def test_c_patches_equal_those_of_the_whole_volume_normalised_first():
    lab, unl = synthetic_volumes()
    new = batches(lab, unl, (16, 32, 32))
    assert_same_batches(new, batches([normalised_first(v) for v in lab], [normalised_first(v) for v in unl],
                                     (16, 32, 32)))
    old = batches([normalised_first(v, old_normalize) for v in lab], [normalised_first(v, old_normalize) for v in unl],
                  (16, 32, 32))
    assert_same_batches(new, old, rtol=1e-4, atol=1e-4)  # float32 statistics then, float64 now


@pytest.mark.skipif(not (SHARED_DATA / "hippocampus").is_dir(), reason="../shared/data is absent")
def test_c_patches_of_real_data_equal_those_of_before():
    pairs = [(SHARED_DATA / "la_half" / "imagesTr", SHARED_DATA / "la_half" / "labelsTr"),
             (SHARED_DATA / "hippocampus" / "images", SHARED_DATA / "hippocampus" / "labels")]
    lab = []
    for images, labels in pairs:
        for path in sorted(images.iterdir())[:3]:
            lab.append(Volume.create(read_image(path)[0], read_image(labels / path.name)[0], name=path.name))
    assert any(v.image.arrays[0].dtype == np.uint8 for v in lab)
    new = batches(lab, [], (16, 32, 32), n=6)
    assert_same_batches(new, batches([normalised_first(v) for v in lab], [], (16, 32, 32), n=6))
    assert_same_batches(new, batches([normalised_first(v, old_normalize) for v in lab], [], (16, 32, 32), n=6),
                        rtol=1e-4, atol=1e-4)


def test_c_compact_float_volumes_are_normalised_float16():
    img, lab = make_case(5, scale=1e6)
    v = Volume.create(img, lab, compact=True)
    assert v.image.arrays[0].dtype == np.float16 and v.known_stats == (IntensityStats.identity(),)
    np.testing.assert_allclose(v.stats[0].apply(v.image.arrays[0]), normalize_intensity(img), atol=5e-3)
    f64 = Volume.create(img.astype(np.float64), compact=True)
    assert f64.image.arrays[0].dtype == np.float16
    ints = (img / 1e4).astype(np.int16)
    assert Volume.create(ints, compact=True).image.arrays[0] is ints  # integer images stay as they are
    half = (img / 1e4).astype(np.float16)
    assert Volume.create(half, compact=True).image.arrays[0] is half  # not smaller as float16 copy


# ---------------------------------------------------------------- (d) the memory-mapped cache
@pytest.fixture
def files(tmp_path):
    """case0 (int16), case1 (float32, partly reviewed), case2 (unlabeled int16)."""
    from napari_dmd.review import Reviewed, save_reviewed, sidecar_path

    for k in range(3):
        img, lab = make_case(k, shape=(16, 32, 32), classes=3)
        write_image(tmp_path / "images" / f"case{k}.nii.gz", img if k == 1 else (img * 100).astype(np.int16), GEOM)
        if k < 2:
            write_image(tmp_path / "labels" / f"case{k}.nii.gz", lab, GEOM)
    save_reviewed(Reviewed((16, 32, 32), slices={3, 9}), sidecar_path(tmp_path / "labels" / "case1.nii.gz"))
    return tmp_path


def load(root, cache=None):
    return load_training_data(root / "images", root / "labels", [], cache=cache)


def stamps(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def same_volumes(a, b):
    for x, y in zip(a.labeled + a.unlabeled, b.labeled + b.unlabeled):
        assert x.name == y.name and x.stats == y.stats and x.spacing == y.spacing
        assert x.image.names == y.image.names
        for k in ("image", "label", "mask"):
            u, w = (x.image.arrays[0], y.image.arrays[0]) if k == "image" else (getattr(x, k), getattr(y, k))
            assert (u is None) == (w is None), k
            if u is not None:
                assert u.dtype == w.dtype
                np.testing.assert_array_equal(u, w)


def test_d_cache_is_written_once_reused_memory_mapped_and_gives_the_same_batches(files):
    cache = files / "cache"
    plain = load(files)
    first = load(files, cache)
    written = stamps(cache)
    assert len([p for p in written if p.name == "manifest.json"]) == 3
    again = load(files, cache)
    assert stamps(cache) == written and not again.notes  # nothing rewritten, nothing to report
    for v in again.labeled + again.unlabeled:
        assert isinstance(v.image.arrays[0], np.memmap)
    assert all(isinstance(v.label, np.memmap) for v in again.labeled)
    compact = plain.labeled[1].image.arrays[0].dtype, again.labeled[1].image.arrays[0].dtype
    assert compact == (np.float16, np.float16)  # compact float
    assert plain.labeled[0].image.arrays[0].dtype == np.int16
    for other in (first, again):
        same_volumes(plain, other)
        assert {k.name: v.tolist() for k, v in other.values.items()} == \
               {k.name: v.tolist() for k, v in plain.values.items()}
        assert other.reviewed == plain.reviewed and other.reviewed["case1"]["slices"] == [3, 9]
        assert_same_batches(batches(plain.labeled, plain.unlabeled, (16, 16, 16), n=3),
                            batches(other.labeled, other.unlabeled, (16, 16, 16), n=3))


def entry(cache, case):
    (folder,) = [p for p in cache.iterdir() if p.name.startswith(f"{case}-")]
    return folder


@pytest.mark.parametrize("harm,message", [
    ("source", "stale: case0.nii.gz changed"),
    ("sidecar", "stale: case0.reviewed.json changed"),
    ("truncate", "damaged: channel_0.npy has"),
    ("flip", "damaged: label.npy does not match its checksum"),
    ("manifest", "damaged: manifest.json is unreadable"),
    ("missing", "damaged: channel_0.npy is missing"),
])
def test_d_stale_or_damaged_cache_is_reported_in_one_line_and_rebuilt(files, harm, message):
    from napari_dmd.review import Reviewed, save_reviewed, sidecar_path

    cache = files / "cache"
    load(files, cache)
    folder = entry(cache, "case0")
    if harm == "source":
        img, _ = read_image(files / "images" / "case0.nii.gz")
        write_image(files / "images" / "case0.nii.gz", img[::-1].copy(), GEOM)
        os.utime(files / "images" / "case0.nii.gz", ns=(1, 1))
    elif harm == "sidecar":
        save_reviewed(Reviewed((16, 32, 32), slices={5}), sidecar_path(files / "labels" / "case0.nii.gz"))
    elif harm == "truncate":
        with open(folder / "channel_0.npy", "r+b") as f:
            f.truncate(1000)
    elif harm == "flip":
        raw = bytearray((folder / "label.npy").read_bytes())
        raw[len(raw) // 2] ^= 1
        (folder / "label.npy").write_bytes(bytes(raw))
    elif harm == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        (folder / "channel_0.npy").unlink()
    got = load(files, cache)
    notes = [n for n in got.notes if "cache of" in n]
    assert len(notes) == 1 and message in notes[0] and notes[0].endswith("rebuilding it") and "\n" not in notes[0]
    same_volumes(load(files), got)  # what the files hold now, not what the damaged cache held
    assert not load(files, cache).notes  # rebuilt: used as it is from now on


def test_d_train_with_cache_trains_on_the_same_batches(files, capsys):
    cache = files / "cache"
    load(files, cache)
    written = stamps(cache)
    args = ["train", "--images", str(files / "images"), "--labels", str(files / "labels"), "--iterations", "2",
            "--patch", "16", "16", "16", "--precision", "fp32", "--checkpoint-every", "2"]
    assert main([*args, "--out", str(files / "plain")]) == 0
    assert main([*args, "--out", str(files / "cached"), "--cache", str(cache)]) == 0
    assert "cache of" not in capsys.readouterr().out and stamps(cache) == written
    losses = [[row.split(",")[1:4] for row in (files / run / "log.csv").read_text().splitlines()[1:]]
              for run in ("plain", "cached")]
    assert losses[0] == losses[1] and len(losses[0]) == 2


# ---------------------------------------------------------------- (e) validation, block by block
def test_e_validation_messages_are_unchanged(monkeypatch):
    monkeypatch.setattr(data_module, "SLAB_VOXELS", 100)  # many blocks
    image = make_case(0)[0]
    image[0, 0, 0] = image[9, 3, 2] = np.nan
    image[15, 1, 1] = np.inf
    with pytest.raises(DataError, match=r"image 'x' holds 3 NaN or infinite values: replace them before training"):
        Volume.create(image, name="x")
    with pytest.raises(DataError, match=r"image 'c' is constant \(every voxel 7\): there is nothing to learn"):
        Volume.create(np.full((16, 24, 24), 7, np.int16), name="c")
    with pytest.raises(DataError, match="NaN or infinite"):
        Volume.create(np.full((4, 4), np.nan))
    img, lab = make_case(1)
    fractional = lab.astype(np.float32)
    fractional[12, 20, 20] = 0.5
    with pytest.raises(DataError, match="labels of image are not whole numbers"):
        Volume.create(img, fractional)
    assert Volume.create(img, lab.astype(np.float32)).label.dtype == np.uint8
    with pytest.raises(DataError, match="labels of image hold negative values"):
        Volume.create(img, lab.astype(np.int16) - 1)
