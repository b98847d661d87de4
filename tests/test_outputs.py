"""Nothing lost, second round (issue 22): every output path guarded, every write verified, every failure
one line naming the file. One test per point of the issue, tiny data."""
import csv
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from cli_helpers import FAST, GEOM, run

from napari_dmd import checkpoint, io
from napari_dmd.checkpoint import ModelPair, load_checkpoint, load_model, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.errors import CheckpointError, DataError
from napari_dmd.io import read_image, write_image
from napari_dmd.outputs import locked
from napari_dmd.review import sidecar_path
from napari_dmd.runtime import resolve_device


def md5s(folder):
    return {p.relative_to(folder): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def train(data, out, *extra):
    return ["train", "--images", data / "images", "--labels", data / "labels", "--out", out, *FAST, *extra]


def predict(model, images, out, *extra):
    return ["predict", "--model", model, "--images", images, "--out", out, *extra]


# ---------------------------------------------------------------- 1-5: work lost or overwritten
def test_1_evaluate_out_never_replaces_a_file_it_did_not_write(data, capsys):
    before = md5s(data)
    evaluate = ["evaluate", "--predictions", data / "truth", "--labels", data / "truth", "--out"]
    _, err = run(evaluate + [data / "labels" / "case0.nii.gz"], capsys, 2)
    assert str(data / "labels" / "case0.nii.gz") in err and "not written by napari-dmd evaluate" in err
    (data / "mine.csv").write_text("my own table\n")
    _, err = run(evaluate + [data / "mine.csv"], capsys, 2)
    assert "mine.csv" in err
    assert md5s(data) == {**before, (data / "mine.csv").relative_to(data): hashlib.md5(b"my own table\n").hexdigest()}
    run(evaluate + [data / "table.csv"], capsys)
    run(evaluate + [data / "table.csv"], capsys)  # its own table: replaced


def test_2_predict_keeps_the_users_csv_and_raw_files(data, model, capsys):
    for name in ("label_next.csv", "disagreement.csv"):
        out = data / f"p_{name}"
        out.mkdir()
        (out / name).write_text("mine\n")
        _, err = run(predict(model, data / "images", out), capsys, 2)
        assert str(out / name) in err and (out / name).read_text() == "mine\n"
        assert sorted(p.name for p in out.iterdir()) == [name]  # nothing else written either
    image, _ = read_image(data / "images" / "case0.nii.gz")
    write_image(data / "mhd" / "case_d.mhd", image, GEOM)
    out = data / "p_raw"
    out.mkdir()
    (out / "case_d.raw").write_bytes(b"my raw data")
    _, err = run(predict(model, data / "mhd" / "case_d.mhd", out), capsys, 2)
    assert str(out / "case_d.raw") in err and (out / "case_d.raw").read_bytes() == b"my raw data"


def test_3_train_keeps_a_config_and_log_it_did_not_write(data, capsys):
    out = data / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "log.csv").write_text("my notes\n")
    _, err = run(train(data, out), capsys, 2)
    assert str(out / "config.json") in err and "not written by napari-dmd train" in err
    assert (out / "config.json").read_text() == "{}" and (out / "log.csv").read_text() == "my notes\n"


def test_4_a_second_command_on_a_folder_being_written_is_refused(data, model, capsys):
    out = data / "run"
    with locked(out, "train"):  # as a first `train` does for its whole run
        _, err = run(train(data, out), capsys, 2)
        assert "another napari-dmd command is writing" in err and str(out) in err
        _, err = run(predict(model, data / "images", out), capsys, 2)
        assert "another napari-dmd command is writing" in err
    assert not (out / "model.pt").exists()


def test_5_a_prediction_corrected_by_the_user_is_kept(data, model, capsys):
    out = data / "p"
    run(predict(model, data / "images" / "case0.nii.gz", out), capsys)
    run(predict(model, data / "images" / "case0.nii.gz", out), capsys)  # its own files: replaced
    labels, _ = read_image(out / "case0.nii.gz")
    labels[0, 0, 0] = 1 if labels[0, 0, 0] == 2 else 2  # a voxel of another class than predicted
    write_image(out / "case0.nii.gz", labels, GEOM)  # the user's correction, in place
    corrected = (out / "case0.nii.gz").read_bytes()
    _, err = run(predict(model, data / "images", out), capsys, 2)
    assert str(out / "case0.nii.gz") in err and "changed since napari-dmd predict wrote it" in err
    assert (out / "case0.nii.gz").read_bytes() == corrected and not (out / "case1.nii.gz").exists()


