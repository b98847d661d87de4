"""What napari-dmd guarantees under bad input and faults (issue 14): one test per row, tiny data.

Rows 1, 5, 9, 16 and 17 (checkpoints and the training loop) are tested with the engine.
"""
import csv
import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import FAST, GEOM, run

from napari_dmd import io
from napari_dmd.data import Volume
from napari_dmd.errors import DataError
from napari_dmd.folders import load_training_data
from napari_dmd.io import Geometry, read_image, write_image
from napari_dmd.ranking import SCORE_HELP
from napari_dmd.review import Reviewed, save_reviewed, sidecar_path

from synthetic import make_case


def train(data, out, *extra):
    return ["train", "--images", data / "images", "--labels", data / "labels", "--out", out, *FAST, *extra]


# ---------------------------------------------------------------- work lost
def test_row2_train_never_replaces_another_runs_model(data, capsys):
    run_dir = data / "run"
    run_dir.mkdir()
    (run_dir / "model.pt").write_bytes(b"an earlier run")
    _, err = run(train(data, run_dir), capsys, 2)
    assert "already holds a run" in err and "--resume" in err
    _, err = run(train(data, run_dir, "--init", run_dir / "model.pt"), capsys, 2)  # a warm start into it too
    assert "already holds a run" in err
    assert (run_dir / "model.pt").read_bytes() == b"an earlier run"


def test_row3_predict_never_overwrites_a_file_it_did_not_write(data, model, capsys):
    before = (data / "labels" / "case0.nii.gz").read_bytes()
    _, err = run(["predict", "--model", model, "--images", data / "images", "--out", data / "labels"], capsys, 2)
    assert "not written by napari-dmd predict" in err and "case0.nii.gz" in err
    assert (data / "labels" / "case0.nii.gz").read_bytes() == before
    assert sorted(p.name for p in (data / "labels").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]
    # predicting again into predict's own folder replaces its earlier predictions and keeps the list of them
    for images in (data / "images" / "case0.nii.gz", data / "images" / "case0.nii.gz", data / "images"):
        run(["predict", "--model", model, "--images", images, "--out", data / "p"], capsys)
    listed = {r["case"] for r in csv.DictReader((data / "p" / "disagreement.csv").open())}
    assert listed == {"case0.nii.gz", "case1.nii.gz", "case2.nii.gz"}
    assert {p.name for p in (data / "p").glob("*.nii.gz")} == listed


def training_process(data, out):
    cmd = [sys.executable, "-m", "napari_dmd.cli", "train", "--images", str(data / "images"), "--labels",
           str(data / "labels"), "--out", str(out), "--iterations", "100000", "--checkpoint-every", "100000",
           *FAST[2:]]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")


