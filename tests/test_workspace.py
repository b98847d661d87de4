"""The workspace: layouts (nnU-Net, MSD, a plain folder), cases listed from headers alone, one case read, labels
saved atomically with a history, a label file changed on disk kept, one writer at a time."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from cli_helpers import GEOM

from napari_dmd import io as dmd_io
from napari_dmd.errors import DataError
from napari_dmd.io import read_image, write_image
from napari_dmd.review import Reviewed, save_reviewed, sidecar_path
from napari_dmd.workspace import Workspace
from napari_dmd.workspace_layout import FOLDER, MSD, NNUNET, create, detect

from synthetic import make_case


def nnunet(root, cases=3, labelled=1, channels=2, tests=1, dataset=True):
    """An nnU-Net raw dataset: ``cases`` training cases of ``channels`` channel files, the first ``labelled``
    with labels, ``tests`` cases in imagesTs/."""
    for k in range(cases + tests):
        img, lab = make_case(k, classes=3)
        folder = "imagesTr" if k < cases else "imagesTs"
        for c in range(channels):
            write_image(root / folder / f"case{k}_{c:04d}.nii.gz", img * (c + 1), GEOM)
        if k < labelled:
            write_image(root / "labelsTr" / f"case{k}.nii.gz", lab, GEOM)
    if dataset:
        (root / "dataset.json").write_text(json.dumps({
            "channel_names": {str(c): f"seq{c}" for c in range(channels)},
            "labels": {"background": 0, "anterior": 1, "posterior": 2},
            "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def test_an_nnunet_dataset_is_listed_from_its_headers_without_reading_voxels(tmp_path, monkeypatch):
    root = nnunet(tmp_path)
    save_reviewed(Reviewed((16, 24, 24), slices={3, 4}), sidecar_path(root / "labelsTr" / "case0.nii.gz"))

    def no_voxels(*_a, **_k):
        raise AssertionError("voxel data read while listing")

    monkeypatch.setattr(sitk, "ReadImage", no_voxels)
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", no_voxels)
    monkeypatch.setattr(dmd_io, "read_image", no_voxels)
    with Workspace(root) as ws:
        assert ws.layout.kind == NNUNET and ws.layout.channel_names == ("seq0", "seq1")
        assert ws.layout.class_names == ("background", "anterior", "posterior")
        cases = ws.cases()
    assert [c.name for c in cases] == ["case0", "case1", "case2", "case3"]
    first = cases[0]
    assert first.shape == (16, 24, 24) and np.allclose(first.spacing, (2.0, 0.8, 0.8)) and first.channels == 2
    assert first.reviewed == 2 and first.state == "2 of 16 slices reviewed"
    assert cases[1].state == "unlabelled" and cases[3].state == "test" and cases[3].test


def test_an_msd_task_folder_and_a_plain_folder_open_as_workspaces(tmp_path):
    msd = tmp_path / "msd"
    img, lab = make_case(0)
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(img), sitk.GetImageFromArray(img * 2)])
    (msd / "imagesTr").mkdir(parents=True)
    sitk.WriteImage(four_d, str(msd / "imagesTr" / "hippo_001.nii.gz"))
    write_image(msd / "labelsTr" / "hippo_001.nii.gz", lab)
    (msd / "dataset.json").write_text(json.dumps({"modality": {"0": "T1", "1": "T2"},
                                                   "labels": {"0": "background", "1": "hippocampus"}}))
    with Workspace(msd) as ws:
        (case,) = ws.cases()
        assert ws.layout.kind == MSD and case.channels == 2 and case.state == "labelled"
        data = ws.read("hippo_001")
        assert data.image.count == 2 and data.image.names == ("T1", "T2")
        np.testing.assert_array_equal(data.labels, lab)
        with pytest.raises(DataError, match="has no case 'hippo_002'"):
            ws.read("hippo_002")

    plain = tmp_path / "plain"
    write_image(plain / "a.nii.gz", img)
    with Workspace(plain) as ws:
        assert ws.layout.kind == FOLDER and ws.layout.labels == plain / "labels"
        data = ws.read("a")
        assert data.labels is None and not data.reviewed.whole
        path = ws.save_labels(data, lab, Reviewed.complete(lab.shape))
    assert path == plain / "labels" / "a.nii.gz" and Workspace(plain, writable=False).cases()[0].state == "labelled"


def test_a_created_workspace_writes_dataset_json_that_opens_again(tmp_path):
    layout = create(tmp_path / "new", ["CT"], ["background", "liver"])
    again = detect(layout.root)
    assert again.kind == NNUNET and again.channel_names == ("CT",) and again.class_names == ("background", "liver")
    assert again.file_ending == ".nii.gz" and again.images.is_dir() and again.labels.is_dir()
    with pytest.raises(DataError, match="already holds a workspace"):
        create(layout.root, ["CT"], ["background", "liver"])


def test_saving_labels_keeps_the_previous_versions_and_restores_one(tmp_path):
    root = nnunet(tmp_path, channels=1)
    with Workspace(root) as ws:
        ws.history.keep = 2
        data = ws.read("case0")
        first = data.labels.copy()
        for k in range(3):
            edited = first.copy()
            edited[k] = 2
            rec = Reviewed(first.shape, slices={k})
            ws.save_labels(data, edited, rec)
        versions = ws.history.versions("case0")
        assert len(versions) == 2  # the last 2 kept: the saves of k=0 and k=1
        saved, _ = read_image(root / "labelsTr" / "case0.nii.gz")
        assert (saved[2] == 2).all() and ws.cases()[0].reviewed == 1
        ws.restore(data, versions[0])
        back, _ = read_image(root / "labelsTr" / "case0.nii.gz")
        assert (back[0] == 2).all() and not (back[2] == 2).all()
        assert len(ws.history.versions("case0")) == 2


def test_a_label_file_changed_on_disk_since_it_was_read_is_not_overwritten(tmp_path):
    root = nnunet(tmp_path, channels=1)
    path = root / "labelsTr" / "case0.nii.gz"
    with Workspace(root) as ws:
        data = ws.read("case0")
        other = data.labels.copy()
        other[0] = 1
        write_image(path, other, GEOM)  # another program saves the file
        before = path.read_bytes()
        with pytest.raises(DataError, match=r"case0.nii.gz was changed on disk since napari-dmd read it"):
            ws.save_labels(data, data.labels, data.reviewed)
        assert path.read_bytes() == before and ws.history.versions("case0") == []
        new = ws.read("case1")  # no label file when read; one appears before the save
        write_image(root / "labelsTr" / "case1.nii.gz", other, GEOM)
        with pytest.raises(DataError, match="case1.nii.gz was created on disk"):
            ws.save_labels(new, other, Reviewed.complete(other.shape))


def test_a_second_writer_opens_the_workspace_read_only_and_is_told_why(tmp_path):
    root = nnunet(tmp_path, channels=1)
    with Workspace(root) as first:
        second = Workspace(root)
        assert second.read_only and f"process {os.getpid()}" in second.read_only
        data = second.read("case0")
        with pytest.raises(DataError, match="not saved: another napari-dmd"):
            second.save_labels(data, data.labels, data.reviewed)
        assert first.read_only is None
    assert Workspace(root).read_only is None  # released with the first


def test_a_read_only_workspace_opens_read_only_and_says_so(tmp_path, monkeypatch):
    root = nnunet(tmp_path, channels=1)
    real_open = os.open

    def read_only_disk(path, *args, **kwargs):
        if str(path).startswith(str(root)) and args and args[0] & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_disk)
    ws = Workspace(root)
    monkeypatch.undo()
    assert ws.read_only and "Read-only file system" in ws.read_only
    data = ws.read("case0")
    with pytest.raises(DataError, match="not saved: .*Read-only file system"):
        ws.save_labels(data, data.labels, data.reviewed)


@pytest.mark.parametrize("edit, message", [
    (lambda r: (r / "dataset.json").write_text(json.dumps({"channel_names": {"0": "a"}, "labels": {"background": 0,
                                                                                                  "x": 1}})),
     r"has 2 channel\(s\), but .*dataset.json declares 1 \(a\)"),
    (lambda r: write_image(r / "imagesTr" / "case9_0000.nrrd", make_case(9)[0]),
     r"case9_0000.nrrd ends in .nrrd, but .*dataset.json declares file_ending .nii.gz"),
    (lambda r: (r / "imagesTr" / "case2_0001.nii.gz").unlink(),
     r"case 'case2' has channel files 0000; every case needs 2 channels"),
    (lambda r: write_image(r / "labelsTr" / "case1.nii.gz", np.zeros((16, 24, 20), np.uint8), GEOM),
     r"label .*case1.nii.gz has shape \(16, 24, 20\), its image .*case1_0000.nii.gz \(16, 24, 24\)"),
    (lambda r: (r / "dataset.json").write_text("{not json"), r"cannot read .*dataset.json"),
    (lambda r: (r / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "x": 2}})),
     r"'labels' has values \[0, 2\]; expected 0..1"),
])
def test_a_workspace_that_contradicts_itself_is_refused_with_one_line(tmp_path, edit, message):
    root = nnunet(tmp_path)
    edit(root)
    with pytest.raises(DataError, match=message):
        Workspace(root, writable=False).cases()


def test_a_full_disk_while_saving_labels_is_said_and_keeps_the_previous_version(tmp_path):
    root = nnunet(tmp_path, channels=1)
    path = root / "labelsTr" / "case0.nii.gz"
    before = path.read_bytes()
    script = ("import resource, sys, numpy as np; from napari_dmd.workspace import Workspace\n"
              "from napari_dmd.errors import DataError\n"
              f"ws = Workspace({str(root)!r}); d = ws.read('case0')\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
              "noise = np.random.default_rng(0).integers(0, 3, d.labels.shape).astype(np.uint8)\n"
              "try:\n    ws.save_labels(d, noise, d.reviewed)\nexcept DataError as e:\n    print(e); sys.exit(2)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "file-size limit" in result.stdout or "disk is full" in result.stdout
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
