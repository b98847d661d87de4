"""The dock on a workspace: its cases listed, only the case in view loaded, moving on saves and releases it;
labels saved every N seconds off the GUI thread, a file changed on disk asked about, a second writer read-only,
a failed save said with the strokes kept, earlier versions restored."""
import errno
import os

import numpy as np
import pytest

from napari_dmd import io as dmd_io
from napari_dmd.io import read_image, write_image
from napari_dmd.plugin.result_layers import disagreement_name, prediction_name
from napari_dmd.review import load_reviewed, sidecar_path
from napari_dmd.workspace import Workspace

from plugin_helpers import small_workspace, wait_done, workspace_dock


def user_layers(viewer):
    return sorted(layer.name for layer in viewer.layers)


def paint(layer, index):
    """A stroke as napari's brush makes it (one step of the layer's history, its paint event), changing the
    voxel (index, 5, 5) between background and class 1; returns the value painted."""
    value = 1 - int(layer.data[index, 5, 5])
    layer.paint((index, 5, 5), value, refresh=True)
    return value


def test_a_workspace_opens_with_its_cases_listed_and_only_the_case_in_view_loaded(make_napari_viewer, tmp_path):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    box = widget.workspace.box
    assert [box.table.item(r, 0).text() for r in range(box.table.rowCount())] == ["case0", "case1", "case2"]
    assert box.table.item(0, 1).text() == "labelled" and box.table.item(1, 1).text() == "unlabelled"
    assert user_layers(viewer) == ["case0", "case0 labels"]
    assert widget.nav.label.text() == "Case 1 of 3: case0" and "1 labelled" in widget.data.summary.text()
    assert widget.workspace.training_counts() == (1, 2)  # what a Start trains on, the cases not yet opened too
    assert viewer.layers["case0 labels"].metadata["class_names"] == ["background", "box"]

    widget.nav.step(1)  # ▶: case0 released, case1 loaded with an empty labels layer
    assert user_layers(viewer) == ["case1", "case1 labels"]
    assert not viewer.layers["case1 labels"].data.any() and widget.nav.case == "case1"
    box.table.cellClicked.emit(2, 0)
    assert user_layers(viewer) == ["case2", "case2 labels"]
    assert not (root / "labelsTr" / "case1.nii.gz").exists()  # nothing painted: nothing written
    widget.workspace.close()
    assert user_layers(viewer) == [] and widget.table.isVisible() == widget.isVisible()


def test_moving_on_saves_the_strokes_with_their_review_record_and_keeps_the_version_before(make_napari_viewer,
                                                                                           tmp_path):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    widget.nav.step(1)
    paint(viewer.layers["case1 labels"], 4)
    widget.nav.step(-1)  # the stroke on case1 is saved as it is released
    saved = root / "labelsTr" / "case1.nii.gz"
    labels, _ = read_image(saved)
    assert labels[4, 5, 5] == 1
    assert load_reviewed(sidecar_path(saved), labels.shape).marked() == {4}
    assert widget.workspace.box.table.item(1, 1).text() == "1 of 16 slices reviewed"
    paint(viewer.layers["case0 labels"], 2)
    widget.nav.step(1)
    assert len(Workspace(root, writable=False).history.versions("case0")) == 1  # the expert's file kept


def test_strokes_are_saved_every_n_seconds_off_the_gui_thread(make_napari_viewer, tmp_path, qtbot):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run", autosave=1)
    path = root / "labelsTr" / "case0.nii.gz"
    before = path.read_bytes()
    import threading

    threads: list[str] = []
    original = dmd_io.write_image

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)

    dmd_io.write_image = recording
    try:
        paint(viewer.layers["case0 labels"], 9)
        qtbot.waitUntil(lambda: path.read_bytes() != before, timeout=10_000)
    finally:
        dmd_io.write_image = original
    assert threads and all(name.startswith("napari-dmd-save") for name in threads)
    qtbot.waitUntil(lambda: " saved at " in widget.workspace.box.saving.text(), timeout=5_000)
    assert widget.workspace.box.versions.count() == 1  # the version before, ready to restore
    assert not widget.workspace.saver.dirty