# ---------------------------------------------------------------- 6-8: silently wrong or corrupt
def truncating_writer(monkeypatch):
    real = io.sitk.WriteImage

    def short_write(image, path, *args, **kwargs):  # what SimpleITK does on a full disk: no error
        real(image, path, *args, **kwargs)
        with open(path, "r+b") as f:
            f.truncate(40)

    monkeypatch.setattr(io.sitk, "WriteImage", short_write)


@pytest.mark.parametrize("name", ["a.nii.gz", "a.nii", "a.nrrd", "a.mha", "a.mhd"])
def test_6_a_short_write_is_caught_before_the_rename(tmp_path, monkeypatch, name):
    target = tmp_path / name
    write_image(target, np.ones((4, 5, 6), np.float32))
    before = md5s(tmp_path)
    truncating_writer(monkeypatch)
    with pytest.raises(DataError, match=f"cannot write {target}.*does not read back"):
        write_image(target, np.zeros((4, 5, 6), np.float32))
    assert md5s(tmp_path) == before  # the previous file intact, no temporary left


def test_6_predict_lists_no_truncated_map(data, model, capsys, monkeypatch):
    truncating_writer(monkeypatch)
    _, err = run(predict(model, data / "images", data / "p"), capsys, 2)
    assert "does not read back" in err
    assert not (data / "p" / "disagreement.csv").exists() and not list((data / "p").glob("*.nii.gz"))


def test_6_a_file_size_limit_is_named(data, model):
    script = ("import resource, sys; from napari_dmd.cli import main; "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY)); "
              f"sys.exit(main(['predict', '--model', {str(model)!r}, '--images', {str(data / 'images')!r}, "
              f"'--out', {str(data / 'p')!r}, '--device', 'cpu']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "file-size limit (ulimit -f: 3000 bytes)" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    for written in (data / "p").rglob("*.nii.gz"):  # what is there is complete
        read_image(written)


