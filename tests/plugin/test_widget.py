"""The dock: training in a thread, result layers, Stop, merge and undo, models, bad input."""
import time

import numpy as np
import pytest
from plugin_helpers import cube_case, fast_settings, wait_done

from napari_dmd.plugin._layers import role, source
from napari_dmd.plugin.results import rank_slices


def errors(notes):
    return [m for s, m in notes if "error" in s]


def test_dock_opens_and_pairs_labels_with_their_image(dock):
    viewer, widget = dock
    assert widget.pairs() == {"case0": "case0 labels", "case1": None}
    assert "1 labeled + 1 unlabeled" in widget.classes_label.text()
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_training_produces_results_without_touching_user_labels(dock, qtbot, notes):
    viewer, widget = dock
    before = viewer.layers["case0 labels"].data.copy()
    n_layers = len(viewer.layers)
    widget.start()
    assert widget.worker is not None and widget.stop_button.isEnabled()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    f = widget.last_finished
    assert f is not None and f.iteration == 2 and not f.stopped
    assert f.checkpoint is not None and f.checkpoint.is_file()
    for image in ("case0", "case1"):
        pred = viewer.layers[f"{image} prediction"]
        dis = viewer.layers[f"{image} disagreement"]
        assert (role(pred), role(dis), source(pred)) == ("prediction", "disagreement", image)
        assert pred.data.shape == dis.data.shape == viewer.layers[image].data.shape
        assert tuple(pred.scale) == tuple(dis.scale) == (2.0, 1.0, 1.0)
        assert 0 <= dis.data.min() and dis.data.max() <= 1 and dis.blending == "additive"
    assert len(viewer.layers) == n_layers + 4
    np.testing.assert_array_equal(viewer.layers["case0 labels"].data, before)
    assert widget.ranking.rowCount() == 32  # 2 volumes × 16 slices
    assert widget.progress.value() == 2 and "ETA" in widget.progress.format()
    assert len(widget.curves.iterations) >= 2
    assert widget.warm_start.isChecked() and widget.save_button.isEnabled()

    # "label this next": clicking a ranked row shows that image and moves to that slice
    row = widget.ranking.rowCount() - 1
    image, index = widget.ranking.item(row, 0).data(0x0100)
    widget.ranking.cellClicked.emit(row, 0)
    layer = viewer.layers[image]
    assert round(layer.world_to_data(viewer.dims.point)[0]) == index
    assert viewer.layers.selection.active.name == f"{image} prediction"
    other = "case1" if image == "case0" else "case0"
    assert layer.visible and not viewer.layers[other].visible


def test_stop_ends_training_early_and_keeps_a_checkpoint(dock, qtbot):
    viewer, widget = dock
    widget.iterations.setValue(100_000)
    widget.refresh_every.setValue(100_000)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget)
    f = widget.last_finished
    assert f.stopped and f.iteration < 100_000 and f.checkpoint.is_file()
    assert "case0 prediction" in viewer.layers  # final predictions after Stop


def test_event_loop_keeps_running_during_training(dock, qtbot, capsys):
    """The longest gap between 5 ms timer ticks while training runs (printed; README figure)."""
    from qtpy.QtCore import QTimer

    viewer, widget = dock
    fast_settings(widget, widget.run_folder.text(), iterations=4, refresh_every=2)
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    widget.start()
    wait_done(qtbot, widget)
    timer.stop()
    gaps = np.diff(ticks)
    with capsys.disabled():
        print(f"\nlongest event-loop stall during training: {gaps.max() * 1000:.0f} ms over {len(ticks)} "
              f"ticks of a 5 ms timer (99th percentile {np.percentile(gaps, 99) * 1000:.0f} ms, "
              f"mean {gaps.mean() * 1000:.1f} ms)")
    assert len(ticks) > 20
    assert gaps.max() < 2.0


