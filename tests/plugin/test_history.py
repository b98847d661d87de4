"""One history: merges, 'Undo merge', Ctrl+Z and redo move the labels, the review record and the strokes
together; reviewed background trains; the ranking skips the slab just reviewed and numbers slices as
napari's slider does; time is told within the minute limit. Results are handed to the dock directly."""
import numpy as np

from plugin_helpers import SHAPE, inject, wait_done


def prediction_of(viewer, image):
    from napari_dmd.plugin._layers import PREDICTION, role, source

    return next(layer for layer in viewer.layers if role(layer) == PREDICTION and source(layer) == image)


def strokes_on(pred, index):
    """The user paints 18 voxels on slice ``index`` of a prediction layer (one stroke)."""
    ys, xs = np.meshgrid(np.arange(20, 23), np.arange(20, 26), indexing="ij")
    with pred.block_history():
        pred.data_setitem((np.full(18, index), ys.ravel(), xs.ravel()), 1)


def unlabeled_case1(viewer, widget, index):
    """case1 gets empty labels; the model predicted nothing; the user's strokes on slice ``index``."""
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="case1 labels", scale=(2.0, 1.0, 1.0))
    inject(widget, "case1", np.zeros(SHAPE, np.uint8))
    pred = prediction_of(viewer, "case1")
    strokes_on(pred, index)
    viewer.dims.set_point(0, index * 2.0)
    return viewer.layers["case1 labels"], pred


def test_merge_undo_merge_writes_the_strokes_again(dock):
    viewer, widget = dock
    labels, pred = unlabeled_case1(viewer, widget, 6)
    assert widget.merge_prediction(pred, whole=False).count == 18
    rec = widget.session.reviewed["case1 labels"]
    assert rec.slices == {6}
    widget.next.undo_button.click()
    assert not labels.data.any() and not rec.slices
    assert widget.merge_prediction(pred, whole=False).count == 18  # the strokes are still strokes
    assert int(labels.data.sum()) == 18 and rec.slices == {6}


def test_merge_after_undo_merge_of_a_merge_that_made_the_labels_layer(dock):
    viewer, widget = dock
    widget.show_case("case1")
    inject(widget, "case1", np.zeros(SHAPE, np.uint8))  # case1 has no labels layer yet
    pred = prediction_of(viewer, "case1")
    strokes_on(pred, 6)
    viewer.dims.set_point(0, 12.0)
    viewer.layers.selection.active = pred
    assert widget.merge_prediction(whole=False).count == 18 and "case1 labels" in viewer.layers
    widget.next.undo_button.click()
    assert "case1 labels" not in viewer.layers  # made by the merge, empty again: removed
    assert viewer.layers.selection.active is pred
    widget.next.merge_button.click()  # Merge again, as the user would
    assert int(viewer.layers["case1 labels"].data.sum()) == 18


def test_ctrl_z_and_redo_move_the_review_record_with_the_labels(dock):
    viewer, widget = dock
    labels, pred = unlabeled_case1(viewer, widget, 6)
    widget.merge_prediction(pred, whole=False)
    rec = widget.session.reviewed["case1 labels"]
    labels.undo()  # Ctrl+Z on the labels layer
    assert not labels.data.any() and not rec.slices
    assert "none" in widget.next.review_label.text() or "6" not in widget.next.review_label.text()
    assert widget.merge_prediction(pred, whole=False).count == 18  # strokes again
    labels.undo()
    labels.redo()  # Ctrl+Shift+Z: the merge and its review come back together
    assert int(labels.data.sum()) == 18 and rec.slices == {6}
    widget.next.undo_button.click()  # 'Undo merge' is the same step: Ctrl+Z after it does not re-apply it
    labels.undo()
    assert not labels.data.any() and not rec.slices


def test_ctrl_z_of_a_stroke_unmarks_the_slice_it_made_reviewed_and_redo_marks_it_again(dock):
    viewer, widget = dock
    labels = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="case1 labels", scale=(2.0, 1.0, 1.0))
    rec = widget.session.reviewed["case1 labels"]
    labels.paint((4, 10, 10), 1)  # one brush stroke on slice 4, nothing reviewed before
    assert rec.slices == {4}
    labels.paint((4, 20, 20), 1)  # a second stroke on the slice now reviewed
    labels.undo()
    assert rec.slices == {4}  # that stroke did not make it reviewed: undoing it leaves it so
    labels.undo()  # Ctrl+Z of the stroke that made slice 4 reviewed
    assert not labels.data.any() and not rec.slices
    widget.refresh_view()
    assert "reviewed slices none" in widget.next.review_label.text()
    labels.redo()  # Ctrl+Shift+Z
    assert rec.slices == {4} and labels.data.any()
    assert widget.next.undo_button.isEnabled() is False  # a stroke is no merge: 'Undo merge' stays off


def test_undo_merge_after_later_edits_keeps_them(dock):
    viewer, widget = dock
    labels, pred = unlabeled_case1(viewer, widget, 6)
    widget.merge_prediction(pred, whole=False)
    labels.data_setitem((np.array([9]), np.array([1]), np.array([1])), 1)  # a later stroke on slice 9
    rec = widget.session.reviewed["case1 labels"]
    widget.next.undo_button.click()
    assert labels.data[9, 1, 1] == 1 and int(labels.data.sum()) == 1 and rec.slices == {9}
    labels.undo()  # Ctrl+Z of the reversal: the merge is back
    assert int(labels.data.sum()) == 19 and rec.slices == {6, 9}


