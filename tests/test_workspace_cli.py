"""The command line on a workspace: train and predict in place, the cases split over torchrun's processes,
bad workspaces refused with one line and nothing written."""
import csv
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import FAST, run
from test_distributed import _free_port
from test_workspace import nnunet

from napari_dmd.checkpoint import load_model
from napari_dmd.io import read_image, write_image
from napari_dmd.review import Reviewed, save_reviewed, sidecar_path


def _state(root: Path) -> list[str]:
    """What napari-dmd wrote into the workspace's hidden folder (the lock aside)."""
    state = root / ".napari-dmd"
    return sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.name != "lock") if state.exists() else []


def test_train_and_predict_in_a_workspace(tmp_path, capsys):
    root = nnunet(tmp_path, cases=3, labelled=2, channels=2, tests=1)
    save_reviewed(Reviewed((16, 24, 24), slices={5, 6}), sidecar_path(root / "labelsTr" / "case1.nii.gz"))
    out, _ = run(["train", "--workspace", root, *FAST], capsys)
    assert "2 labeled + 1 unlabeled volumes, 2 channels (seq0, seq1), 3 classes" in out
    (model_path,) = (root / ".napari-dmd" / "runs").glob("*/model.pt")
    model = load_model(model_path, "cpu")
    assert model.channels == ("seq0", "seq1") and model.class_names == ("background", "anterior", "posterior")
    assert any((root / ".napari-dmd" / "cache").iterdir())  # the cached data path

    out, _ = run(["predict", "--workspace", root], capsys)
    preds = root / ".napari-dmd" / "predictions" / model_path.parent.name
    # case0 is reviewed whole: not predicted; case1 (2 slices reviewed), case2 and the test case3 are
    assert sorted(p.name for p in preds.glob("*.nii.gz")) == ["case1.nii.gz", "case2.nii.gz", "case3.nii.gz"]
    assert sorted(p.name for p in (preds / "disagreement").glob("*.nii.gz")) == \
        ["case1.nii.gz", "case2.nii.gz", "case3.nii.gz"]
    volumes = list(csv.DictReader((preds / "volumes.csv").open(encoding="utf-8")))
    assert {r["case"] for r in volumes} == {"case1.nii.gz", "case2.nii.gz", "case3.nii.gz"}
    ranked = list(csv.DictReader((preds / "label_next.csv").open(encoding="utf-8")))
    assert ranked and not any(r["case"] == "case1.nii.gz" and int(r["slice"]) in (5, 6) for r in ranked)
    assert read_image(preds / "case2.nii.gz")[0].shape == (16, 24, 24)


def test_the_workspace_lists_its_cases(tmp_path, capsys):
    root = nnunet(tmp_path, cases=2, labelled=1, channels=1, tests=0)
    out, _ = run(["workspace", root], capsys)
    assert "nnU-Net layout, 2 cases, classes background, anterior, posterior" in out
    assert "case0" in out and "labelled" in out and "unlabelled" in out
    new = tmp_path / "new"
    out, _ = run(["workspace", new, "--create", "--channel-names", "CT", "--class-names", "background", "liver"],
                 capsys)
    assert json.loads((new / "dataset.json").read_text())["channel_names"] == {"0": "CT"}


@pytest.mark.parametrize("edit, message", [
    (lambda r: [p.unlink() for p in (r / "labelsTr").iterdir()], "has no labelled case yet"),
    (lambda r: (r / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 1}})),
     r"case0.nii.gz holds label value 2, but .*dataset.json declares 2 labels \(0 background, 1 x\)"),
    (lambda r: (r / "imagesTr" / "case1_0000.nii.gz").unlink(), "case 'case1' has channel files 0001"),
    (lambda r: write_image(r / "labelsTr" / "case0.nii.gz", np.zeros((16, 24, 20), np.uint8)),
     r"has shape \(16, 24, 20\)"),
])
def test_a_bad_workspace_is_refused_with_one_line_and_nothing_written(tmp_path, capsys, edit, message):
    root = nnunet(tmp_path, cases=2, labelled=1, channels=2, tests=0)
    edit(root)
    _, err = run(["train", "--workspace", root, *FAST], capsys, code=2)
    assert err.count("\n") == 1 and re.search(message, err), err
    assert not list((root / ".napari-dmd" / "runs").glob("*/model.pt"))


def test_an_unwritable_workspace_is_said(tmp_path, capsys, monkeypatch):
    root = nnunet(tmp_path, cases=2, labelled=1, channels=1, tests=0)
    real = Path.write_bytes

    def read_only(self, data):
        if str(self).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    _, err = run(["train", "--workspace", root, *FAST], capsys, code=2)
    assert "train --workspace writes into the workspace" in err and "Read-only file system" in err
    _, err = run(["predict", "--workspace", root], capsys, code=2)
    assert "predict --workspace writes into the workspace" in err


def test_predict_without_a_model_or_data_says_what_is_missing(tmp_path, capsys):
    root = nnunet(tmp_path, cases=2, labelled=1, channels=1, tests=0)
    _, err = run(["predict", "--workspace", root], capsys, code=2)
    assert "has no trained model yet" in err
    _, err = run(["predict", "--images", root / "imagesTr"], capsys, code=2)
    assert "predict needs --model and --out (or --workspace FOLDER)" in err
    _, err = run(["train", "--workspace", root, "--images", root], capsys, code=2)
    assert "--workspace gives the data: drop --images" in err


def test_predict_under_torchrun_splits_the_cases_and_writes_what_one_process_writes(tmp_path, capsys):
    root = nnunet(tmp_path, cases=4, labelled=1, channels=1, tests=1)
    run(["train", "--workspace", root, *FAST], capsys)
    (model,) = (root / ".napari-dmd" / "runs").glob("*/model.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    text = {"capture_output": True, "text": True, "encoding": "utf-8", "env": env, "timeout": 300}
    one = subprocess.run([sys.executable, "-m", "napari_dmd", "predict", "--workspace", str(root), "--out",
                          str(tmp_path / "one")], **text)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(_free_port()), "-m", "napari_dmd", "predict", "--workspace", str(root), "--model",
                          str(model), "--out", str(tmp_path / "two")], **text)
    assert two.returncode == 0, two.stderr
    names = sorted(p.name for p in (tmp_path / "one").glob("*.nii.gz"))
    assert names == [f"case{k}.nii.gz" for k in (1, 2, 3, 4)]
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.nii.gz"))
    for name in names:
        for sub in ("", "disagreement"):
            a, b = (read_image(tmp_path / d / sub / name)[0] for d in ("one", "two"))
            np.testing.assert_array_equal(a, b)
    for table in ("volumes.csv", "disagreement.csv", "label_next.csv"):
        one_table, two_table = ((tmp_path / d / table).read_text(encoding="utf-8") for d in ("one", "two"))
        assert one_table == two_table, table
