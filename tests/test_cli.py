"""The command line: train → predict → evaluate on tiny files, and one clear line for bad input."""
import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import GEOM

from napari_dmd.checkpoint import load_checkpoint, load_model
from napari_dmd.cli import main
from napari_dmd.io import Geometry, read_image, write_image

from synthetic import make_case, write_dataset


@pytest.fixture
def dataset(tmp_path):
    write_dataset(tmp_path, GEOM)
    write_image(tmp_path / "more" / "extra.nrrd", make_case(5, classes=3)[0], GEOM)
    return tmp_path


def test_train_predict_evaluate(dataset, capsys):
    run = dataset / "run"
    assert main(["train", "--images", str(dataset / "images"), "--labels", str(dataset / "labels"),
                 "--unlabeled", str(dataset / "more"), "--out", str(run), "--iterations", "3",
                 "--patch", "16", "16", "16", "--checkpoint-every", "2", "--foreground-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "2 labeled + 2 unlabeled" in out and "3 classes" in out
    assert "precision fp32" in out or "precision bf16" in out  # which precision runs, and why
    assert "batch norm joint" in out  # two images labeled whole: 'auto' keeps one pass (16³ patches would anyway)
    progress = [line for line in out.splitlines() if line.startswith("iteration ")]
    assert [line.split(":")[0] for line in progress] == ["iteration 2/3", "iteration 3/3"]  # no terminal: lines
    assert "skipped 0" in progress[-1]
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("iteration,sup_loss,distill_loss,loss,lambda,lr,precision") and len(log) == 4
    assert (run / "model.pt").exists()
    assert json.loads((run / "config.json").read_text())["foreground_fraction"] == 0.5

    # resume a finished run to more iterations
    assert main(["train", "--images", str(dataset / "images"), "--labels", str(dataset / "labels"),
                 "--out", str(run), "--iterations", "4", "--patch", "16", "16", "16",
                 "--init", str(run / "model.pt"), "--resume"]) == 0

    pred_dir = dataset / "pred"
    assert main(["predict", "--model", str(run / "model.pt"), "--images", str(dataset / "images"),
                 "--out", str(pred_dir), "--stride", "8", "8", "8"]) == 0
    pred, g = read_image(pred_dir / "case0.nii.gz")
    assert pred.shape == (16, 24, 24) and set(np.unique(pred)) <= {0, 1, 2}
    np.testing.assert_allclose(g.spacing, GEOM.spacing, rtol=1e-5)
    np.testing.assert_allclose(g.origin, GEOM.origin, atol=1e-4)
    dis, _ = read_image(pred_dir / "disagreement" / "case0.nii.gz")
    assert dis.dtype == np.float32 and 0 <= dis.min() and dis.max() <= 1
    ranking = list(csv.DictReader((pred_dir / "disagreement.csv").open(encoding="utf-8")))
    assert len(ranking) == 3
    assert [float(r["disagreement"]) for r in ranking] == sorted((float(r["disagreement"]) for r in ranking),
                                                                 reverse=True)
    # each class's volume from the spacing
    volumes = list(csv.DictReader((pred_dir / "volumes.csv").open(encoding="utf-8")))
    assert [(r["case"], r["class"]) for r in volumes] == [(f"case{k}.nii.gz", c) for k in range(3) for c in "12"]
    voxels = int(np.count_nonzero(pred == 1))
    row = volumes[0]
    assert row["unit"] == "mm³" and int(row["voxels"]) == voxels
    assert float(row["volume"]) == pytest.approx(voxels * 0.8 * 0.8 * 2.0, rel=1e-3)
    label_next = list(csv.DictReader((pred_dir / "label_next.csv").open(encoding="utf-8")))
    assert [r["rank"] for r in label_next] == [str(k) for k in range(1, len(label_next) + 1)]
    # ranking.suggest spreads the list: every image's best slab comes before any image's second
    assert {r["case"] for r in label_next[:3]} == {"case0.nii.gz", "case1.nii.gz", "case2.nii.gz"}
    assert all(0 <= int(r["slice"]) < 16 and 0 <= float(r["score"]) <= 1 for r in label_next)

    table = dataset / "metrics.csv"
    assert main(["evaluate", "--predictions", str(pred_dir), "--labels", str(dataset / "truth"),
                 "--classes", "3", "--out", str(table)]) == 0
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [r["case"] for r in rows] == ["case0", "case0", "case1", "case1", "case2", "case2", "mean", "mean"]
    assert all(0 <= float(r["dice"]) <= 1 for r in rows)
    # distances in mm use the anisotropic spacing, so they differ from the voxel ones
    assert any(float(r["hd95_mm"]) != float(r["hd95"]) for r in rows if float(r["hd95"]) > 0)


def test_evaluate_perfect_prediction(dataset, capsys):
    assert main(["evaluate", "--predictions", str(dataset / "truth"), "--labels", str(dataset / "truth")]) == 0
    out = capsys.readouterr().out
    mean_rows = [line for line in out.splitlines() if line.startswith("mean")]
    assert len(mean_rows) == 2 and all(line.split()[2] == "1.0000" for line in mean_rows)


def bad(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-dmd: error: ") and len(err.splitlines()) == 1
    return err


def test_bad_input_gets_one_line(dataset, tmp_path, capsys):
    base = ["train", "--out", str(tmp_path / "r"), "--iterations", "1", "--patch", "16", "16", "16"]
    err = bad(base + ["--images", str(tmp_path / "nope"), "--labels", str(dataset / "labels")], capsys)
    assert "nope" in err
    # label of another shape
    write_image(tmp_path / "badlab" / "case0.nii.gz", np.zeros((16, 24, 20), np.uint8), GEOM)
    assert "shape" in bad(base + ["--images", str(dataset / "images"), "--labels", str(tmp_path / "badlab")], capsys)
    # label on another grid
    other = Geometry(spacing=(1.0, 1.0, 1.0), origin=GEOM.origin, direction=GEOM.direction)
    write_image(tmp_path / "moved" / "case0.nii.gz", make_case(0)[1], other)
    assert "does not lie" in bad(base + ["--images", str(dataset / "images"), "--labels", str(tmp_path / "moved")],
                                 capsys)
    # values outside the classes
    assert "classes" in bad(base + ["--images", str(dataset / "images"), "--labels", str(dataset / "labels"),
                                    "--classes", "2"], capsys)
    # a setting out of range
    assert "foreground_fraction" in bad(base + ["--images", str(dataset / "images"), "--labels",
                                                str(dataset / "labels"), "--foreground-fraction", "2"], capsys)
    # no labeled data
    (tmp_path / "nolabels").mkdir()
    (tmp_path / "nolabels" / "readme.txt").write_text("x")
    assert "no label map" in bad(base + ["--images", str(dataset / "images"), "--labels", str(tmp_path / "nolabels")],
                                 capsys)
    # unreadable file
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "case0.nii.gz").write_bytes(b"not an image")
    bad(base + ["--images", str(broken), "--labels", str(dataset / "labels")], capsys)
    # a checkpoint that does not load
    (tmp_path / "model.pt").write_text("x")
    assert "checkpoint" in bad(["predict", "--model", str(tmp_path / "model.pt"), "--images",
                                str(dataset / "images"), "--out", str(tmp_path / "p")], capsys)


def test_predict_never_overwrites_an_input(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--images", str(dataset / "images"), "--labels", str(dataset / "labels"), "--out",
                 str(run), "--iterations", "1", "--patch", "16", "16", "16"]) == 0
    before = (dataset / "images" / "case0.nii.gz").read_bytes()
    predict = ["predict", "--model", str(run / "model.pt"), "--images"]
    assert "overwrite an input" in bad(predict + [str(dataset / "images"), "--out", str(dataset / "images")], capsys)
    assert (dataset / "images" / "case0.nii.gz").read_bytes() == before
    assert "same name" in bad(predict + [str(dataset / "images" / "case0.nii.gz"), str(dataset / "truth"),
                                         "--out", str(tmp_path / "p")], capsys)


def test_ctrl_c_stops_training_with_a_resumable_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "napari_dmd.cli", "train", "--images", str(dataset / "images"), "--labels",
           str(dataset / "labels"), "--out", str(run), "--iterations", "100000", "--patch", "16", "16", "16",
           "--checkpoint-every", "100000", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8")
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at iteration" in err and "Traceback" not in err
    model = load_model(run / "model.pt", "cpu")
    assert 0 < model.iteration < 100000 and f"iteration {model.iteration}" in err
    assert load_checkpoint(run / "model.pt", "cpu")[1] is not None  # the training state to resume from


def test_volume_smaller_than_patch_is_padded(tmp_path):
    img, lab = make_case(0, shape=(10, 12, 12))
    write_image(tmp_path / "i" / "a.nii.gz", img)
    write_image(tmp_path / "l" / "a.nii.gz", lab)
    assert main(["train", "--images", str(tmp_path / "i"), "--labels", str(tmp_path / "l"), "--out",
                 str(tmp_path / "r"), "--iterations", "1", "--patch", "16", "16", "16"]) == 0
    assert main(["predict", "--model", str(tmp_path / "r" / "model.pt"), "--images", str(tmp_path / "i" / "a.nii.gz"),
                 "--out", str(tmp_path / "p")]) == 0
    assert read_image(tmp_path / "p" / "a.nii.gz")[0].shape == (10, 12, 12)


def test_headless_demo_runs_the_loop_on_the_sample_data(tmp_path, capsys):
    assert main(["demo", "--headless", "--out", str(tmp_path), "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "napari-dmd train --workspace" in out and "label next" in out
    preds = sorted((tmp_path / "workspace" / ".napari-dmd" / "predictions").glob("*/*.nii.gz"))
    assert len(preds) == 9  # the 9 unlabelled sample cases; the 3 labelled ones are reviewed whole
    assert set(np.unique(read_image(preds[0])[0])) <= {0, 1, 2}


def test_a_time_limit_ends_training_with_its_model_written(dataset, capsys):
    run = dataset / "run"
    assert main(["train", "--images", str(dataset / "images"), "--labels", str(dataset / "labels"),
                 "--out", str(run), "--iterations", "50", "--patch", "16", "16", "16", "--precision", "fp32",
                 "--minutes", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "limit ended training at iteration 1" in out and load_model(run / "model.pt", "cpu").iteration == 1
