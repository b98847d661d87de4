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
    viewer.layers.selection.active = viewer.layers["case0 labels"]  # the user paints while it trains
    widget.start()
    assert widget.worker is not None and widget.run.stop_button.isEnabled()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    f = widget.last_finished
    assert f is not None and f.iteration == 2 and not f.stopped
    assert f.checkpoint is not None and f.checkpoint.is_file()
    assert (f.checkpoint.parent / "reviewed.json").is_file()  # the run keeps what was reviewed
    pred, dis = viewer.layers["case0 pred"], viewer.layers["case0 unsure"]  # the case in view
    assert (role(pred), role(dis), source(pred)) == ("prediction", "disagreement", "case0")
    assert pred.data.shape == dis.data.shape == viewer.layers["case0"].data.shape
    assert tuple(pred.scale) == tuple(dis.scale) == (2.0, 1.0, 1.0)
    assert 0 <= dis.data.min() and dis.data.max() <= 1 and not dis.visible
    assert len(viewer.layers) == n_layers + 2 and "case1" in widget.session.current.results.latest  # case1: when shown
    np.testing.assert_array_equal(viewer.layers["case0 labels"].data, before)
    # the new result layers leave the user's brush on their labels (given back at the next event-loop turn)
    qtbot.waitUntil(lambda: getattr(viewer.layers.selection.active, "name", None) == "case0 labels", timeout=2000)
    assert widget.run.progress.value() == 2 and "finished" in widget.run.progress.format()  # no stale ETA
    assert len(widget.run.curves.iterations) >= 2
    assert widget.settings.warm_start.value and widget.model_box.save_button.isEnabled()
    assert widget.control._trainer is None  # the finished run holds no trainer, optimizer or volumes

    # "label this next": clicking a ranked row shows that image and moves to that slice
    row = widget.next.ranking.rowCount() - 1
    image, index = widget.next.ranking.item(row, 0).data(0x0100)
    widget.next.ranking.cellClicked.emit(row, 0)
    layer = viewer.layers[image]
    assert round(layer.world_to_data(viewer.dims.point)[0]) == index
    assert viewer.layers.selection.active.name == f"{image} pred"
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
    assert "case0 pred" in viewer.layers  # final predictions after Stop


def test_event_loop_keeps_running_during_training(dock, qtbot, capsys, monkeypatch):
    """The longest gap between 5 ms timer ticks while training runs (printed; README figure). The result
    layers are made once, a layer per event-loop turn, and updated in place at the next refresh; the
    disagreement's contrast is computed in the worker thread."""
    import threading

    from qtpy.QtCore import QTimer

    from napari_dmd import jobs
    from napari_dmd.plugin import result_layers

    on_gui, percentile = [], jobs.contrast_top

    def contrast_top(d):
        on_gui.append(threading.current_thread() is threading.main_thread())
        return percentile(d)

    monkeypatch.setattr(jobs, "contrast_top", contrast_top)
    monkeypatch.setattr(result_layers, "contrast_top", contrast_top)
    viewer, widget = dock
    fast_settings(widget, widget.settings.run_folder.value, iterations=4, refresh_every=2)
    added = []
    viewer.layers.events.inserted.connect(lambda e: added.append(e.value.name))
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
              f"mean {gaps.mean() * 1000:.1f} ms, {int((gaps > 0.1).sum())} gaps over 100 ms)")
    assert len(ticks) > 20  # the event loop ran during training (its stalls are measured in benchmarks/threads.py)
    assert sorted(added) == ["case0 pred", "case0 unsure"]  # the case in view only
    assert len(on_gui) == 3 and not any(on_gui)  # the case in view at iteration 2, both at the end; none on the GUI


def test_save_load_predict_and_retrain_from_the_loaded_model(dock, qtbot, tmp_path, notes):
    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    saved = widget.model_box.save(tmp_path / "mine.pt")
    assert saved.is_file()
    for layer in [la for la in viewer.layers if role(la)]:
        viewer.layers.remove(layer)
    widget.session.current.model = None
    assert widget.run.curves.iterations  # the run's curves
    assert widget.model_box.load(tmp_path / "run" / "model.pt")
    assert widget.run.curves.iterations == [1, 2]  # the loaded run's log
    assert widget.model_box.load(saved)
    assert widget.run.curves.iterations == []  # no log beside it: not the previous run's curves
    widget.predict()
    wait_done(qtbot, widget)
    assert "case0 pred" in viewer.layers and set(widget.session.current.results.latest) == {"case0", "case1"}
    assert widget.run.progress.format() == "idle"  # no stale bar after a predict
    assert widget.settings.warm_start.value
    widget.settings.set(run_folder=str(tmp_path / "run2"))
    widget.start()  # warm start from the loaded model
    assert widget.worker is not None
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert widget.session.current.path == tmp_path / "run2" / "model.pt" and widget.session.current.path.is_file()


