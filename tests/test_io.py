"""Image I/O: geometry round trips, DICOM series, 2D images, clear errors, atomic writes."""
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_dmd import io
from napari_dmd.errors import DataError
from napari_dmd.io import Geometry, case_name, is_supported, list_images, read_image, write_image
from napari_dmd.sample_data import CLASS_NAMES, sample_cases

from synthetic import SHARED_DATA

C, S = math.cos(math.radians(30)), math.sin(math.radians(30))
GEOM = Geometry(spacing=(0.7, 0.9, 2.5), origin=(12.5, -30.25, 7.0), direction=(C, -S, 0, S, C, 0, 0, 0, 1))


def volume(dtype=np.int16, shape=(5, 6, 7)) -> np.ndarray:
    return np.random.default_rng(0).integers(-100, 1000, shape).astype(dtype)


def assert_geometry(g: Geometry, expected: Geometry) -> None:
    np.testing.assert_allclose(g.spacing, expected.spacing, rtol=1e-5)
    np.testing.assert_allclose(g.origin, expected.origin, atol=1e-4)
    np.testing.assert_allclose(g.direction, expected.direction, atol=1e-5)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.nrrd", "a.mha", "a.mhd"])
def test_round_trip_keeps_geometry_and_dtype(tmp_path, name):
    array = volume()
    write_image(tmp_path / "sub" / name, array, GEOM)
    back, g = read_image(tmp_path / "sub" / name)
    assert back.dtype == np.int16 and back.shape == (5, 6, 7)
    np.testing.assert_array_equal(back, array)
    assert_geometry(g, GEOM)
    assert g.scale == pytest.approx((2.5, 0.9, 0.7)) and g.translate == pytest.approx((7.0, -30.25, 12.5))
    expected = ["a.mhd", "a.raw"] if name == "a.mhd" else [name]
    assert files_under(tmp_path / "sub") == expected  # no temporary file left behind


def test_overwrite_and_failed_write_leave_no_temporary_files(tmp_path, monkeypatch):
    target = tmp_path / "a.nii.gz"
    write_image(target, volume(np.uint8))
    write_image(target, volume(np.float32))
    assert read_image(target)[0].dtype == np.float32

    def broken(*args, **kwargs):
        raise RuntimeError("Exception thrown in WriteImage:\nITK ERROR: disk full")

    monkeypatch.setattr(io.sitk, "WriteImage", broken)
    with pytest.raises(DataError, match="cannot write .*disk full"):
        write_image(tmp_path / "b.nrrd", volume())
    assert files_under(tmp_path) == ["a.nii.gz"]
    assert read_image(target)[0].dtype == np.float32


def test_bool_and_float16_are_stored_as_uint8_and_float32(tmp_path):
    write_image(tmp_path / "m.nii.gz", volume() > 0)
    write_image(tmp_path / "h.nrrd", volume(np.float16))
    assert read_image(tmp_path / "m.nii.gz")[0].dtype == np.uint8
    assert read_image(tmp_path / "h.nrrd")[0].dtype == np.float32


def test_2d_image(tmp_path):
    g2 = Geometry(spacing=(0.5, 1.5), origin=(3.0, -4.0), direction=(0, 1, 1, 0))
    image = volume(np.float32, (6, 7))
    for name in ("s.nii.gz", "s.mha"):
        write_image(tmp_path / name, image, g2)
        back, g = read_image(tmp_path / name)
        assert back.shape == (6, 7)
        np.testing.assert_array_equal(back, image)
        assert_geometry(g, g2)