def test_row4_sigterm_stops_training_with_a_checkpoint(data):
    out = data / "run"
    proc = training_process(data, out)
    deadline = time.monotonic() + 120
    while not (out / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM: interrupted at iteration" in err and "Traceback" not in err
    assert (out / "model.pt").exists() and "--resume" in err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_row4_a_signal_during_start_up_is_one_line(data, capsys, monkeypatch, signum, code):
    def slow_loading(*args):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("the signal did not stop start-up")

    monkeypatch.setattr("napari_dmd.cli.train.load_training_data", slow_loading)
    _, err = run(train(data, data / "run"), capsys, code)
    assert signal.Signals(signum).name in err and not (data / "run").exists()


# ---------------------------------------------------------------- silently wrong results
@pytest.mark.parametrize("name, dtype", [("t.nii.gz", np.float32), ("t.nii", np.float32), ("t.nii", np.int16)])
def test_row6_truncated_nifti_is_refused(tmp_path, name, dtype):
    path = tmp_path / name
    write_image(path, make_case(0, dtype=dtype, scale=100.0)[0])
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(DataError, match=f"{name} is truncated or corrupt"):
        read_image(path)
    if name.endswith(".gz"):  # a complete gzip stream of a cut NIfTI, and a damaged stream
        raw = gzip.decompress(whole)
        path.write_bytes(gzip.compress(raw[: len(raw) - 100]))
        with pytest.raises(DataError, match="truncated or corrupt: its header announces"):
            read_image(path)
        damaged = bytearray(whole)
        damaged[len(whole) // 2: len(whole) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(damaged))
        with pytest.raises(DataError, match="truncated or corrupt"):
            read_image(path)


def test_row6_evaluate_refuses_a_truncated_prediction(data, capsys):
    pred = data / "truth" / "case1.nii.gz"
    whole = pred.read_bytes()
    pred.write_bytes(whole[: len(whole) // 2])
    _, err = run(["evaluate", "--predictions", data / "truth", "--labels", data / "labels"], capsys, 2)
    assert "case1.nii.gz is truncated" in err


def train_config(out):
    return json.loads((out / "config.json").read_text())


def test_row7_and_14_resume_continues_the_run_with_its_own_settings(data, capsys):
    out = data / "run"
    run(train(data, out, "--patch", "16", "32", "16", "--lr", "0.02"), capsys)
    ckpt = out / "model.pt"
    base = ["train", "--images", data / "images", "--labels", data / "labels", "--out", out, "--init", ckpt, "--resume"]
    # only --iterations: patch, batch, precision and lr come from the checkpoint, not from the defaults
    run(base + ["--iterations", "2"], capsys)
    saved = train_config(out)
    assert saved["patch_size"] == [16, 32, 16] and saved["labeled_batch"] == 1 and saved["precision"] == "fp32"
    assert saved["lr"] == 0.02 and saved["iterations"] == 2
    _, err = run(base + ["--iterations", "3", "--patch", "32", "32", "32", "--lambda", "1"], capsys, 2)
    assert "--patch (32, 32, 32) (the run has (16, 32, 16))" in err and "--lambda 1.0" in err
    # a finished run says so (row 14)
    out_text, _ = run(base, capsys)
    assert "finished" in out_text and "at iteration 2 (of 2)" in out_text and "None" not in out_text


def test_row8_evaluate_needs_every_prediction_one_class_count_and_the_grid(data, capsys):
    # case1 has classes 1 and 2, case0 is reduced to class 1: class 2 must be scored for both
    label, _ = read_image(data / "truth" / "case0.nii.gz")
    write_image(data / "truth" / "case0.nii.gz", np.where(label == 2, 0, label).astype(np.uint8), GEOM)
    table = data / "m.csv"
    run(["evaluate", "--predictions", data / "truth", "--labels", data / "truth", "--out", table], capsys)
    rows = list(csv.DictReader(table.open()))
    assert [(r["case"], r["class"]) for r in rows if r["case"] == "case0"] == [("case0", "1"), ("case0", "2")]
    assert [r["dice"] for r in rows if (r["case"], r["class"]) == ("case0", "2")] == [""]  # absent from both
    assert all(float(r["dice"]) == 1.0 for r in rows if r["dice"])
    # a label without its prediction
    (data / "preds").mkdir()
    for k in (0, 1):
        (data / "preds" / f"case{k}.nii.gz").write_bytes((data / "truth" / f"case{k}.nii.gz").read_bytes())
    _, err = run(["evaluate", "--predictions", data / "preds", "--labels", data / "truth"], capsys, 2)
    assert "1 of 3 label files have no prediction" in err and "case2" in err
    # a prediction on another grid
    coarse = Geometry(spacing=(1.6, 0.8, 2.0), origin=GEOM.origin, direction=GEOM.direction)
    write_image(data / "preds" / "case2.nii.gz", read_image(data / "truth" / "case2.nii.gz")[0], coarse)
    _, err = run(["evaluate", "--predictions", data / "preds", "--labels", data / "truth"], capsys, 2)
    assert "does not lie on its image" in err and "spacing (1.6, 0.8, 2) vs (0.8, 0.8, 2)" in err


def test_row10_what_is_not_a_label_map_is_refused(data, capsys):
    label, _ = read_image(data / "labels" / "case0.nii.gz")
    write_image(data / "mask" / "case0.nii.gz", (label > 0).astype(np.uint8) * 255, GEOM)
    _, err = run(train(data, data / "r", "--labels", data / "mask"), capsys, 2)
    assert "values 0 and 255 found in" in err and "case0.nii.gz" in err
    _, err = run(train(data, data / "r", "--labels", data / "images"), capsys, 2)  # the images as labels
    assert "not whole numbers" in err
    image = np.random.default_rng(0).integers(0, 184, label.shape).astype(np.int16)
    write_image(data / "many" / "case0.nii.gz", image, GEOM)
    _, err = run(train(data, data / "r", "--labels", data / "many"), capsys, 2)
    assert "184 distinct values" in err and "case0.nii.gz" in err


@pytest.mark.parametrize("name", ["case0.nii.gz", "case0.nrrd"])
def test_row11_non_finite_images_are_refused_with_the_file_name(data, capsys, name):
    image, _ = read_image(data / "images" / "case0.nii.gz")
    image[3, 4, 5], image[0, 0, 0] = np.nan, np.inf
    (data / "images" / "case0.nii.gz").unlink()
    write_image(data / "images" / name, image, GEOM)
    with pytest.raises(DataError, match=f"{name} holds 2 NaN or infinite"):
        read_image(data / "images" / name)
    _, err = run(train(data, data / "r"), capsys, 2)
    assert f"{name} holds 2 NaN" in err


def test_row11_constant_images_do_not_train(data, capsys):
    write_image(data / "images" / "case2.nii.gz", np.full((16, 24, 24), 7, np.int16), GEOM)
    _, err = run(train(data, data / "r"), capsys, 2)
    assert "case2.nii.gz' is constant" in err
    with pytest.raises(DataError, match="NaN or infinite"):
        Volume.create(np.full((4, 4), np.nan))


def test_row12_one_case_stored_twice_is_refused(data, capsys):
    write_image(data / "images" / "case1.nrrd", make_case(1)[0], GEOM)
    _, err = run(train(data, data / "r"), capsys, 2)
    assert "case1.nii.gz and case1.nrrd" in err and "same case" in err


# ---------------------------------------------------------------- unclear or raw
def test_row13_out_is_a_file_batch_size_zero_and_a_full_disk(data, model, capsys, monkeypatch, tmp_path):
    (data / "afile").write_text("x")
    _, err = run(train(data, data / "afile"), capsys, 2)
    assert "is a file" in err
    _, err = run(["predict", "--model", model, "--images", data / "images", "--out", data / "afile"], capsys, 2)
    assert "is a file" in err
    _, err = run(["predict", "--model", model, "--images", data / "images", "--out", data / "p", "--batch-size",
                  "0"], capsys, 2)
    assert "--batch-size must be at least 1" in err

    def no_space(*args, **kwargs):
        raise RuntimeError("Exception thrown in WriteImage: enforce fail at inline_container.cc:672")

    monkeypatch.setattr(io.sitk, "WriteImage", no_space)
    target = tmp_path / "w" / "x.nii.gz"
    with pytest.raises(DataError, match="x.nii.gz: .*inline_container") as plenty:
        write_image(target, np.zeros((3, 3), np.uint8))  # a disk with room: the writer's own reason
    assert "full" not in str(plenty.value)
    monkeypatch.setattr(io.shutil, "disk_usage", lambda path: SimpleNamespace(free=0))
    with pytest.raises(DataError, match="x.nii.gz: the disk is full"):
        write_image(target, np.zeros((3, 3), np.uint8))
    assert list(target.parent.iterdir()) == []  # no temporary left behind
    assert "t.txt: the disk is full" in io.write_failure(tmp_path / "t.txt", OSError(errno.ENOSPC, "No space"))


def test_row15_messages_name_the_culprit(data, capsys):
    # a 2D image among 3D ones
    write_image(data / "images" / "flat.nii.gz", make_case(4, shape=(24, 24))[0], Geometry.from_scale((1.0, 1.0)))
    _, err = run(train(data, data / "r"), capsys, 2)
    assert "flat.nii.gz is 2D but" in err and "is 3D" in err
    (data / "images" / "flat.nii.gz").unlink()
    # a label of another shape: which file is the label
    write_image(data / "labels" / "case1.nii.gz", np.zeros((16, 24, 20), np.uint8), GEOM)
    _, err = run(train(data, data / "r"), capsys, 2)
    assert f"label {data / 'labels' / 'case1.nii.gz'} has shape (16, 24, 20)" in err
    # origin differs: which of spacing/origin/direction, both values
    moved = Geometry(spacing=GEOM.spacing, origin=(0.0, 0.0, 0.0), direction=GEOM.direction)
    write_image(data / "labels" / "case1.nii.gz", make_case(1, classes=3)[1], moved)
    _, err = run(train(data, data / "r"), capsys, 2)
    assert "origin (0, 0, 0) vs (10, -5, 3)" in err
    write_image(data / "labels" / "case1.nii.gz", make_case(1, classes=3)[1], GEOM)
    for flag, words in ((["--lr", "nan"], "lr must be a finite number"),
                        (["--temperature", "inf"], "temperature must be a finite number"),
                        (["--patch", "1", "1", "1"], "at least 16 voxels")):
        _, err = run(train(data, data / "r", *flag), capsys, 2)
        assert words in err


# ---------------------------------------------------------------- reviewed labels (issue 11 point 1)
def test_reviewed_sidecar_limits_supervision_to_the_reviewed_slices(data, capsys):
    label_path = data / "labels" / "case0.nii.gz"
    rec = Reviewed((16, 24, 24), slices={0, 1, 8})  # slice 0 and 1 hold no structure: still supervision
    save_reviewed(rec, sidecar_path(label_path))
    loaded = load_training_data(data / "images", data / "labels", [])
    by_name = {v.name: v for v in loaded.labeled}
    np.testing.assert_array_equal(by_name["case0"].mask, rec.mask())
    assert by_name["case1"].mask is None  # no sidecar: reviewed whole
    assert by_name["case0"].label.dtype == np.uint8
    save_reviewed(Reviewed((16, 24, 24)), sidecar_path(label_path))  # nothing reviewed: an unlabeled image
    loaded = load_training_data(data / "images", data / "labels", [])
    assert [v.name for v in loaded.labeled] == ["case1"] and len(loaded.unlabeled) == 2
    assert "nothing of case0.nii.gz is reviewed" in loaded.notes[0]
    save_reviewed(Reviewed((16, 24, 24), slices={8}), sidecar_path(label_path))
    out, _ = run(train(data, data / "run"), capsys)
    assert "2 labeled" in out and (data / "run" / "model.pt").exists()
    kept = json.loads((data / "run" / "reviewed.json").read_text())
    assert kept == {"ignore_label": None, "partly_reviewed": {"case0": {"shape": [16, 24, 24], "axis": 0,
                                                                        "slices": [8], "whole": False}}}
    sidecar_path(label_path).write_text("{broken")
    _, err = run(train(data, data / "run2"), capsys, 2)
    assert "case0.reviewed.json" in err


def test_ignore_label_marks_voxels_that_do_not_supervise(data, capsys):
    label, _ = read_image(data / "labels" / "case0.nii.gz")
    label[:4] = 255
    write_image(data / "labels" / "case0.nii.gz", label, GEOM)
    loaded = load_training_data(data / "images", data / "labels", [], ignore_label=255)
    v = next(v for v in loaded.labeled if v.name == "case0")
    assert not v.mask[:4].any() and v.mask[4:].all() and not (v.label == 255).any()
    assert int(max(vals.max() for vals in loaded.values.values())) == 2  # 255 is not a class
    out, _ = run(train(data, data / "run", "--ignore-label", "255"), capsys)
    assert "3 classes (label values found: 0, 1, 2)" in out
    _, err = run(train(data, data / "r", "--classes", "3", "--ignore-label", "1"), capsys, 2)
    assert "--ignore-label 1 is class 1" in err


def test_python_api_takes_partial_reviews_and_all_background_labels():
    image, label = make_case(0)
    rec = Reviewed(label.shape, slices={0})
    v = Volume.create(image, np.zeros_like(label), mask=rec.mask())  # a reviewed slice with nothing in it
    assert v.mask[0].all() and not v.mask[1:].any() and v.label.dtype == np.uint8
    assert Volume.create(image, label.astype(np.int64)).label.dtype == np.uint8
    assert Volume.create(image, label.astype(np.int64) * 300).label.dtype == np.int16
    with pytest.raises(DataError, match="nothing of image 'x' is reviewed"):
        Volume.create(image, label, mask=np.zeros(label.shape, bool), name="x")


def test_label_next_leaves_out_what_the_labels_cover(data, model, capsys):
    save_reviewed(Reviewed((16, 24, 24), slices=set(range(8))), sidecar_path(data / "labels" / "case1.nii.gz"))
    out, _ = run(["predict", "--model", model, "--images", data / "images", "--out", data / "p",
                  "--labels", data / "labels"], capsys)
    picks = list(csv.DictReader((data / "p" / "label_next.csv").open()))
    assert picks and {r["case"] for r in picks} == {"case1.nii.gz", "case2.nii.gz"}  # case0 is labeled whole
    assert all(int(r["slice"]) >= 8 for r in picks if r["case"] == "case1.nii.gz")
    assert "label next:" in out and SCORE_HELP in out