def test_merge_into_labels_and_undo(dock, qtbot):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    labels = viewer.layers["case0 labels"]
    before = labels.data.copy()
    pred = viewer.layers["case0 prediction"]
    pred.data = np.zeros_like(pred.data)
    pred.data[7, 2:6, 2:6] = 1  # the "edited" prediction differs from the labels on slice 7
    viewer.dims.set_point(0, 7 * 2.0)
    viewer.layers.selection.active = pred
    record = widget.merge_prediction(whole=False)
    assert record is not None and record.count > 0
    np.testing.assert_array_equal(labels.data[7], pred.data[7])
    np.testing.assert_array_equal(np.delete(labels.data, 7, 0), np.delete(before, 7, 0))
    assert widget.undo_button.isEnabled()
    widget.undo_merge()
    np.testing.assert_array_equal(labels.data, before)
    widget.merge_prediction(whole=True)
    np.testing.assert_array_equal(labels.data, pred.data)
    labels.undo()  # napari's own undo (Ctrl+Z) reverts a merge in one step
    np.testing.assert_array_equal(labels.data, before)

    # an image without labels gets a new '<image> labels' layer; undo removes it again
    pred = viewer.layers["case1 prediction"]
    pred.data = np.zeros_like(pred.data)
    pred.data[3:6, 4:9, 4:9] = 1
    widget.merge_prediction(pred, whole=True)
    np.testing.assert_array_equal(viewer.layers["case1 labels"].data, pred.data)
    widget.refresh_table()
    assert widget.pairs()["case1"] == "case1 labels"
    widget.undo_merge()
    assert "case1 labels" not in viewer.layers


def test_a_refresh_never_overwrites_corrections_in_progress(dock, qtbot, notes):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    pred = viewer.layers["case0 prediction"]
    ys, xs = np.nonzero(np.ones_like(pred.data[5]))
    pred.data_setitem((np.full(ys.size, 5), ys, xs), 1 - pred.data[5, ys, xs])  # the user paints slice 5
    corrected = pred.data.copy()
    widget.predict()
    wait_done(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["case0 prediction"].data, corrected)
    assert any("unmerged edits" in m for s, m in notes if "warning" in s)
    widget.merge_prediction(pred, whole=True)  # every correction in the labels: refreshes resume
    pred.data = np.full_like(pred.data, 3)  # not a class of the model
    widget.predict()
    wait_done(qtbot, widget)
    assert viewer.layers["case0 prediction"].data.max() <= 1


def test_save_load_predict_and_retrain_from_the_loaded_model(dock, qtbot, tmp_path, notes):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    saved = widget.save_model(tmp_path / "mine.pt")
    assert saved.is_file()
    for layer in [la for la in viewer.layers if role(la)]:
        viewer.layers.remove(layer)
    widget.model = None
    assert widget.load_model(saved)
    widget.predict()
    wait_done(qtbot, widget)
    assert "case0 prediction" in viewer.layers and "case1 disagreement" in viewer.layers
    assert widget.warm_start.isChecked()
    widget.run_folder.setText(str(tmp_path / "run2"))
    widget.start()  # warm start from the loaded model
    assert widget.worker is not None
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert widget.model_path == tmp_path / "run2" / "model.pt" and widget.model_path.is_file()


def test_a_checkpoint_that_does_not_load_is_a_notification(dock, tmp_path, notes):
    viewer, widget = dock
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    assert not widget.load_model(bad)
    assert any("not a napari-dmd checkpoint" in m for m in errors(notes))
    assert widget.model is None


def test_bad_input_notifies_and_keeps_every_layer(dock, notes):
    viewer, widget = dock
    viewer.add_labels(np.zeros((16, 32, 31), np.uint8), name="wrong labels")
    widget.refresh_table()
    widget.table.cellWidget(0, 2).setCurrentText("wrong labels")
    n = len(viewer.layers)
    widget.start()
    assert widget.worker is None
    assert any("shape" in m for m in errors(notes))
    widget.table.cellWidget(0, 2).setCurrentText("case0 labels")
    viewer.layers["case0 labels"].data = np.zeros((16, 32, 32), np.uint8)
    widget.start()
    assert widget.worker is None and any("empty" in m for m in errors(notes))
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((2, 4, 8, 8)), name="movie")
    widget.refresh_table()
    rows = {widget.table.item(r, 1).text(): widget.table.item(r, 3).text() for r in range(widget.table.rowCount())}
    assert "RGB" in rows["photo"] and "4D" in rows["movie"]
    assert len(viewer.layers) == n + 2