def test_7_a_dicom_series_with_a_lost_slice_does_not_predict(tmp_path, model, capsys):
    from test_io import write_dicom_series

    folder = tmp_path / "series"
    write_dicom_series(folder, (np.arange(6 * 16 * 16).reshape(6, 16, 16) % 97).astype(np.int16),
                       (0.8, 0.6, 1.5), (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1125.1.404")
    damaged = sorted(folder.iterdir())[2]
    damaged.write_text("replaced by text")
    _, err = run(predict(model, folder, tmp_path / "p"), capsys, 2)
    assert str(damaged) in err and not (tmp_path / "p").exists()


def test_8_a_stray_label_value_does_not_make_classes(data, capsys):
    label, _ = read_image(data / "labels" / "case0.nii.gz")
    label = np.minimum(label, 1)
    label[0, 0, 0] = 7
    write_image(data / "labels" / "case0.nii.gz", label, GEOM)
    write_image(data / "labels" / "case1.nii.gz", np.minimum(read_image(data / "labels" / "case1.nii.gz")[0], 1),
                GEOM)
    _, err = run(train(data, data / "run"), capsys, 2)
    assert "not consecutive" in err and str(data / "labels" / "case0.nii.gz") in err and "--classes 8" in err
    assert not (data / "run").exists()


# ---------------------------------------------------------------- 9-11: tracebacks
@pytest.mark.parametrize("command", ["train", "predict", "evaluate"])
def test_9_an_out_that_cannot_be_created_is_one_line(data, model, capsys, command):
    (data / "afile").write_text("x")
    out = data / "afile" / "run"
    argv = {"train": train(data, out), "predict": predict(model, data / "images", out),
            "evaluate": ["evaluate", "--predictions", data / "truth", "--labels", data / "truth", "--out",
                         out / "t.csv"]}[command]
    _, err = run(argv, capsys, 2)
    assert str(data / "afile") in err and (data / "afile").read_text() == "x"


def test_10_out_of_memory_is_one_line_and_the_run_folder_can_be_reused(data, capsys, monkeypatch):
    from napari_dmd.training import Trainer

    def no_memory(self, iteration, more=False):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "step", no_memory)
        _, err = run(train(data, data / "run"), capsys, 2)
    assert "out of memory" in err and "--patch" in err
    run(train(data, data / "run"), capsys)  # the config.json it left is its own: the same --out works
    assert (data / "run" / "model.pt").exists()


def test_11_a_checkpoint_without_its_normalization_is_named(model):
    payload = torch.load(model, weights_only=True)
    del payload["normalization"]
    torch.save(payload, model)
    with pytest.raises(CheckpointError, match=f"{model} is damaged: it lacks 'normalization'"):
        load_model(model, "cpu")


# ---------------------------------------------------------------- unclear messages
def test_a_file_size_limit_on_a_checkpoint_is_named(tmp_path, monkeypatch):
    def torch_efbig(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(checkpoint.torch, "save", torch_efbig)
    monkeypatch.setattr(io, "_size_limit", lambda: 40960)
    pair = ModelPair.create(TrainConfig(num_classes=2, patch_size=(16, 16, 16)), 3, resolve_device("cpu"))
    with pytest.raises(CheckpointError) as caught:
        save_model(pair, tmp_path / "model.pt")
    assert "file-size limit (ulimit -f: 40960 bytes)" in str(caught.value) and "enforce" not in str(caught.value)


def test_a_patch_an_earlier_version_accepted_still_predicts(model, data, capsys):
    payload = torch.load(model, weights_only=True)
    payload["config"]["patch_size"] = [15, 31, 17]
    torch.save(payload, model)
    assert load_model(model, "cpu").config.patch_size is None
    _, err = run(predict(model, data / "images" / "case0.nii.gz", data / "p"), capsys, 2)
    assert f"{model} was trained with patch (15, 31, 17)" in err and "--patch 16 31 17" in err
    run(predict(model, data / "images" / "case0.nii.gz", data / "p", "--patch", "16", "16", "16"), capsys)


def test_resuming_from_nan_optimizer_state_names_the_checkpoint(data, model, capsys):
    payload = torch.load(model, weights_only=True)
    payload["training_state"] = {"optimizer": {"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}},
                                               "param_groups": []}}
    torch.save(payload, model)
    _, err = run(train(data, model.parent, "--iterations", "2", "--init", model, "--resume"), capsys, 2)
    assert f"{model}: its optimizer state holds NaN" in err
    load_checkpoint(model, "cpu")  # its weights still predict


def test_a_nan_model_is_not_saved_and_the_path_is_named(tmp_path):
    pair = ModelPair.create(TrainConfig(num_classes=2, patch_size=(16, 16, 16)), 3, resolve_device("cpu"))
    next(pair.nets[0].parameters()).data.fill_(float("nan"))
    with pytest.raises(CheckpointError, match=f"not writing {tmp_path / 'run' / 'model.pt'}: the model holds NaN"):
        save_model(pair, tmp_path / "run" / "model.pt")


def test_a_checkpoint_of_another_format_version_says_so(model):
    payload = torch.load(model, weights_only=True)
    payload["format"] = "napari-dmd/2"
    torch.save(payload, model)
    with pytest.raises(CheckpointError, match=f"{model} was written by another version of napari-dmd"):
        load_model(model, "cpu")


def test_a_checkpoint_write_that_does_not_read_back_keeps_the_previous(tmp_path, monkeypatch):
    pair = ModelPair.create(TrainConfig(num_classes=2, patch_size=(16, 16, 16)), 3, resolve_device("cpu"))
    path = save_model(pair, tmp_path / "model.pt")
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f: f.write(b"PK\x03\x04 cut short"))
    with pytest.raises(CheckpointError, match=f"cannot write {path}: what was written does not read back"):
        save_model(pair, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("name", ["a.mha", "a.mhd"])
def test_a_truncated_metaimage_is_called_truncated(tmp_path, name):
    write_image(tmp_path / name, np.random.default_rng(0).integers(0, 1000, (8, 30, 30)).astype(np.int16))
    data = tmp_path / ("a.raw" if name == "a.mhd" else name)
    data.write_bytes(data.read_bytes()[:-500])
    with pytest.raises(DataError, match=f"{data} is truncated or corrupt"):
        read_image(tmp_path / name)


def test_ignore_label_on_a_0_255_mask_says_why(data, capsys):
    for k in (0, 1):
        label, _ = read_image(data / "labels" / f"case{k}.nii.gz")
        write_image(data / "labels" / f"case{k}.nii.gz", (label > 0).astype(np.uint8) * 255, GEOM)
    _, err = run(train(data, data / "run", "--ignore-label", "255"), capsys, 2)
    assert "every label file holds only 0" in err and "remap it to 1" in err


def test_a_malformed_review_record_stops_predict_before_anything_is_written(data, model, capsys):
    sidecar_path(data / "labels" / "case1.nii.gz").write_text('{"shape": [1, 2]}')
    _, err = run(predict(model, data / "images", data / "p", "--labels", data / "labels"), capsys, 2)
    assert not (data / "p").exists(), err


def test_a_lone_review_record_is_noted_and_a_dangling_link_refused(data, capsys):
    lone = data / "labels" / "case9.reviewed.json"
    lone.write_text("{}")
    (data / "images" / "case5.nii.gz").symlink_to(data / "nowhere.nii.gz")
    _, err = run(train(data, data / "run"), capsys, 2)
    assert str(data / "images" / "case5.nii.gz") in err and "does not exist" in err
    (data / "images" / "case5.nii.gz").unlink()
    out, _ = run(train(data, data / "run"), capsys)
    assert f"{lone} has no label file" in out


def test_log_rows_written_after_the_checkpoint_are_not_repeated_on_resume(data, capsys):
    out = data / "run"
    run(train(data, out, "--iterations", "2"), capsys)
    with (out / "log.csv").open("a") as f:  # rows a kill -9 left after the last checkpoint
        f.write("3,1,1,1,1,0.01,fp32,0,9\n")
    run(train(data, out, "--iterations", "4", "--init", out / "model.pt", "--resume"), capsys)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["iteration"] for r in rows] == ["1", "2", "3", "4"] and rows[2]["seconds"] != "9"


def test_evaluate_leaves_a_class_absent_from_both_out_of_the_mean(data, capsys):
    label, _ = read_image(data / "truth" / "case0.nii.gz")
    write_image(data / "truth" / "case0.nii.gz", np.where(label == 2, 0, label).astype(np.uint8), GEOM)
    pred = data / "preds"
    for k in range(3):
        lab, _ = read_image(data / "truth" / f"case{k}.nii.gz")
        if k == 1:
            lab = np.where(lab == 2, 0, lab)  # class 2 missed in case1
        write_image(pred / f"case{k}.nii.gz", lab.astype(np.uint8), GEOM)
    out, _ = run(["evaluate", "--predictions", pred, "--labels", data / "truth", "--out", data / "t.csv"], capsys)
    assert "left out of the mean" in out.splitlines()[0]
    rows = {(r["case"], r["class"]): r for r in csv.DictReader((data / "t.csv").open())}
    assert rows[("case0", "2")]["dice"] == "" and float(rows[("mean", "2")]["dice"]) == pytest.approx(0.5)



def test_a_damaged_image_is_one_line_without_itks_own(tmp_path, capfd):
    write_image(tmp_path / "a.mha", np.random.default_rng(0).integers(0, 1000, (8, 30, 30)).astype(np.int16))
    text = (tmp_path / "a.mha").read_bytes()
    (tmp_path / "a.mha").write_bytes(text.replace(b"CompressedDataSize", b"X")[: len(text) // 2])
    with pytest.raises(DataError, match=str(tmp_path / "a.mha")):
        read_image(tmp_path / "a.mha")
    assert capfd.readouterr().err == ""  # not MetaIO's "M_ReadElementsData: data not read completely"