def write_dicom_series(folder: Path, array: np.ndarray, spacing, origin, uid: str) -> None:
    """A DICOM series, one file per slice, as in SimpleITK's "Dicom Series From Array" example."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    d = image.GetDirection()
    common = {"0008|0021": "20240101", "0008|0031": "120000", "0008|0008": "DERIVED\\SECONDARY",
              "0008|0060": "MR", "0020|000d": uid + ".1", "0020|000e": uid + ".2", "0008|103e": "test series",
              "0020|0037": "\\".join(map(str, (d[0], d[3], d[6], d[1], d[4], d[7])))}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in common.items():
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0018|0050", str(spacing[2]))
        writer.SetFileName(str(folder / f"{uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(s)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_dicom_series_folder(tmp_path, dtype):
    array = volume(dtype, (6, 8, 9)) if dtype == np.int16 else volume(np.int16, (6, 8, 9)).clip(0).astype(dtype)
    folder = tmp_path / "series"
    write_dicom_series(folder, array, (0.8, 0.6, 2.0), (10.0, -20.0, 5.5), "1.2.826.0.1.3680043.2.1125.1.101")
    assert is_supported(folder) and case_name(folder) == "series"
    back, g = read_image(folder)
    assert back.shape == (6, 8, 9)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(g.spacing, (0.8, 0.6, 2.0), atol=1e-3)
    np.testing.assert_allclose(g.origin, (10.0, -20.0, 5.5), atol=1e-3)


def test_single_dicom_file_is_2d(tmp_path):
    write_dicom_series(tmp_path / "d", volume(np.int16, (1, 8, 9)), (0.8, 0.6, 2.0), (1.0, 2.0, 3.0),
                       "1.2.826.0.1.3680043.2.1125.1.303")
    (file,) = (tmp_path / "d").iterdir()
    back, g = read_image(file)
    assert back.shape == (8, 9) and g.spacing == pytest.approx((0.8, 0.6))


def test_list_images_and_case_names(tmp_path):
    for name in ("b.nrrd", "a.nii.gz", "c.mhd", ".hidden.nii.gz"):
        write_image(tmp_path / name, volume())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    write_dicom_series(tmp_path / "dicom", volume(np.int16, (2, 4, 4)), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                       "1.2.826.0.1.3680043.2.1125.1.404")
    found = list_images(tmp_path)
    assert [p.name for p in found] == ["a.nii.gz", "b.nrrd", "c.mhd", "dicom"]
    assert [case_name(p) for p in found] == ["a", "b", "c", "dicom"]
    assert case_name("x.y.NII.GZ") == "x.y"
    assert not is_supported(tmp_path / "empty") and not is_supported(tmp_path / "notes.txt")
    assert is_supported("new.nhdr") and is_supported("scan.dcm")


def test_geometry_conversions():
    assert Geometry.from_dict(GEOM.to_dict()) == GEOM
    d = GEOM.to_dict()
    assert all(type(v) is float for vals in d.values() for v in vals)
    g = Geometry.from_scale((3, 2, 1))
    assert g.spacing == (1.0, 2.0, 3.0) and g.origin == (0.0, 0.0, 0.0) and g.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert g.scale == (3.0, 2.0, 1.0) and g.translate == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="geometry"):
        Geometry.from_dict({"spacing": [1.0]})
    with pytest.raises(DataError, match="spacing must be positive"):
        Geometry.from_scale((1.0, 0.0))


def error_of(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


def test_clear_errors(tmp_path):
    missing = tmp_path / "nope.nii.gz"
    assert "does not exist" in error_of(read_image, missing) and "nope.nii.gz" in error_of(read_image, missing)
    fake = tmp_path / "fake.nii.gz"
    fake.write_text("this is text, not NIfTI")
    assert "cannot read" in error_of(read_image, fake) and "fake.nii.gz" in error_of(read_image, fake)
    rgb = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True), str(rgb))
    assert "3 values per voxel" in error_of(read_image, rgb) and "rgb.mha" in error_of(read_image, rgb)
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG")
    assert "unsupported" in error_of(read_image, png) and "photo.png" in error_of(read_image, png)
    assert "folder without a DICOM series" in error_of(read_image, tmp_path)
    assert error_of(write_image, tmp_path / "out.dcm", volume()) == (
        "writing DICOM is not supported; save as .nii.gz, .nrrd or .mha")
    assert "unsupported" in error_of(write_image, tmp_path / "out.png", volume())
    assert "3D, its geometry 2D" in error_of(write_image, tmp_path / "x.nii.gz", volume(), Geometry.from_scale((1, 1)))
    assert not list((tmp_path).glob("out*")) and not (tmp_path / "x.nii.gz").exists()


def test_sample_data():
    cases = sample_cases()
    assert len(cases) == 12 and sum(label is not None for _, label in cases) == 3
    assert all(label is None or label.name == image.name for image, label in cases)
    label, g = read_image(cases[0][1])
    assert set(np.unique(label)) <= set(range(len(CLASS_NAMES))) and g.ndim == 3


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "la_half").is_dir(), reason="../shared/data is absent")
def test_real_la_image():
    first = (SHARED_DATA / "la_half" / "train.list").read_text().split()[0]
    image, g = read_image(SHARED_DATA / "la_half" / "imagesTr" / f"{first}.nii.gz")
    assert image.ndim == 3 and image.dtype == np.uint8 and image.shape[0] == 44
    assert g.spacing == pytest.approx((1.25, 1.25, 1.25))


@pytest.mark.parametrize("damage", ["cut", "text", "missing"])
def test_a_dicom_series_with_a_damaged_or_missing_slice_is_refused(tmp_path, damage):
    folder = tmp_path / "series"
    write_dicom_series(folder, volume(np.int16, (6, 8, 9)), (0.8, 0.6, 1.5), (0.0, 0.0, 0.0),
                       "1.2.826.0.1.3680043.2.1125.1.303")
    slice_ = sorted(folder.iterdir())[3]
    if damage == "cut":
        slice_.write_bytes(slice_.read_bytes()[: slice_.stat().st_size // 2])
    elif damage == "text":
        slice_.write_text("not a slice")
    else:
        slice_.unlink()
    err = error_of(read_image, folder)
    assert (str(slice_) in err and "not a readable DICOM slice" in err) if damage != "missing" else \
        ("not evenly spaced" in err and "3 mm apart" in err and str(folder) in err)