def test_a_label_file_changed_on_disk_is_asked_about_never_overwritten(make_napari_viewer, tmp_path):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    path = root / "labelsTr" / "case0.nii.gz"
    theirs = np.zeros((16, 32, 32), np.uint8)
    theirs[0] = 1
    write_image(path, theirs, dmd_io.Geometry.from_scale((2.0, 1.0, 1.0)))
    mine = paint(viewer.layers["case0 labels"], 9)
    assert widget.workspace.save_now().changed_on_disk
    assert read_image(path)[0][0].all()  # theirs untouched
    box = widget.workspace.box
    assert not box.conflict.isHidden() and "changed on disk" in box.conflict_text.text()
    assert "NOT SAVED" in box.saving.text()
    widget.nav.step(1)  # refused: the case stays, strokes in the layer
    assert widget.workspace.case == "case0" and viewer.layers["case0 labels"].data[9, 5, 5] == mine
    box.overwrite_button.click()  # mine over theirs; theirs kept in the history
    assert read_image(path)[0][9, 5, 5] == mine and box.conflict.isHidden()
    (version,) = Workspace(root, writable=False).history.versions("case0")
    assert read_image(version / "case0.nii.gz")[0][0].all()

    write_image(path, theirs, dmd_io.Geometry.from_scale((2.0, 1.0, 1.0)))
    paint(viewer.layers["case0 labels"], 3)
    widget.workspace.save_now()
    box.reload_button.click()  # theirs into the layer
    assert viewer.layers["case0 labels"].data[0].all() and not widget.workspace.saver.dirty


def test_a_second_writer_opens_read_only_and_says_why(make_napari_viewer, tmp_path):
    root = small_workspace(tmp_path / "ws")
    with Workspace(root) as holder:
        assert holder.read_only is None
        viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
        text = widget.workspace.box.folder.text() + widget.workspace.box.saving.text()
        assert "read-only" in text and f"process {os.getpid()}" in text
        assert not viewer.layers["case0 labels"].editable
        widget.workspace.close()


def test_a_failed_save_is_said_in_full_and_keeps_the_strokes_and_the_file(make_napari_viewer, tmp_path, monkeypatch):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    path = root / "labelsTr" / "case0.nii.gz"
    before = path.read_bytes()

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dmd_io, "_verify", full)
    mine = paint(viewer.layers["case0 labels"], 9)
    result = widget.workspace.save_now()
    assert result.error and not result.changed_on_disk
    text = widget.workspace.box.saving.text()
    assert "NOT SAVED" in text and "the disk is full" in text and str(path) in text
    assert path.read_bytes() == before and viewer.layers["case0 labels"].data[9, 5, 5] == mine
    assert widget.workspace.saver.dirty and not widget.workspace.release()  # the case stays open
    monkeypatch.undo()
    assert widget.workspace.release() and read_image(path)[0][9, 5, 5] == mine


def test_an_earlier_version_is_restored_from_the_dock(make_napari_viewer, tmp_path):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    layer = viewer.layers["case0 labels"]
    expert = layer.data.copy()
    paint(layer, 9)
    widget.workspace.save_now()
    box = widget.workspace.box
    assert box.versions.count() == 1
    box.restore_button.click()  # the expert's version back, the painted one kept
    assert np.array_equal(viewer.layers["case0 labels"].data, expert)
    assert np.array_equal(read_image(root / "labelsTr" / "case0.nii.gz")[0], expert)
    assert box.versions.count() == 2


