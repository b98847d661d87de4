"""One case at a time: the navigator, readable result layers, results of the case in view, the reader preference."""
import numpy as np

from napari_dmd.jobs import ImageResult, Refreshed
from napari_dmd.ranking import slice_means

from plugin_helpers import SHAPE, cube_case, fast_settings, wait_done


def visible(viewer):
    return {layer.name for layer in viewer.layers if layer.visible}


def row_of(widget, name):
    return next(r for r in range(widget.table.rowCount()) if widget.table.item(r, 1).text() == name)


def inject(widget, name, iteration=1):
    """The dock receives a result of ``name`` as from a refresh of the worker."""
    d = np.random.default_rng(1).random(SHAPE).astype(np.float32) * 0.3
    widget._show(ImageResult(name, np.zeros(SHAPE, np.uint8), d, slice_means(d), float(d.mean()), iteration))
    widget.results.flush()


def test_one_case_is_visible_after_a_row_click_next_and_previous(dock):
    viewer, widget = dock
    assert visible(viewer) == {"case0", "case0 labels"}  # the dock opens on the first case, alone
    assert widget.nav.label.text() == "Case 1 of 2: case0" and not widget.nav.previous_button.isEnabled()
    widget.table.cellClicked.emit(row_of(widget, "case1"), 3)  # a click anywhere on the row
    assert visible(viewer) == {"case1"}
    assert widget.nav.label.text() == "Case 2 of 2: case1" and not widget.nav.next_button.isEnabled()
    assert widget.table.selectionModel().selectedRows()[0].row() == row_of(widget, "case1")
    assert viewer.layers.selection.active is viewer.layers["case1"]  # no labels yet: the image is selected
    viewer.dims.set_point(0, 2 * 11)  # case1 is left at slice 11
    widget.nav.previous_button.click()
    assert visible(viewer) == {"case0", "case0 labels"}
    assert viewer.layers.selection.active is viewer.layers["case0 labels"]  # the brush goes to its labels
    widget.nav.next_button.click()
    assert visible(viewer) == {"case1"} and round(viewer.dims.point[0] / 2) == 11  # back where it was left
    viewer.layers.selection.active = viewer.layers["case0 labels"]  # a layer picked in the layer list
    assert visible(viewer) == {"case0", "case0 labels"} and widget.nav.case == "case0"


def test_added_images_are_shown_alone_and_hidden_ones_stay_hidden(dock):
    viewer, widget = dock
    viewer.add_image(cube_case(2)[0], name="case2", scale=(2.0, 1.0, 1.0))  # as File → Open does
    assert visible(viewer) == {"case2"} and widget.nav.case == "case2"
    viewer.add_image(cube_case(3)[0], name="case3", visible=False)  # as the sample adds its other cases
    assert visible(viewer) == {"case2"} and widget.nav.case == "case2"
    widget.refresh_view()
    assert widget.nav.label.text() == "Case 3 of 4: case2"


def test_the_prediction_is_drawn_under_the_labels_and_the_disagreement_is_hidden_until_toggled(dock):
    viewer, widget = dock
    inject(widget, "case0")
    names = [layer.name for layer in viewer.layers]
    assert "case0 pred" in names and "case0 unsure" in names  # the case's prefix, short suffixes
    pred, unsure, labels = viewer.layers["case0 pred"], viewer.layers["case0 unsure"], viewer.layers["case0 labels"]
    assert names.index("case0") < names.index("case0 pred") < names.index("case0 unsure") < names.index(
        "case0 labels")  # grouped above the image, under the user's labels
    assert pred.contour > 0 and pred.visible and labels.visible  # outlines: the image shows through
    assert not unsure.visible and unsure.blending == "translucent"
    assert unsure.colormap.map(np.array([0.0]))[0, 3] == 0  # where the networks agree, the image stays as it is
    widget.nav.unsure_box.setChecked(True)
    assert unsure.visible
    widget.show_case("case1")
    assert not unsure.visible and not pred.visible and not labels.visible
    inject(widget, "case1")
    assert viewer.layers["case1 unsure"].visible  # new ones follow the toggle
    widget.show_case("case0")
    assert unsure.visible and not viewer.layers["case1 unsure"].visible
    widget.nav.unsure_box.setChecked(False)
    assert not unsure.visible and pred.visible


def test_during_a_run_only_the_case_in_view_gets_results_and_all_at_the_end(dock, qtbot, monkeypatch):
    import time

    from napari_dmd import jobs

    viewer, widget = dock
    fast_settings(widget, widget.settings.run_folder.value, iterations=6, refresh_every=3, first_refresh=1)
    seen, on_message, real = [], widget._on_message, jobs.refresh_items

    def record(msg):
        seen.append(msg)
        on_message(msg)
        if isinstance(msg, Refreshed) and msg.iteration == 1:  # the user looks at another case during the run
            assert not widget.table.cellWidget(0, 0).isEnabled()  # the choices are locked, the rows are not
            widget.table.cellClicked.emit(row_of(widget, "case1"), 1)

    def after_the_click(images, view, final):  # the worker's second refresh waits for the click (a loaded CPU)
        t0 = time.perf_counter()
        while any(isinstance(m, Refreshed) for m in seen) and widget.control.view.image != "case1" \
                and time.perf_counter() - t0 < 30:
            time.sleep(0.05)
        return real(images, widget.control.view, final)

    monkeypatch.setattr(jobs, "refresh_items", after_the_click)
    widget._on_message = record
    widget.start()
    wait_done(qtbot, widget)
    results = [(m.iteration, m.name) for m in seen if isinstance(m, ImageResult)]
    assert results == [(1, "case0"), (3, "case1"), (6, "case0"), (6, "case1")]
    assert set(widget.session.current.results.slice_scores) == {"case0", "case1"}  # the ranking covers every case
    assert visible(viewer) == {"case1", "case1 pred"}
    assert "case0 pred" not in viewer.layers or not viewer.layers["case0 pred"].visible  # hidden since the click
    widget.show_case("case0")
    widget.results.flush()
    assert visible(viewer) == {"case0", "case0 labels", "case0 pred"}


def test_napari_dmd_is_the_preferred_reader_of_its_file_types(make_napari_viewer):
    from napari.plugins.utils import get_preferred_reader
    from napari.settings import get_settings

    from napari_dmd.plugin.reader_preference import prefer_reader

    make_napari_viewer()  # fresh settings
    plugins = get_settings().plugins
    plugins.extension2reader = {"*.nrrd": "napari"}  # the user's own choice
    added = prefer_reader()
    assert "*.nii.gz" in added and "*.nrrd" not in added
    assert get_preferred_reader("/data/case.nii.gz") == "napari-dmd"
    assert get_preferred_reader("/data/case.mha") == "napari-dmd"
    assert get_preferred_reader("/data/case.nrrd") == "napari"  # never overridden
    assert prefer_reader() == []


def test_an_unpaired_labels_layer_is_hidden_with_the_case_in_view_and_the_near_agreement_untinted(dock):
    from napari_dmd.plugin.result_layers import unsure_colormap

    viewer, widget = dock
    viewer.add_labels(np.zeros((5, 6, 7), np.uint8), name="stray labels")  # fits no image
    widget.show_case("case1")
    assert not viewer.layers["stray labels"].visible and viewer.layers["case1"].visible
    colors = unsure_colormap().map(np.array([0.0, 0.2, 0.5, 1.0]))
    assert colors[0, 3] == 0 and colors[1, 3] == 0  # where the networks nearly agree: no tint
    assert 0 < colors[2, 3] < colors[3, 3]
