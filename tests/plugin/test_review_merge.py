"""What was reviewed is what trains: the record, merges that keep reviewed labels, the ranking, the
result layers, the settings form. Results are handed to the dock directly (no training), so these are fast."""
import numpy as np
import pytest

from napari_dmd.jobs import ImageResult
from napari_dmd.ranking import SCORE_HELP, slice_means

from plugin_helpers import SHAPE, cube_case, inject


def go_to_slice(viewer, index, scale=2.0):
    viewer.dims.set_point(0, index * scale)


def test_the_reviewed_record_follows_painting_and_marking_and_survives_save_and_reopen(
        make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    img, _ = cube_case(0)
    viewer.add_image(img, name="case0")
    labels = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="case0 labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    rec = widget.session.reviewed["case0 labels"]
    assert not rec.whole and not rec.slices  # a new labels layer: nothing reviewed yet
    labels.data_setitem((np.array([3, 3]), np.array([4, 5]), np.array([4, 4])), 1)  # the user paints slice 3
    assert rec.slices == {3}
    viewer.layers.selection.active = labels
    go_to_slice(viewer, 9, scale=1.0)
    widget.next.mark_button.click()  # slice 9 holds nothing: reviewed as background
    assert rec.slices == {3, 9} and "reviewed slices 3, 9" in widget.next.review_label.text()
    go_to_slice(viewer, 3, scale=1.0)
    widget.next.unmark_button.click()
    widget.next.mark_button.click()
    assert rec.slices == {3, 9}

    path = tmp_path / "case0_labels.nii.gz"
    labels.save(str(path), plugin="napari-dmd")
    sidecar = tmp_path / "case0_labels.reviewed.json"
    assert sidecar.is_file()
    viewer.layers.remove(labels)
    [reopened] = viewer.open(str(path), plugin="napari-dmd")
    again = widget.session.reviewed[reopened.name]
    assert again.slices == {3, 9} and not again.whole
    widget.refresh_view()
    assert "2/16 reviewed, 1 labeled" in widget.table.item(0, 3).text()


def test_a_merge_never_overwrites_reviewed_labels_without_the_explicit_choice(dock):
    viewer, widget = dock
    labels = viewer.layers["case0 labels"]
    expert = labels.data.copy()
    proposal = np.zeros(SHAPE, np.uint8)  # a model that sees nothing
    inject(widget, "case0", proposal)
    pred = viewer.layers["case0 pred"]
    ys, xs = np.meshgrid(np.arange(2, 6), np.arange(2, 7), indexing="ij")
    pred.data_setitem((np.full(20, 7), ys.ravel(), xs.ravel()), 1)  # the user paints 20 voxels on slice 7
    go_to_slice(viewer, 7)
    viewer.layers.selection.active = pred
    record = widget.merge_prediction(whole=False)
    strokes = np.zeros(SHAPE, bool)
    strokes[7, 2:6, 2:7] = True
    np.testing.assert_array_equal(labels.data[strokes], 1)
    np.testing.assert_array_equal(labels.data[~strokes], expert[~strokes])  # the expert's voxels stay
    assert record.count == int((expert[strokes] != 1).sum())
    assert record.labels.old.dtype == np.uint8 and record.labels.changed.nbytes <= strokes.sum() // 8 + 1  # compact

    widget.corrections.undo()
    np.testing.assert_array_equal(labels.data, expert)
    widget.merge_prediction(pred, whole=True, overwrite=True)  # the explicit choice: the prediction wins
    np.testing.assert_array_equal(labels.data, pred.data)
    labels.undo()  # napari's own undo (Ctrl+Z) reverts a merge in one step
    np.testing.assert_array_equal(labels.data, expert)


def test_merged_predictions_refresh_again_and_unreviewed_slices_take_the_prediction(dock):
    viewer, widget = dock
    labels = viewer.layers["case0 labels"]
    expert = labels.data.copy()
    widget.session.mark("case0", 2, reviewed=False)  # slice 2 is not reviewed any more
    proposal = np.zeros(SHAPE, np.uint8)
    proposal[:, 10:14, 10:14] = 1
    inject(widget, "case0", proposal)
    pred = viewer.layers["case0 pred"]
    pred.data_setitem((np.array([5]), np.array([0]), np.array([0])), 1)  # a stroke on slice 5
    widget.merge_prediction(pred, whole=True)
    np.testing.assert_array_equal(labels.data[2], proposal[2])  # not reviewed: the prediction
    assert labels.data[5, 0, 0] == 1  # the stroke
    keep = np.ones(SHAPE[0], bool)
    keep[[2, 5]] = False
    np.testing.assert_array_equal(labels.data[keep], expert[keep])
    assert widget.session.reviewed["case0 labels"].whole  # the merge marked what it merged
    newer = np.zeros(SHAPE, np.uint8)
    inject(widget, "case0", newer, iteration=2)
    np.testing.assert_array_equal(pred.data, newer)  # every correction merged: the layer refreshes again

    # an image without labels: the merge makes '<image> labels' with the merged slice reviewed
    widget.show_case("case1")
    inject(widget, "case1", proposal)
    go_to_slice(viewer, 4)
    widget.merge_prediction(viewer.layers["case1 pred"], whole=False)
    made = viewer.layers["case1 labels"]
    np.testing.assert_array_equal(made.data[4], proposal[4])
    assert not made.data[np.arange(16) != 4].any()
    assert widget.session.reviewed["case1 labels"].slices == {4}
    assert widget.session.pairs()["case1"] == "case1 labels"
    widget.corrections.undo()
    assert "case1 labels" not in viewer.layers


def test_the_ranking_lists_only_unreviewed_slabs_spread_and_explained(dock):
    viewer, widget = dock
    hot = np.zeros(SHAPE, np.float32)
    hot[:, :8] = np.linspace(0.2, 0.9, SHAPE[0])[:, None, None]  # case0 disagrees most
    inject(widget, "case0", np.zeros(SHAPE, np.uint8), hot)
    inject(widget, "case1", np.zeros(SHAPE, np.uint8), hot * 0.5)
    rows = [(widget.next.ranking.item(r, 1).text(), int(widget.next.ranking.item(r, 2).text()))
            for r in range(widget.next.ranking.rowCount())]
    assert rows and all(image == "case1" for image, _ in rows)  # case0's labels are reviewed whole
    slices = [i for _, i in rows]
    assert all(abs(a - b) >= 5 for k, a in enumerate(slices) for b in slices[k + 1:])  # one entry per slab
    assert widget.next.ranking.horizontalHeaderItem(0).toolTip() == SCORE_HELP
    assert "0 = sure of every voxel" in SCORE_HELP
    go_to_slice(viewer, 15)
    viewer.layers.selection.active = viewer.layers["case0 labels"]
    widget.next.unmark_button.click()
    first = (widget.next.ranking.item(0, 1).text(), widget.next.ranking.item(0, 2).text())
    assert first == ("case0", "15")  # the unreviewed slice of highest score comes first


def test_result_layers_show_the_disagreement_and_never_hide_the_labels(dock):
    viewer, widget = dock
    d = inject(widget, "case0", np.zeros(SHAPE, np.uint8))
    dis, pred = viewer.layers["case0 unsure"], viewer.layers["case0 pred"]
    assert dis.contrast_limits[1] == pytest.approx(np.percentile(d, 99.5), rel=1e-3) and dis.contrast_limits[1] < 1
    names = [la.name for la in viewer.layers]
    assert names.index("case0") < names.index("case0 pred") < names.index("case0 labels")
    assert pred.contour > 0 and not dis.visible and "99.5th percentile" in widget.next.legend.text()


def test_only_images_in_view_get_result_layers(dock, qtbot):
    viewer, widget = dock
    viewer.layers["case1"].visible = False
    n = len(viewer.layers)
    inject(widget, "case1", np.zeros(SHAPE, np.uint8))
    assert len(viewer.layers) == n  # a hidden image's results wait in the session
    viewer.layers["case1"].visible = True
    assert "case1 pred" not in viewer.layers  # queued: one layer per turn of the event loop
    qtbot.waitUntil(lambda: "case1 unsure" in viewer.layers, timeout=5000)
    assert "case1 pred" in viewer.layers


def test_statistics_follow_each_labels_layers_own_edits(dock, monkeypatch):
    from napari_dmd.label_book import LabelStats

    viewer, widget = dock
    calls = []
    real_of, real_update = LabelStats.of.__func__, LabelStats.update
    monkeypatch.setattr(LabelStats, "of", classmethod(lambda cls, a: calls.append("of") or real_of(cls, a)))
    monkeypatch.setattr(LabelStats, "update", lambda self, a, s: calls.append(sorted(s)) or real_update(self, a, s))
    inject(widget, "case0", np.zeros(SHAPE, np.uint8))  # the plugin's own layers are not followed
    pred = viewer.layers["case0 pred"]
    pred.data_setitem((np.array([1]), np.array([1]), np.array([1])), 1)
    assert calls == []
    viewer.layers["case0 labels"].data_setitem((np.array([6]), np.array([1]), np.array([1])), 1)
    assert calls == [[6]]  # one slice of one layer rescanned


def test_the_settings_form_is_built_from_the_declared_settings(dock):
    from napari_dmd.config import declared_settings

    viewer, widget = dock
    form = widget.settings
    for f in declared_settings():
        w = form[f.name]
        assert f.metadata["help"] in w.tooltip
        assert (w in form.basic) == (f.metadata["level"] == "basic")
    form.set(lambda_distill=2.5, lambda_rampup=40, temperature=1.93, lr_step=7, foreground_fraction=0.33)
    cfg = form.config(3, ("background", "a", "b"), 3)
    assert (cfg.lambda_distill, cfg.lambda_rampup, cfg.temperature, cfg.lr_step) == (2.5, 40, 1.93, 7)
    assert cfg.foreground_fraction == 0.33 and cfg.patch_size == (16, 32, 32) and cfg.device == "cpu"
    assert "Start runs on CPU" in widget.settings.plan.text()  # the device is resolved before Start


def test_a_ranked_row_of_a_hidden_image_adds_its_layers_one_event_loop_turn_apart(dock, qtbot):
    viewer, widget = dock
    viewer.layers["case1"].visible = False
    inject(widget, "case1", np.zeros(SHAPE, np.uint8))
    assert "case1 pred" not in viewer.layers  # hidden images get no layers
    widget.next.ranking.cellClicked.emit(0, 0)
    assert viewer.layers.selection.active.name == "case1 pred"
    assert "case1 unsure" not in viewer.layers  # not in the same turn as the prediction layer
    qtbot.waitUntil(lambda: "case1 unsure" in viewer.layers, timeout=2000)


def test_new_result_layers_leave_the_users_selection_alone(dock, qtbot):
    """Not even for a moment: napari would select each new layer (the 'unsure' one last)."""
    viewer, widget = dock
    mine = viewer.layers["case0 labels"]
    viewer.layers.selection.active = mine  # the user paints
    chosen = []
    viewer.layers.selection.events.active.connect(lambda e: chosen.append(getattr(e.value, "name", None)))
    inject(widget, "case0", np.zeros(SHAPE, np.uint8))  # two new layers
    assert viewer.layers.selection.active is mine and set(viewer.layers.selection) == {mine}
    widget.show_case("case1", select=False)  # the user looks at case1, the selection stays
    d = np.zeros(SHAPE, np.float32)
    widget._show(ImageResult("case1", np.zeros(SHAPE, np.uint8), d, slice_means(d), 0.0, 1))
    qtbot.waitUntil(lambda: "case1 unsure" in viewer.layers, timeout=5000)
    qtbot.wait(50)
    assert chosen == [] and viewer.layers.selection.active is mine


def test_the_slice_number_of_a_merge_and_of_the_review_line_is_the_sliders(dock, notes):
    viewer, widget = dock
    viewer.add_image(np.zeros(SHAPE, np.float32), name="earlier", scale=(2.0, 1.0, 1.0), translate=(-6.0, 0, 0),
                     visible=False)  # the slider now starts 3 slices before case0's first
    widget.show_case("case0")
    inject(widget, "case0", np.zeros(SHAPE, np.uint8))
    pred = viewer.layers["case0 pred"]
    pred.data_setitem((np.full(3, 7), np.array([2, 3, 4]), np.array([2, 2, 2])), 1)
    go_to_slice(viewer, 7)
    slider = int(viewer.dims.current_step[0])
    assert slider == 10
    viewer.layers.selection.active = pred
    widget.merge_prediction(whole=False)
    merged = widget.next.merged.text()
    assert merged.startswith("merged") and f"slice {slider} of" in merged
    widget.session.reviewed["case0 labels"].whole = False
    widget.session.reviewed["case0 labels"].slices = {7}
    widget.refresh_view()
    assert widget.next.review_label.text().endswith(f"reviewed slices {slider}")
