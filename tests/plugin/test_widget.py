"""The dock: training in a thread, result layers, Stop, models, bad input, closing."""
import time

import numpy as np
import pytest

from napari_dmd.plugin._layers import role, source

from plugin_helpers import cube_case, fast_settings, wait_done


def errors(notes):
    return [m for s, m in notes if "error" in s]


def test_dock_opens_and_pairs_labels_with_their_image(dock):
    viewer, widget = dock
    assert widget.session.pairs() == {"case0": "case0 labels", "case1": None}
    assert "1 labeled + 1 unlabeled" in widget.data.summary.text()
    assert widget.run.start_button.isEnabled() and not widget.run.stop_button.isEnabled()
    assert widget.table.item(0, 3).text().startswith("16/16 reviewed, ")


def test_training_produces_results_without_touching_user_labels(dock, qtbot, notes):
    viewer, widget = dock
    before = viewer.layers["case0 labels"].data.copy()
    n_layers = len(viewer.layers)
    widget.start()
    assert widget.worker is not None and widget.run.stop_button.isEnabled()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    f = widget.last_finished
    assert f is not None and f.iteration == 2 and not f.stopped
    assert f.checkpoint is not None and f.checkpoint.is_file()
    assert (f.checkpoint.parent / "reviewed.json").is_file()  # the run keeps what was reviewed
    for image in ("case0", "case1"):
        pred = viewer.layers[f"{image} prediction"]
        dis = viewer.layers[f"{image} disagreement"]
        assert (role(pred), role(dis), source(pred)) == ("prediction", "disagreement", image)
        assert pred.data.shape == dis.data.shape == viewer.layers[image].data.shape
        assert tuple(pred.scale) == tuple(dis.scale) == (2.0, 1.0, 1.0)
        assert 0 <= dis.data.min() and dis.data.max() <= 1 and dis.blending == "additive"
    assert len(viewer.layers) == n_layers + 4
    np.testing.assert_array_equal(viewer.layers["case0 labels"].data, before)
    assert widget.run.progress.value() == 2 and "ETA" in widget.run.progress.format()
    assert len(widget.run.curves.iterations) >= 2
    assert widget.settings.warm_start.value and widget.model_box.save_button.isEnabled()
    assert widget.control._trainer is None  # the finished run holds no trainer, optimizer or volumes

    # "label this next": clicking a ranked row shows that image and moves to that slice
    row = widget.next.ranking.rowCount() - 1
    image, index = widget.next.ranking.item(row, 0).data(0x0100)
    widget.next.ranking.cellClicked.emit(row, 0)
    layer = viewer.layers[image]
    assert round(layer.world_to_data(viewer.dims.point)[0]) == index
    assert viewer.layers.selection.active.name == f"{image} prediction"
    other = "case1" if image == "case0" else "case0"
    assert layer.visible and not viewer.layers[other].visible


def test_stop_ends_training_early_and_keeps_a_checkpoint(dock, qtbot):
    viewer, widget = dock
    widget.settings.set(iterations=100_000, refresh_every=100_000)
    widget.start()
    qtbot.waitUntil(lambda: widget.run.progress.value() >= 1, timeout=60_000)
    widget.stop()
    wait_done(qtbot, widget)
    f = widget.last_finished
    assert f.stopped and f.iteration < 100_000 and f.checkpoint.is_file()
    assert "case0 prediction" in viewer.layers  # final predictions after Stop


def test_event_loop_keeps_running_during_training(dock, qtbot, capsys):
    """The longest gap between 5 ms timer ticks while training runs (printed; README figure)."""
    from qtpy.QtCore import QTimer

    viewer, widget = dock
    fast_settings(widget, widget.settings.run_folder.value, iterations=4, refresh_every=2)
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


def test_save_load_predict_and_retrain_from_the_loaded_model(dock, qtbot, tmp_path, notes):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    saved = widget.model_box.save(tmp_path / "mine.pt")
    assert saved.is_file()
    for layer in [la for la in viewer.layers if role(la)]:
        viewer.layers.remove(layer)
    widget.session.model = None
    assert widget.model_box.load(saved)
    widget.predict()
    wait_done(qtbot, widget)
    assert "case0 prediction" in viewer.layers and "case1 disagreement" in viewer.layers
    assert widget.run.progress.format() == "idle"  # no stale bar after a predict
    assert widget.settings.warm_start.value
    widget.settings.set(run_folder=str(tmp_path / "run2"))
    widget.start()  # warm start from the loaded model
    assert widget.worker is not None
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert widget.session.model_path == tmp_path / "run2" / "model.pt" and widget.session.model_path.is_file()


def test_curves_and_the_iteration_count_continue_across_warm_starts(dock, qtbot, tmp_path):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    first = widget.session.model_path
    widget.start()  # the same run folder: a new one is made, the first model stays
    wait_done(qtbot, widget)
    assert widget.session.model_path != first and first.is_file()
    assert widget.session.model.iteration == 4 and "4 iterations" in widget.model_box.label.text()
    assert widget.run.curves.iterations[-1] == 4 and widget.run.curves.iterations[0] == 1


