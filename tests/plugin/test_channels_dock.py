"""Multi-channel cases in the dock: image layers of one case grouped as channels, trained and predicted as one."""
import numpy as np

from napari_dmd.review import Reviewed

from plugin_helpers import cube_case, fast_settings, wait_done


def errors(notes):
    return [m for s, m in notes if "error" in s]


def row_of(widget, name):
    return next(r for r in range(widget.table.rowCount()) if widget.table.item(r, 1).text() == name)


def two_channel_cases(viewer):
    """brain_T1 + brain_T2 with labels on a few slices, and an unlabeled 2-channel case other_T1 + other_T2."""
    for case, seed in (("brain", 0), ("other", 1)):
        img, lab = cube_case(seed)
        viewer.add_image(img, name=f"{case}_T1")
        viewer.add_image(-img + 0.1 * img.mean(), name=f"{case}_T2")
        if case == "brain":
            some = np.zeros_like(lab)
            some[[5, 8]] = lab[[5, 8]]
            rec = Reviewed(lab.shape)
            rec.mark(5)
            rec.mark(8)
            viewer.add_labels(some, name="brain labels", metadata={"reviewed": rec.to_dict()})


def test_two_channel_cases_train_and_predict_in_the_dock(make_napari_viewer, qtbot, tmp_path, notes):
    viewer = make_napari_viewer()
    two_channel_cases(viewer)
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run")
    widget.refresh_view()
    s = widget.session
    assert s.grouping.cases() == ["brain_T1", "other_T1"]
    assert s.pairs() == {"brain_T1": "brain labels", "other_T1": None}
    info = {widget.table.item(r, 1).text(): widget.table.item(r, 3).text() for r in range(widget.table.rowCount())}
    assert info["brain_T2"] == "channel of brain_T1" and info["brain_T1"].startswith("2 channels (T1, T2) · 2/16")
    assert not widget.table.cellWidget(row_of(widget, "brain_T2"), 0).isEnabled()  # not trainable on its own
    assert widget.nav.cases == ["brain_T1", "other_T1"]

    widget.start()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    model = s.current.model
    assert model is not None and model.channels == ("T1", "T2")
    assert "brain_T1 pred" in viewer.layers and set(s.current.results.latest) == {"brain_T1", "other_T1"}
    assert "brain_T2 pred" not in viewer.layers  # one result per case, named after its first layer
    assert widget.next.coverage.text() == "Ranks all 2 image(s)."  # cases, not layers

    s.current.results.clear()
    widget.table.cellWidget(row_of(widget, "brain_T1"), 0).setChecked(False)  # predict the unlabeled case only
    widget.predict()
    wait_done(qtbot, widget)
    assert not errors(notes), notes
    assert set(s.current.results.latest) == {"other_T1"} and s.current.results.latest["other_T1"].shape == (16, 32, 32)
    widget.shutdown()


def test_regrouping_in_the_table_refuses_a_run_of_mixed_channel_counts(make_napari_viewer, tmp_path, notes):
    viewer = make_napari_viewer()
    two_channel_cases(viewer)
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, tmp_path / "run")
    widget.refresh_view()
    combo = widget.table.cellWidget(row_of(widget, "other_T2"), 4)
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "own", "brain_T1", "brain_T2", "other_T1"]
    combo.setCurrentText("own")  # the user splits the unlabeled case into two one-channel cases
    widget.refresh_view()
    assert widget.session.grouping.cases() == ["brain_T1", "other_T1", "other_T2"]
    widget.start()
    assert widget.worker is None
    assert any("'other_T1' has 1 channel(s) (image) but 'brain_T1' takes 2 channel(s) (T1, T2)" in m
               for m in errors(notes)), notes
    viewer.layers.selection.active = viewer.layers["brain_T2"]  # selecting a channel layer shows its case
    assert widget.nav.case == "brain_T1" and viewer.layers["brain_T2"].visible
    widget.show_case("other_T1")
    assert not viewer.layers["brain_T2"].visible and not viewer.layers["brain_T1"].visible  # another case
    widget.show_case("brain_T1")
    assert viewer.layers["brain_T2"].visible  # its channel layer comes back with it
    widget.shutdown()


def test_an_rgb_layer_is_one_case_of_three_channels(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 30, 3), np.uint8), name="photo", rgb=True)
    viewer.add_labels(np.zeros((20, 30), np.uint8), name="photo labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    widget.refresh_view()
    assert widget.session.pairs() == {"photo": "photo labels"}
    assert widget.table.item(0, 3).text() == "3 channels (red, green, blue) · not reviewed"
    assert widget.table.cellWidget(0, 0).isChecked()
    widget.shutdown()


def test_a_two_channel_case_from_two_files_shows_its_predictions_outlines_above_its_image(
        make_napari_viewer, tmp_path):
    from napari_dmd.io import write_image
    from napari_dmd.plugin._layers import PREDICTION, role

    from plugin_helpers import inject

    img, lab = cube_case(0)
    write_image(tmp_path / "case_0000.nii.gz", img)
    write_image(tmp_path / "case_0001.nii.gz", -img)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "case_0000.nii.gz"), plugin="napari-dmd")
    viewer.add_labels(lab, name="case labels")  # opened before the second channel: it lies under it at first
    viewer.open(str(tmp_path / "case_0001.nii.gz"), plugin="napari-dmd")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    widget.refresh_view()
    assert widget.session.grouping.channels_of("case_0000") == ["case_0000", "case_0001"]
    inject(widget, "case_0000", lab)
    widget.show_case("case_0000")
    names = [layer.name for layer in viewer.layers]
    pred = next(layer for layer in viewer.layers if role(layer) == PREDICTION)
    channels = [names.index("case_0000"), names.index("case_0001")]
    assert max(channels) < names.index(pred.name) and max(channels) < names.index("case labels")
    assert pred.visible and viewer.layers["case labels"].visible
    assert viewer.layers["case_0001"].blending == "additive"  # drawn with the first channel as one picture
    widget.shutdown()