def test_reviewed_background_trains_beside_labels_with_structure(dock, qtbot, notes):
    viewer, widget = dock
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="case1 labels", scale=(2.0, 1.0, 1.0))
    inject(widget, "case1", np.zeros(SHAPE, np.uint8))  # the model sees nothing on case1: nor does the expert
    viewer.dims.set_point(0, 0.0)
    record = widget.merge_prediction(prediction_of(viewer, "case1"), whole=False)
    assert record.count == 0 and widget.session.reviewed["case1 labels"].slices == {0}
    widget.start()
    assert widget.worker is not None, notes
    wait_done(qtbot, widget)
    assert widget.last_finished is not None and not any(kind == "error" for kind, _ in notes)
    assert "model saved to" in widget.run.status.text() and "B)" in widget.run.status.text()  # and its size
    saved = widget.model_box.save(widget.session.current.run_dir / "copy.pt")
    widget.settings_box.expand(animate=False)
    widget.settings_box.collapse(animate=False)
    assert widget.model_box.load(saved) and not widget.settings_box.isExpanded()  # Load keeps them folded


def test_a_refusal_is_told_in_full_in_the_status_line_and_predict_waits_for_a_model(dock):
    viewer, widget = dock
    assert not widget.model_box.predict_button.isEnabled()  # no model yet
    viewer.layers["case0 labels"].data = np.zeros(SHAPE, np.uint8)
    widget.start()
    assert widget.worker is None
    text = widget.run.status.text()
    assert text.startswith("Cannot start: ") and "'case0 labels': all background" in text
    assert text.endswith("paint it on a few slices of one of them")
    labels = viewer.layers["case0 labels"]
    labels.paint((5, 10, 10), 1)  # the cause is fixed: the line no longer says it
    widget.refresh_view()
    assert not widget.run.status.text().startswith("Cannot start")


def test_buttons_are_enabled_only_where_they_can_act(dock):
    viewer, widget = dock
    widget.show_case("case1")  # no labels
    assert not widget.next.mark_button.isEnabled() and not widget.next.merge_button.isEnabled()
    widget.show_case("case0")
    assert widget.next.mark_button.isEnabled() and widget.run.start_button.isEnabled()
    inject(widget, "case0", np.zeros(SHAPE, np.uint8))
    viewer.layers.selection.active = prediction_of(viewer, "case0")
    assert widget.next.merge_button.isEnabled()
    widget.settings.set(patch_size="7,7")  # no plan: Start off
    widget.refresh_view()
    assert not widget.run.start_button.isEnabled()


def test_time_left_respects_the_minute_limit_clears_on_stop_and_counts_the_models_iterations(dock):
    import torch

    from napari_dmd.jobs import Control, Started
    from napari_dmd.plan import Plan
    from napari_dmd.training import Progress

    viewer, widget = dock
    plan = Plan(torch.device("cpu"), 3, 2, (16, 32, 32), 2, "fp32")
    run = widget.run
    run.started(Started(plan, "fp32: asked for", 1, 1, 0, 6000, trained_before=57, limit=600.0))
    run.step(Progress(90, 6000, 0.5, 0.1, 0.6, 0.01, 300.0, 40000.0, 0.3, "cpu"))
    assert run.progress.text().startswith("147/6057") and "5:00 left (time limit)" in run.progress.text()
    run.step(Progress(91, 6000, 0.5, 0.1, 0.6, 0.01, 1.0, 50.0, 0.3, "cpu"))
    assert "0:50 left" in run.progress.text() and "limit" not in run.progress.text()
    widget.control, widget._mode = Control(), "train"
    widget.stop()
    run.step(Progress(92, 6000, 0.5, 0.1, 0.6, 0.01, 301.0, 40000.0, 0.3, "cpu"))  # the step under way
    assert "left" not in run.progress.text() and "stopping" in run.progress.text()
    widget.control = None
    assert "distillation" not in run.status.text()
    assert "Unsure" not in widget.next.ranking.horizontalHeaderItem(0).text()


def test_the_ranking_skips_the_slab_just_reviewed_and_numbers_slices_as_the_slider(dock):
    viewer, widget = dock
    img = np.asarray(viewer.layers["case1"].data)
    viewer.add_image(img, name="shifted", scale=(2.0, 1.0, 1.0), translate=(2.0, 0.0, 0.0))  # one slice later
    viewer.add_labels(np.zeros(SHAPE, np.uint8), name="shifted labels", scale=(2.0, 1.0, 1.0),
                      translate=(2.0, 0.0, 0.0))
    d = np.full(SHAPE, 0.05, np.float32)
    d[4:9] = 0.9  # the model doubts slices 4-8
    inject(widget, "shifted", np.zeros(SHAPE, np.uint8), d)  # the only image ranked (case0 is reviewed whole)
    table = widget.next.ranking
    first = table.item(0, 0).data(0x0100)
    assert first == ("shifted", 6) and table.item(0, 2).text() == "7"  # as napari's slider shows slice 6
    assert table.item(0, 0).text().endswith("%")
    widget.session.mark("shifted", 6)  # reviewed: the model has not learnt from it yet
    widget._fill_ranking()
    indices = [table.item(r, 0).data(0x0100)[1] for r in range(table.rowCount())]
    assert indices and not any(4 <= i <= 8 for i in indices)
    inject(widget, "shifted", np.zeros(SHAPE, np.uint8), d, iteration=2)  # new scores, after training on it
    assert table.item(0, 0).data(0x0100)[1] in (5, 7)