def test_the_model_iteration_count_and_curves_continue_across_warm_starts_save_and_reopen(
        dock, qtbot, tmp_path, make_napari_viewer):
    from napari_dmd.checkpoint import load_model
    from napari_dmd.session import reviewed_dice

    viewer, widget = dock
    widget.start()
    wait_done(qtbot, widget)
    first, before = widget.session.current.path, reviewed_dice(widget.session)
    widget.start()  # the same run folder: a new one is made, the first model stays
    wait_done(qtbot, widget)
    assert widget.session.current.path != first and first.is_file()
    after = reviewed_dice(widget.session)  # what the continued run changed on the reviewed slices, told
    assert f"Dice on your reviewed slices {before:.3f} → {after:.3f}" in widget.run.status.text()
    assert widget.session.current.model.model_iterations == 4 and "4 iterations" in widget.model_box.label.text()
    assert widget.run.curves.iterations[-1] == 4 and widget.run.curves.iterations[0] == 1
    assert "at iteration 4" in widget.run.status.text()
    saved = widget.model_box.save(tmp_path / "mine.pt")
    assert load_model(saved).model_iterations == 4  # the file knows, not only the dock

    reopened = make_napari_viewer()  # a new session: only the file carries the count
    img, lab = cube_case(0)
    reopened.add_image(img, name="case0")
    reopened.add_labels(lab, name="case0 labels")
    _, again = reopened.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(again, tmp_path / "run3")
    assert again.model_box.load(saved) and "4 iterations" in again.model_box.label.text()
    again.start()  # continues from the loaded model
    wait_done(qtbot, again)
    assert "6 iterations" in again.model_box.label.text()
    assert again.run.curves.iterations == [5, 6]
    assert load_model(tmp_path / "run3" / "model.pt").model_iterations == 6
    again.shutdown()


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
    assert widget.session.current.model is None


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
    assert rows["photo"] == "3 channels (red, green, blue) · unlabeled" and "4D" in rows["movie"]  # RGB: 3 channels
    assert "'wrong labels' (no image of shape 16×32×31)" in widget.data.summary.text()  # says why it is unpaired
    assert len(viewer.layers) == n + 2


def test_no_unlabeled_image_trains_supervised_only_and_says_so(dock, qtbot, notes):
    viewer, widget = dock
    viewer.layers.remove("case1")
    widget.start()
    wait_done(qtbot, widget)
    assert widget.run.notes.text().startswith("no unlabeled image") and widget.run.notes.isVisibleTo(widget)
    assert not notes, notes  # said in the dock, not over the canvas
    assert "case0 pred" in viewer.layers


def test_image_deleted_while_training(dock, qtbot, notes):
    viewer, widget = dock
    widget.settings.set(iterations=4)
    widget.start()
    viewer.layers.remove("case1")
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert "case1 pred" not in viewer.layers and "case0 pred" in viewer.layers
    assert any("case1" in m and "no longer in the viewer" in m for _, m in notes)


class WorkerGate:
    """Holds the dock's worker thread inside its run (at its next message) once ``hold`` is called, until
    ``release`` is set: what the GUI thread does meanwhile cannot have waited for the worker."""

    def __init__(self, monkeypatch) -> None:
        import threading

        from napari_dmd.plugin.job_thread import Runner

        self.held, self.release, self.armed = threading.Event(), threading.Event(), False
        emit = Runner._emit

        def gated(signal, *args):
            if self.armed and threading.current_thread().name == "napari-dmd worker":
                self.held.set()
                self.release.wait(120)
            emit(signal, *args)

        monkeypatch.setattr(Runner, "_emit", staticmethod(gated))

    def hold(self, qtbot) -> None:
        self.armed = True
        qtbot.waitUntil(self.held.is_set, timeout=60_000)


def test_closing_the_dock_stops_training_without_blocking(dock, qtbot, monkeypatch):
    viewer, widget = dock
    gate = WorkerGate(monkeypatch)
    widget.settings.set(iterations=100_000)
    widget.start()
    control = widget.control
    qtbot.waitUntil(lambda: widget.run.progress.value() >= 1, timeout=60_000)
    gate.hold(qtbot)
    viewer.window.remove_dock_widget(widget)
    assert control.aborted and not control.done.is_set()  # told to abort; the dock's close did not wait for it
    gate.release.set()
    qtbot.waitUntil(control.done.is_set, timeout=60_000)