def test_a_failure_leaves_no_stale_progress_bar(dock, qtbot, notes):
    viewer, widget = dock
    widget.settings.set(device="cuda:7")  # no such GPU here, or an index past the GPUs
    widget.start()
    wait_done(qtbot, widget)
    assert errors(notes) and widget.run.progress.format() == "failed" and widget.run.progress.value() == 0


def test_a_checkpoint_that_does_not_load_is_a_notification(dock, tmp_path, notes):
    viewer, widget = dock
    bad = tmp_path / "bad.pt"
    bad.write_text("not a model")
    assert not widget.model_box.load(bad)
    assert any("not a napari-dmd checkpoint" in m for m in errors(notes))
    assert widget.session.model is None


def test_bad_input_notifies_and_keeps_every_layer(dock, qtbot, notes):
    viewer, widget = dock
    viewer.add_labels(np.zeros((16, 32, 31), np.uint8), name="wrong labels")
    widget.session.pair("case0", "wrong labels")
    n = len(viewer.layers)
    widget.start()
    assert widget.worker is None
    assert any("shape" in m for m in errors(notes))
    widget.session.pair("case0", "case0 labels")
    viewer.layers["case0 labels"].data = np.zeros((16, 32, 32), np.uint8)
    widget.start()
    assert widget.worker is None and any("empty" in m for m in errors(notes))
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="photo", rgb=True)
    viewer.add_image(np.zeros((2, 4, 8, 8)), name="movie")
    widget.refresh_view()
    rows = {widget.table.item(r, 1).text(): widget.table.item(r, 3).text() for r in range(widget.table.rowCount())}
    assert "RGB" in rows["photo"] and "4D" in rows["movie"]
    assert "'wrong labels' (no image of shape 16×32×31)" in widget.data.summary.text()  # says why it is unpaired
    assert len(viewer.layers) == n + 2


def test_no_unlabeled_image_trains_supervised_only_and_says_so(dock, qtbot, notes):
    viewer, widget = dock
    viewer.layers.remove("case1")
    widget.start()
    wait_done(qtbot, widget)
    assert any(m.startswith("no unlabeled image") for _, m in notes)
    assert not errors(notes), notes
    assert "case0 prediction" in viewer.layers


def test_image_deleted_while_training(dock, qtbot, notes):
    viewer, widget = dock
    widget.settings.set(iterations=4)
    widget.start()
    viewer.layers.remove("case1")
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert "case1 prediction" not in viewer.layers and "case0 prediction" in viewer.layers
    assert any("case1" in m and "no longer in the viewer" in m for _, m in notes)


def test_closing_the_dock_stops_training_without_blocking(dock, qtbot):
    viewer, widget = dock
    widget.settings.set(iterations=100_000)
    widget.start()
    control = widget.control
    qtbot.waitUntil(lambda: widget.run.progress.value() >= 1, timeout=60_000)
    t0 = time.perf_counter()
    viewer.window.remove_dock_widget(widget)
    assert time.perf_counter() - t0 < 0.5 and control.aborted
    qtbot.waitUntil(control.done.is_set, timeout=60_000)


def test_closing_the_viewer_stops_training_and_leaves_a_checkpoint(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    img, lab = cube_case(0)
    viewer.add_image(img, name="a")
    viewer.add_labels(lab, name="a labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run", iterations=100_000)
    qtbot.wait(10)  # lets the dock find its window
    widget.start()
    control = widget.control
    qtbot.waitUntil(lambda: widget.run.progress.value() >= 1, timeout=60_000)
    t0 = time.perf_counter()
    viewer.close()
    assert time.perf_counter() - t0 < 2.0 and control.aborted  # the GUI is not held up by the worker
    qtbot.waitUntil(control.done.is_set, timeout=60_000)
    assert (tmp_path / "run" / "model.pt").is_file()  # the last checkpoint is kept


def test_2d_image_trains_with_the_2d_unet(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    img, lab = cube_case(3, shape=(48, 48))
    viewer.add_image(img, name="slide")
    viewer.add_labels(lab, name="slide labels")
    viewer.add_image(cube_case(4, shape=(48, 48))[0], name="slide2")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run", patch_size=(32, 32))
    widget.start()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert widget.session.model.ndim == 2
    assert viewer.layers["slide prediction"].data.shape == (48, 48)
    # the labeled slide is reviewed whole: only the other one is suggested
    assert widget.next.ranking.rowCount() == 1 and widget.next.ranking.item(0, 1).text() == "slide2"
    assert widget.next.ranking.item(0, 2).text() == "—"
    widget.shutdown()


def test_parse_patch():
    from napari_dmd.errors import DataError
    from napari_dmd.plugin.settings_form import parse_patch

    assert parse_patch(" auto ", 3) is None and parse_patch("", 2) is None
    assert parse_patch("32, 48,32", 3) == (32, 48, 32) and parse_patch("64x64", 2) == (64, 64)
    for bad in ("32,32", "a,b,c", "0,16,16"):
        with pytest.raises(DataError, match="patch size"):
            parse_patch(bad, 3)
