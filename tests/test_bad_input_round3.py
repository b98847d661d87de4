"""Nothing silently wrong, third round (issue 42): geometry the file does not state, several DICOM series, a
cache source edited with its size and time kept, an export that cannot abort, and the unclear messages. Each
test failed before the change it names."""
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import GEOM, run

from napari_dmd.checkpoint import ModelPair, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.errors import DataError
from napari_dmd.folders import load_training_data
from napari_dmd.io import list_images, read_channels, read_image, write_image
from napari_dmd.outputs import MANIFEST, Outputs
from napari_dmd.runtime import resolve_device
from napari_dmd.volume_cache import VolumeCache

from synthetic import make_case

BAD_SPACINGS = [0.0, float("nan"), -1.0, 1e30, 1e-30]


def with_pixdim(path, x_spacing):
    """Rewrite the NIfTI file ``path`` (.nii or .nii.gz) with pixdim[1] (the x spacing) set to ``x_spacing``."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = bytearray(f.read())
    assert struct.unpack("<i", raw[:4])[0] == 348
    raw[80:84] = struct.pack("<f", x_spacing)
    with opener(path, "wb") as f:
        f.write(bytes(raw))


# ---------------------------------------------------------------- 3: geometry as the file states it
@pytest.mark.parametrize("value", BAD_SPACINGS)
def test_3_a_spacing_that_is_no_voxel_size_is_refused_naming_the_file_and_value(tmp_path, value):
    path = tmp_path / "scan.nii.gz"
    write_image(path, np.zeros((4, 5, 6), np.int16), GEOM)
    with_pixdim(path, value)
    for read in (read_image, read_channels):
        with pytest.raises(DataError) as exc:
            read(path)
        message = str(exc.value)
        assert str(path) in message and f"{value:g} mm along x" in message and "--spacing" in message
        assert "\n" not in message


@pytest.mark.parametrize("name,field", [("scan.nrrd", b"space directions: "), ("scan.mha", b"ElementSpacing = ")])
def test_3_a_nrrd_or_metaimage_stating_no_spacing_is_refused(tmp_path, name, field):
    path = tmp_path / name
    write_image(path, np.zeros((4, 5, 6), np.int16), GEOM)
    raw = path.read_bytes()
    head_end = raw.index(b"ElementDataFile") if name.endswith(".mha") else raw.index(b"\n\n")
    head = b"\n".join(line for line in raw[:head_end].split(b"\n") if not line.startswith(field))
    path.write_bytes(head + raw[head_end:])
    with pytest.raises(DataError, match=f"{name} states no voxel spacing"):
        read_image(path)
    assert read_image(path, spacing=(2.0, 0.8, 0.7))[1].spacing == pytest.approx((0.7, 0.8, 2.0))


def test_3_a_spacing_given_replaces_the_stated_one(tmp_path):
    path = tmp_path / "scan.nii"
    write_image(path, np.zeros((4, 5, 6), np.int16), GEOM)
    with_pixdim(path, 0.0)
    _, geometry = read_image(path, spacing=(2.0, 0.8, 0.7))  # z y x, as --spacing is given
    assert geometry.spacing == pytest.approx((0.7, 0.8, 2.0)) and geometry.origin == pytest.approx(GEOM.origin)
    _, geometry = read_channels(path, spacing=(2.0, 0.8, 0.7))
    assert geometry.scale == pytest.approx((2.0, 0.8, 0.7))
    for given in ((2.0, 0.8), (2.0, 0.0, 0.7)):
        with pytest.raises(DataError, match="--spacing"):
            read_image(path, spacing=given)


def test_3_training_and_predict_refuse_an_unstated_spacing(data, model, capsys):
    with_pixdim(data / "images" / "case2.nii.gz", 0.0)  # an unlabeled image
    with pytest.raises(DataError, match="case2.nii.gz states a voxel spacing of 0 mm"):
        load_training_data(data / "images", data / "labels", [])
    out = data / "predictions"
    _, err = run(["predict", "--model", model, "--images", data / "images", "--out", out], capsys, 2)
    assert "case2.nii.gz states a voxel spacing of 0 mm" in err
    assert "case2" not in (out / "volumes.csv").read_text(encoding="utf-8")  # no volume in mm³ the file never stated


# ---------------------------------------------------------------- 4: several DICOM series in a folder
def test_4_a_folder_of_two_dicom_series_is_refused_naming_both(tmp_path):
    from test_io import volume, write_dicom_series

    folder = tmp_path / "study"
    write_dicom_series(folder, volume(np.int16, (5, 8, 9)), (0.8, 0.6, 2.0), (0.0, 0.0, 0.0),
                       "1.2.826.0.1.3680043.2.1125.1.501")
    write_dicom_series(folder, volume(np.int16, (3, 8, 9)), (0.8, 0.6, 2.0), (0.0, 0.0, 0.0),
                       "1.2.826.0.1.3680043.2.1125.1.602")
    with pytest.raises(DataError) as exc:
        read_image(folder)
    message = str(exc.value)
    for uid, count in (("1.2.826.0.1.3680043.2.1125.1.501.2", 5), ("1.2.826.0.1.3680043.2.1125.1.602.2", 3)):
        assert f"{uid} ('test series', {count} slices)" in message
    assert str(folder) in message and "folder of its own" in message


# ---------------------------------------------------------------- 2: the cache checks content
def test_2_a_source_edited_with_its_size_and_time_kept_is_not_trained_on_from_the_cache(tmp_path):
    for k in range(2):
        image, label = make_case(k, classes=2)
        write_image(tmp_path / "images" / f"case{k}.nii", image, GEOM)  # uncompressed: an edit keeps the size
        write_image(tmp_path / "labels" / f"case{k}.nii.gz", label, GEOM)
    cache = tmp_path / "cache"
    load_training_data(tmp_path / "images", tmp_path / "labels", [], cache=cache)
    source = tmp_path / "images" / "case0.nii"
    stat = source.stat()
    image, _ = read_image(source)
    raw = source.read_bytes()
    edited = raw[: len(raw) - image.nbytes] + (-image[::-1]).astype(image.dtype).tobytes()
    source.write_bytes(edited)  # as `cp -p` of an edited copy: same size, same time
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    got = load_training_data(tmp_path / "images", tmp_path / "labels", [], cache=cache)
    notes = [n for n in got.notes if "cache of case0" in n]
    assert len(notes) == 1 and "case0.nii changed (its content" in notes[0] and notes[0].endswith("rebuilding it")
    fresh = load_training_data(tmp_path / "images", tmp_path / "labels", [])
    np.testing.assert_array_equal(got.labeled[0].image.arrays[0], fresh.labeled[0].image.arrays[0])


def test_unclear_cache_at_a_file_or_a_folder_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match=r"^--cache .*file is a file: give a folder"):
        VolumeCache(tmp_path / "file")
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", locked]).returncode:
            pytest.skip("no chattr here to make a folder that root cannot write")
    else:
        locked.chmod(0o555)
    try:
        with pytest.raises(DataError, match=r"^--cache .*locked cannot be written .*leave --cache out"):
            VolumeCache(locked)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", locked])
        locked.chmod(0o755)


# ---------------------------------------------------------------- 5: export on a full disk
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_5_export_under_a_file_size_limit_ends_with_one_line_and_leaves_nothing(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    pair = ModelPair.create(TrainConfig(num_classes=2, patch_size=(16, 16, 16), precision="fp32"), 3,
                            resolve_device("cpu"))
    checkpoint = save_model(pair, tmp_path / "run" / "model.pt")
    out = tmp_path / "exported"
    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
              "from napari_dmd.cli import main; "
              f"sys.exit(main(['export', '--model', {str(checkpoint)!r}, '--format', {fmt!r}, "
              f"'--out', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    name = "network_a.pt" if fmt == "torchscript" else "network_a.onnx"
    assert len(lines) == 1 and name in lines[0] and "file-size limit" in lines[0], done.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir())  # no hidden temporary file, no lock left


# ---------------------------------------------------------------- unclear messages in these modules
@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unclear_a_damaged_output_manifest_is_named(tmp_path, content):
    (tmp_path / MANIFEST).write_text(content)
    (tmp_path / "disagreement.csv").write_text("case,disagreement\n")
    with pytest.raises(DataError) as exc:
        Outputs(tmp_path, "predict").claim([tmp_path / "disagreement.csv"])
    assert str(tmp_path / MANIFEST) in str(exc.value) and "is damaged" in str(exc.value)
    with pytest.raises(DataError, match="is damaged"):  # nothing new is written over it either
        Outputs(tmp_path, "predict").claim([tmp_path / "new.nii.gz"])


def test_unclear_a_link_in_a_loop_is_not_called_missing(tmp_path):
    (tmp_path / "a.nii.gz").symlink_to(tmp_path / "b.nii.gz")
    (tmp_path / "b.nii.gz").symlink_to(tmp_path / "a.nii.gz")
    for call in (lambda: read_image(tmp_path / "a.nii.gz"), lambda: list_images(tmp_path)):
        with pytest.raises(DataError) as exc:
            call()
        assert "is a link in a loop" in str(exc.value) and "does not exist" not in str(exc.value)


# ---------------------------------------------------------------- 1: channel files grouped whatever the model
def test_1_a_one_channel_model_refuses_a_case_of_two_channel_files(tmp_path, model, capsys):
    image, _ = make_case(0)
    write_image(tmp_path / "images" / "case_0000.nii.gz", image, GEOM)
    write_image(tmp_path / "images" / "case_0001.nii.gz", -image, GEOM)  # the inverted second channel
    out = tmp_path / "predictions"
    _, err = run(["predict", "--model", model, "--images", tmp_path / "images", "--out", out], capsys, 2)
    assert "case 'case' has 2 channel file(s) (case_0000.nii.gz, case_0001.nii.gz)" in err
    assert "the model takes 1 channel(s)" in err and not out.exists()


def two_channel_model(tmp_path):
    pair = ModelPair.create(TrainConfig(num_classes=2, patch_size=(16, 16, 16), precision="fp32",
                                        channels=("T1", "T2")), 3, resolve_device("cpu"))
    return save_model(pair, tmp_path / "two" / "model.pt")


def test_unclear_the_image_a_model_cannot_take_is_named(tmp_path, model, capsys):
    image, _ = make_case(0)
    write_image(tmp_path / "plain.nii.gz", image, GEOM)
    _, err = run(["predict", "--model", two_channel_model(tmp_path), "--images", tmp_path / "plain.nii.gz",
                  "--out", tmp_path / "p1"], capsys, 2)
    assert f"{tmp_path / 'plain.nii.gz'} has 1 channel(s), but the model" in err and "T1, T2" in err
    write_image(tmp_path / "flat.nii.gz", image[0], GEOM.from_scale((0.8, 0.8)))
    _, err = run(["predict", "--model", model, "--images", tmp_path / "flat.nii.gz", "--out", tmp_path / "p2"],
                 capsys, 2)
    assert f"{tmp_path / 'flat.nii.gz'} is a 2D image of shape (24, 24), but the model" in err and "is 3D" in err


# ---------------------------------------------------------------- unclear messages of folders and commands
def test_unclear_a_third_channel_in_one_case_is_blamed_on_that_case(tmp_path):
    from napari_dmd.folders import image_cases

    names = ["a_0000", "a_0001", "a_0002", "b_0000", "b_0001", "c_0000", "c_0001"]
    with pytest.raises(DataError, match=r"case 'a' has channel files 0000, 0001, 0002; every case needs 2 channels"):
        image_cases([tmp_path / f"{n}.nii.gz" for n in names], True)


def test_unclear_a_whole_case_file_among_channel_files_is_named(tmp_path):
    image, label = make_case(0)
    for name in ("case_0000", "case_0001", "other"):
        write_image(tmp_path / "images" / f"{name}.nii.gz", image, GEOM)
    for name in ("case", "other"):
        write_image(tmp_path / "labels" / f"{name}.nii.gz", label, GEOM)
    with pytest.raises(DataError, match=r"channel files case_0000.nii.gz, case_0001.nii.gz in .*, but other.nii.gz "
                                        r"there is named as a whole case"):
        load_training_data(tmp_path / "images", tmp_path / "labels", [])


def test_unclear_an_empty_labels_folder_is_named_as_labels(data):
    for p in (data / "labels").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=r"^--labels .*labels holds no label map"):
        load_training_data(data / "images", data / "labels", [])


def test_unclear_class_names_too_few_for_the_labels_are_named(data, capsys):
    from cli_helpers import FAST

    _, err = run(["train", "--images", data / "images", "--labels", data / "labels", "--out", data / "run",
                  "--class-names", "background", "structure", *FAST], capsys, 2)
    assert "holds label value 2, but --class-names background structure (background first) gives 2 classes" in err


def test_unclear_a_missing_checkpoint_is_named_with_its_folder(tmp_path):
    from napari_dmd.checkpoint import load_checkpoint
    from napari_dmd.errors import CheckpointError

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    for path, expected in ((tmp_path / "run", "is a folder, not a checkpoint file"),
                           (tmp_path / "run" / "model.pt", f"model.pt in the folder {tmp_path / 'run'} (it holds "
                                                            f"last.pt)"),
                           (tmp_path / "gone" / "model.pt", f"its folder {tmp_path / 'gone'} does not exist")):
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(path)
        assert expected in str(exc.value)


def test_unclear_predict_names_a_link_loop_and_a_case_given_twice(data, model, capsys):
    (data / "loop.nii.gz").symlink_to(data / "loop.nii.gz")
    _, err = run(["predict", "--model", model, "--images", data / "loop.nii.gz", "--out", data / "p1"], capsys, 2)
    assert "is a link in a loop" in err
    shutil.copytree(data / "images", data / "again")
    _, err = run(["predict", "--model", model, "--images", data / "images", data / "again", "--out", data / "p2"],
                 capsys, 2)
    assert f"{data / 'images' / 'case0.nii.gz'} and {data / 'again' / 'case0.nii.gz'} have the same name" in err


def test_3_predict_with_spacing_given_measures_with_it(data, model, capsys):
    with_pixdim(data / "images" / "case2.nii.gz", 0.0)
    out = data / "predictions"
    run(["predict", "--model", model, "--images", data / "images" / "case2.nii.gz", "--out", out,
         "--spacing", "2", "0.5", "0.5"], capsys)
    _, geometry = read_image(out / "case2.nii.gz")
    assert geometry.scale == pytest.approx((2.0, 0.5, 0.5))
    _, err = run(["predict", "--model", model, "--images", data / "images" / "case2.nii.gz", "--out", out,
                  "--spacing", "2", "0.5"], capsys, 2)
    assert "--spacing 2 0.5 gives 2 values" in err
    (data / "truth2").mkdir()
    shutil.copy(data / "truth" / "case2.nii.gz", data / "truth2")
    with_pixdim(data / "truth2" / "case2.nii.gz", 0.0)
    evaluate = ["evaluate", "--predictions", out, "--labels", data / "truth2"]
    _, err = run(evaluate, capsys, 2)
    assert "case2.nii.gz states a voxel spacing of 0 mm" in err
    run([*evaluate, "--spacing", "2", "0.5", "0.5"], capsys)


def test_unclear_resume_on_other_data_says_how_they_differ(data, capsys):
    from cli_helpers import FAST

    train = ["train", "--images", data / "images", "--labels", data / "labels", "--out", data / "run", *FAST]
    run(train, capsys)
    assert json.loads((data / "run" / "data.json").read_text()) == {"labeled": ["case0", "case1"],
                                                                     "unlabeled": ["case2.nii.gz"]}
    (data / "images" / "case2.nii.gz").rename(data / "case2.nii.gz")
    write_image(data / "images" / "case7.nii.gz", make_case(7, classes=3)[0], GEOM)
    out, _ = run([*train, "--init", data / "run" / "model.pt", "--resume", "--iterations", "2"], capsys)
    assert "on other data than it was trained on (unlabeled case7.nii.gz added; unlabeled case2.nii.gz missing)" in out