def test_closing_the_viewer_stops_training_and_leaves_a_checkpoint(make_napari_viewer, qtbot, tmp_path,
                                                                   monkeypatch):
    """The GUI is not held up by the worker: the close returns while the worker is held inside its run, and the
    worker, told to abort, then ends and writes its checkpoint."""
    gate = WorkerGate(monkeypatch)
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
    gate.hold(qtbot)
    viewer.close()
    assert control.aborted and not control.done.is_set()  # told to abort; the close did not wait for it
    gate.release.set()
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
    assert widget.session.current.model.ndim == 2
    assert viewer.layers["slide pred"].data.shape == (48, 48)
    # the labeled slide is reviewed whole: only the other one is suggested
    assert widget.next.ranking.rowCount() == 1 and widget.next.ranking.item(0, 1).text() == "slide2"
    assert widget.next.ranking.item(0, 2).text() == "—"
    widget.shutdown()


def test_parse_patch():
    from napari_dmd.errors import DataError
    from napari_dmd.plan import parse_patch

    assert parse_patch(" auto ", 3) is None and parse_patch("", 2) is None
    assert parse_patch("32, 48,32", 3) == (32, 48, 32) and parse_patch("64x64", 2) == (64, 64)
    for bad in ("32,32", "a,b,c", "0,16,16"):
        with pytest.raises(DataError, match="patch size"):
            parse_patch(bad, 3)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """The precision verdicts and measured speeds of this test only."""
    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_precision_that_ran_is_said_after_the_run_and_before_the_next(dock, qtbot, monkeypatch, own_cache,
                                                                         notes):
    import torch

    from napari_dmd import precision as P
    from napari_dmd.plan import display_name

    from faults import NaNFault

    viewer, widget = dock
    widget.settings.set(precision="auto")
    widget.refresh_view()
    plan = widget.settings.plan.text()
    assert f"Start runs on CPU ({display_name(torch.device('cpu'))})" in plan
    assert "checked at Start" in plan or "no native bf16" in plan  # what 'auto' resolves to here
    widget.settings.set(precision="bf16", iterations=5)
    widget.refresh_view()
    assert "precision bf16: bf16 if this machine computes it correctly, else fp32 (checked at Start)" in \
        widget.settings.plan.text()
    # a verdict cached by the engine for this machine and run shape is shown before Start
    monkeypatch.setattr(P, "self_check", lambda dtype, *a, **k: P.Precision(dtype, (), "self-check passed (seeded)"))
    P.choose_precision("bf16", torch.device("cpu"), 3, 1, (2, 1, 16, 32, 32), torch.channels_last_3d)
    widget.refresh_view()
    assert "precision bf16: self-check passed (seeded) (this machine's cached verdict)" in widget.settings.plan.text()

    NaNFault(monkeypatch)  # the bf16 fault the check missed: the run falls back to fp32 at run time
    widget.start()
    wait_done(qtbot, widget)
    status = widget.run.status.text()
    assert "ran in fp32 (continued in fp32 from iteration 3)" in status, status
    assert "precision auto" not in status and "bf16: self-check passed" not in status
    assert len([m for s, m in notes if "warning" in s and "switched to fp32 at iteration 3" in m]) == 1
    assert "precision fp32: 3 bf16 steps gave a non-finite" in widget.settings.plan.text()  # the next run's verdict


def test_the_time_estimate_before_start_is_the_measured_speed_of_these_settings(dock, qtbot, own_cache):
    import json

    from napari_dmd.plan import duration

    viewer, widget = dock
    widget.refresh_view()
    assert "Time: unknown until the first iterations" in widget.settings.plan.text()
    widget.start()
    wait_done(qtbot, widget)
    (speed,) = json.loads((own_cache / "speed.json").read_text()).values()
    assert speed["iteration_s"] > 0 and speed["predict_mvoxel_s"] > 0 and speed["precision"] == "fp32"
    widget.settings.set(iterations=1000, first_refresh=50)
    qtbot.waitUntil(lambda: "1000 iterations" in widget.settings.plan.text(), timeout=2000)  # follows the form
    plan, total = widget.settings.plan.text(), duration(speed["setup_s"] + 1000 * speed["iteration_s"])
    assert f"1000 iterations ≈ {total}" in plan
    assert "(iteration 50)" in plan and f"{speed['iteration_s']:.2f} s/iteration in fp32" in plan
    title = widget.settings_box.text()  # what the folded settings still say
    assert title.startswith("Settings: 1000 it.") and title.endswith(f"≈ {total}")
    widget.settings.set(patch_size=(16, 16, 16))  # another run shape: nothing measured for it
    qtbot.waitUntil(lambda: "unknown until the first iterations" in widget.settings.plan.text(), timeout=2000)