@pytest.mark.parametrize("how", ["reader", "cli"])
def test_file_open_of_a_workspace_folder_and_the_open_command(make_napari_viewer, tmp_path, how, capsys):
    root = small_workspace(tmp_path / "ws")
    if how == "cli":
        from napari_dmd.cli import main

        assert main(["open", str(tmp_path / "none")]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        return
    viewer = make_napari_viewer()
    viewer.open(str(root), plugin="napari-dmd")
    from napari_dmd.plugin.demo import dock_widget

    widget = dock_widget(viewer)
    assert widget.workspace.case == "case0" and user_layers(viewer) == ["case0", "case0 labels"]
    widget.workspace.close()


def test_napari_killed_while_painting_loses_no_stroke_older_than_the_autosave_interval(tmp_path):
    """A real napari under this screen paints through the dock's labels layer, is killed with SIGKILL, and the
    workspace reopened: every stroke made more than N seconds before the kill is on disk, the lock is free."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = small_workspace(tmp_path / "ws", cases=2, labelled=0)
    seconds, step = 2, 0.25
    script = Path(__file__).with_name("paint_and_wait.py")
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(seconds), str(step)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace", env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    strokes: list[tuple[int, float]] = []
    try:
        for line in proc.stdout:
            if line.startswith("stroke"):
                _, index, when = line.split()
                strokes.append((int(index), float(when)))
            if len(strokes) == 12 or line.startswith("all"):
                break
    finally:
        killed = time.time()
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and len(strokes) == 12, err[-2000:]
    old = {index for index, when in strokes if when < killed - seconds}
    assert old, "no stroke old enough to be checked"
    with Workspace(root) as ws:
        assert ws.read_only is None  # the lock went with the killed process
        labels = ws.read("case0").labels
    assert labels is not None, "nothing was saved"
    kept = {i for i in range(labels.shape[0]) if labels[i, 1, 1] == 1}
    assert old <= kept, f"lost strokes on slices {sorted(old - kept)}"
    assert kept <= {index for index, _ in strokes}


def test_start_trains_on_the_whole_workspace_and_its_predictions_come_back_as_results(make_napari_viewer, tmp_path,
                                                                                      qtbot):
    """Start reads every case from the workspace's files (one case open), predicts the workspace at the end as
    predict --workspace does; a dock opening the workspace later (another machine's predictions alike) shows
    them as that run's results, and 'label this next' over the cohort opens the case it names at its slice, its
    results drawn between the image and the labels."""
    root = small_workspace(tmp_path / "ws", cases=2, labelled=1)
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    paint(viewer.layers["case0 labels"], 9)  # saved at Start
    widget.start()
    wait_done(qtbot, widget)
    assert " saved at " in widget.workspace.box.saving.text()
    runs = list((root / ".napari-dmd" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.pt").is_file()
    import json

    trained = json.loads((runs[0] / "data.json").read_text())
    assert len(trained["labeled"]) + len(trained["unlabeled"]) == 2  # every case, one never opened
    predicted = root / ".napari-dmd" / "predictions" / runs[0].name
    assert sorted(p.name for p in predicted.glob("case*.nii.gz")) == ["case1.nii.gz"]
    widget.workspace.go("case1")
    assert prediction_name("case1") in viewer.layers and disagreement_name("case1") in viewer.layers
    widget.workspace.close()

    assert widget.workspace.open(root)  # opened afresh (another machine's predictions alike): its results
    box = widget.workspace.box
    assert box.table.item(1, 1).text() == "unlabelled · predicted" and box.table.item(1, 2).text().endswith("%")
    ranking = widget.next.ranking
    assert ranking.rowCount() and runs[0].name in widget.next.coverage.text()
    first = ranking.suggestions[0]
    assert first.image == "case1" and widget.workspace.case == "case0"
    widget._go(first)  # 'label this next' opens the case it names, at its slice as the slider numbers it
    assert widget.workspace.case == "case1" and prediction_name("case1") in viewer.layers
    assert viewer.dims.current_step[first.axis] == first.index
    names = [layer.name for layer in viewer.layers]  # the results above the image, the labels above them
    assert names.index("case1") < names.index(prediction_name("case1")) < names.index("case1 labels")
    stamp = (predicted / "case1.nii.gz").stat().st_mtime_ns
    widget.predict()  # Predict on a workspace: every case into it, with the current model
    wait_done(qtbot, widget)
    assert "Predicted with the model" in widget.run.status.text(), widget.run.status.text()
    assert (predicted / "case1.nii.gz").stat().st_mtime_ns > stamp
    widget.workspace.close()


def test_the_demo_opens_a_copy_of_the_sample_workspace(make_napari_viewer, monkeypatch, tmp_path):
    import napari

    from napari_dmd.cli import main
    from napari_dmd.plugin.demo import dock_widget

    viewers = []
    monkeypatch.setattr(napari, "Viewer", lambda **kw: viewers.append(make_napari_viewer()) or viewers[-1])
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main(["demo", "--out", str(tmp_path)]) == 0
    widget = dock_widget(viewers[0])
    assert widget.workspace.ws.layout.root == tmp_path / "workspace" and len(widget.workspace.cases) == 12
    assert widget.workspace.box.table.rowCount() == 12 and len(viewers[0].layers) == 2  # one case in view
    widget.workspace.close()


def test_closing_the_dock_saves_the_strokes_and_releases_the_workspace(make_napari_viewer, tmp_path):
    root = small_workspace(tmp_path / "ws")
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    mine = paint(viewer.layers["case0 labels"], 9)
    viewer.window.remove_dock_widget(widget.parent() if widget.parent() is not None else widget)
    widget.shutdown()  # what closing the dock (or napari's window) calls
    assert read_image(root / "labelsTr" / "case0.nii.gz")[0][9, 5, 5] == mine
    assert Workspace(root).read_only is None and widget.workspace.ws is None


def test_a_case_of_several_channel_files_is_one_case_drawn_as_one_picture(make_napari_viewer, tmp_path):
    import json

    from plugin_helpers import cube_case

    root = tmp_path / "ws"
    for c in range(2):
        write_image(root / "imagesTr" / f"case0_{c:04d}.nii.gz", cube_case(0)[0] * (c + 1))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC"},
                                                   "labels": {"background": 0, "box": 1}, "file_ending": ".nii.gz"}))
    viewer, widget = workspace_dock(make_napari_viewer, root, tmp_path / "run")
    assert user_layers(viewer) == ["case0", "case0 labels", "case0_0001"]
    assert widget.session.grouping.cases() == ["case0"]
    assert widget.session.grouping.channels_of("case0") == ["case0", "case0_0001"]
    assert viewer.layers["case0_0001"].blending == "additive"
    names = [layer.name for layer in viewer.layers]
    assert names.index("case0 labels") > max(names.index("case0"), names.index("case0_0001"))  # labels on top
    widget.workspace.close()