def test_no_unlabeled_image_trains_supervised_only_and_says_so(dock, qtbot, notes):
    viewer, widget = dock
    viewer.layers.remove("case1")
    widget.refresh_table()
    widget.start()
    wait_done(qtbot, widget)
    assert any(m.startswith("no unlabeled image") for _, m in notes)
    assert not errors(notes), notes
    assert "case0 prediction" in viewer.layers


def test_image_deleted_while_training(dock, qtbot, notes):
    viewer, widget = dock
    widget.iterations.setValue(4)
    widget.start()
    viewer.layers.remove("case1")
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert "case1 prediction" not in viewer.layers and "case0 prediction" in viewer.layers
    assert any("case1" in m and "removed" in m for _, m in notes)


def test_closing_the_dock_stops_training(dock, qtbot):
    viewer, widget = dock
    widget.iterations.setValue(100_000)
    widget.start()
    control = widget.control
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    viewer.window.remove_dock_widget(widget)
    assert control.done.is_set() and control.aborted
    assert widget.last_finished is None or widget.last_finished.aborted


def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    img, lab = cube_case(0)
    viewer.add_image(img, name="a")
    viewer.add_labels(lab, name="a labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run", iterations=100_000)
    qtbot.wait(10)  # lets the dock find its window
    widget.start()
    control = widget.control
    qtbot.waitUntil(lambda: widget.progress.value() >= 1, timeout=60_000)
    viewer.close()
    assert control.done.is_set() and control.aborted
    assert (tmp_path / "run" / "model.pt").is_file()  # the last checkpoint is kept


def test_2d_image_trains_with_the_2d_unet(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    img, lab = cube_case(3, shape=(48, 48))
    viewer.add_image(img, name="slide")
    viewer.add_labels(lab, name="slide labels")
    viewer.add_image(cube_case(4, shape=(48, 48))[0], name="slide2")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run", patch="32,32")
    widget.start()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert widget.model.ndim == 2
    assert viewer.layers["slide prediction"].data.shape == (48, 48)
    assert widget.ranking.rowCount() == 2 and widget.ranking.item(0, 2).text() == "—"
    widget.shutdown()


def test_rank_slices_uses_means_and_sorts():
    ranked = rank_slices({"a": np.array([0.1, 0.5]), "b": np.array([0.3])}, {"a": 3, "b": 2})
    assert [(r.image, r.index) for r in ranked] == [("a", 1), ("b", None), ("a", 0)]


def test_parse_patch():
    from napari_dmd.errors import DataError
    from napari_dmd.plugin.widget import parse_patch

    assert parse_patch(" auto ", 3) is None and parse_patch("", 2) is None
    assert parse_patch("32, 48,32", 3) == (32, 48, 32) and parse_patch("64x64", 2) == (64, 64)
    for bad in ("32,32", "a,b,c", "0,16,16"):
        with pytest.raises(DataError, match="patch size"):
            parse_patch(bad, 3)


def test_advanced_settings_reach_the_training_config(dock):
    viewer, widget = dock
    widget.lambda_distill.setValue(2.5)
    widget.lambda_rampup.setValue(40)
    widget.temperature.setValue(1.93)
    widget.lr_step.setValue(7)
    widget.foreground_fraction.setValue(0.33)
    cfg = widget.config(3, ("background", "a", "b"), 3)
    assert (cfg.lambda_distill, cfg.lambda_rampup, cfg.temperature, cfg.lr_step) == (2.5, 40, 1.93, 7)
    assert cfg.foreground_fraction == 0.33
    assert cfg.patch_size == (16, 32, 32) and cfg.device == "cpu" and cfg.precision == "fp32"