def test_the_ranking_is_on_the_first_screen_of_the_dock_once_results_exist(make_napari_viewer, qtbot, tmp_path):
    """On a 1280×800 window with the sample's 12 images, no scrolling is needed to see 'label this next'."""
    from qtpy.QtCore import QPoint

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open_sample("napari-dmd", "hippocampus")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run", iterations=1)
    widget.start()
    wait_done(qtbot, widget)
    qtbot.wait(50)  # the layout settles
    assert viewer.window._qt_window.height() == 800
    ranking, scroll = widget.next.ranking, widget.scroll
    assert ranking.rowCount() > 0 and scroll.verticalScrollBar().value() == 0
    top, height = ranking.mapTo(scroll.viewport(), QPoint(0, 0)).y(), scroll.viewport().height()
    assert 0 <= top and top + ranking.height() <= height, (top, ranking.height(), height)
    assert not widget.settings_box.isExpanded() and "Settings: 1 it." in widget.settings_box.text()
    table = widget.table
    assert table.rowCount() == 12 and table.viewport().height() >= 12 * table.rowHeight(0)  # every image in view
    assert table.mapTo(scroll.viewport(), QPoint(0, 0)).y() >= 0
    widget.shutdown()


def test_a_refresh_during_training_predicts_the_slab_in_view_first(dock, qtbot, monkeypatch):
    """Clinical-size data (here: the threshold lowered to nothing): a refresh during training predicts only the
    slab around the slice in view of the image in view and shows it; every image is predicted whole at the end,
    and 'label this next' says which images it ranks."""
    from napari_dmd import jobs
    from napari_dmd.config import RANKING_SLAB
    from napari_dmd.plugin.result_layers import go_to

    monkeypatch.setattr(jobs, "REFRESH_WHOLE_MVOXELS", 0)
    viewer, widget = dock
    fast_settings(widget, widget.settings.run_folder.value, iterations=4, refresh_every=2)
    viewer.layers.selection.active = viewer.layers["case1"]
    go_to(viewer, "case1", 10)
    seen, on_message = [], widget._on_message
    widget._on_message = lambda msg: (seen.append(msg), on_message(msg))
    coverage = []
    widget.start()
    qtbot.waitUntil(lambda: any(isinstance(m, jobs.Refreshed) for m in seen), timeout=60_000)
    coverage.append(widget.next.coverage.text())
    wait_done(qtbot, widget)
    results = [m for m in seen if isinstance(m, jobs.ImageResult)]
    first, *final = results
    half = RANKING_SLAB // 2
    assert (first.name, first.iteration, first.rows) == ("case1", 2, (10 - half, 10 + half + 1))
    assert first.labels.shape[0] == RANKING_SLAB and first.disagreement.dtype == np.float16
    assert [(r.name, r.iteration, r.rows) for r in final] == [("case0", 4, None), ("case1", 4, None)]
    assert coverage[0].startswith("Ranks the 0 of 2 images predicted whole")
    assert widget.next.coverage.text() == "Ranks all 2 image(s)."
    assert viewer.layers["case1 pred"].data.shape == viewer.layers["case1"].data.shape


def test_where_dmd_measured_weaker_the_dock_says_so_and_offers_the_supervised_pair(dock, qtbot, monkeypatch):
    from qtpy.QtWidgets import QPushButton

    from napari_dmd import regime

    viewer, widget = dock  # one labeled case and one unlabeled
    monkeypatch.setattr(regime, "MEASURED", (regime.Measured(1, 300, -2.0, -4.0, 4, 8, "hippocampus MRI"),))
    widget.settings.set(iterations=200, lambda_distill=4.0, unlabeled_batch=1)
    widget.refresh_view()
    assert not widget.settings.weaker.isHidden()
    assert "2.0 Dice points below the supervised pair" in widget.settings.regime.text()
    widget.settings.set(iterations=301)  # longer than measured: nothing covers the run
    widget.refresh_view()
    assert widget.settings.weaker.isHidden()
    widget.settings.set(iterations=5)
    widget.refresh_view()
    widget.start()  # said again where the run shows, as the settings fold away
    assert "2.0 Dice points below" in widget.run.notes.text()
    wait_done(qtbot, widget)
    widget.settings.weaker.findChild(QPushButton).click()  # the pair, set up in the form
    assert widget.settings["lambda_distill"].value == 0 and widget.settings["unlabeled_batch"].value == 0
    widget.refresh_view()
    assert widget.settings.weaker.isHidden()
