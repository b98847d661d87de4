"""Reader, writers and sample data through napari (viewer.open / save_layers with plugin='napari-dmd')."""
import numpy as np
import pytest

from napari_dmd.io import Geometry, read_image, write_image
from napari_dmd.plugin.reader import napari_get_reader

from plugin_helpers import cube_case

GEO = Geometry(spacing=(0.8, 0.9, 2.5), origin=(-12.0, 30.5, 7.25),
               direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))


def close(a: Geometry, b: Geometry) -> bool:
    return all(np.allclose(getattr(a, k), getattr(b, k), atol=1e-5) for k in ("spacing", "origin", "direction"))


@pytest.fixture
def case_files(tmp_path):
    img, lab = cube_case(0)
    write_image(tmp_path / "scan.nii.gz", img, GEO)
    write_image(tmp_path / "labels" / "scan.nii.gz", lab, GEO)
    return tmp_path / "scan.nii.gz", tmp_path / "labels" / "scan.nii.gz", img, lab


def test_reader_refuses_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder without DICOM


def test_open_sets_scale_translate_and_geometry(make_napari_viewer, case_files):
    image_path, label_path, img, lab = case_files
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(image_path), plugin="napari-dmd")
    (labels,) = viewer.open(str(label_path), plugin="napari-dmd")
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    assert labels.name == "scan labels"
    np.testing.assert_allclose(image.scale, (2.5, 0.9, 0.8))
    np.testing.assert_allclose(image.translate, (7.25, 30.5, -12.0))
    assert Geometry.from_dict(image.metadata["geometry"]) == read_image(image_path)[1]
    assert close(read_image(image_path)[1], GEO)
    np.testing.assert_array_equal(labels.data, lab)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_labels_and_image_round_trip_their_geometry(make_napari_viewer, case_files, tmp_path, ext):
    import napari

    image_path, label_path, img, lab = case_files
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(label_path), plugin="napari-dmd")
    (image,) = viewer.open(str(image_path), plugin="napari-dmd")
    out = tmp_path / "out"
    napari.save_layers(str(out / f"saved_labels{ext}"), [labels], plugin="napari-dmd")
    napari.save_layers(str(out / f"saved_image{ext}"), [image], plugin="napari-dmd")
    source = read_image(label_path)[1]
    arr, geo = read_image(out / f"saved_labels{ext}")
    np.testing.assert_array_equal(arr, lab)
    assert geo == source if ext == ".nii.gz" else close(geo, source)
    arr, geo = read_image(out / f"saved_image{ext}")
    np.testing.assert_allclose(arr, img)
    assert close(geo, GEO)


def test_layer_without_geometry_saves_its_scale_and_translate(make_napari_viewer, tmp_path):
    import napari

    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.eye(8, dtype=np.uint8)[None].repeat(3, 0), scale=(3, 1, 0.5), translate=(1, 2, 3))
    napari.save_layers(str(tmp_path / "x.nrrd"), [layer], plugin="napari-dmd")
    _, geo = read_image(tmp_path / "x.nrrd")
    assert geo.spacing == (0.5, 1.0, 3.0) and geo.origin == (3.0, 2.0, 1.0)


def test_sample_data_loads_12_images_and_3_labels(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-dmd", "hippocampus")
    kinds = [type(la).__name__ for la in viewer.layers]
    assert kinds.count("Image") == 12 and kinds.count("Labels") == 3
    labels = viewer.layers["hippocampus_001 labels"]
    assert labels.metadata["class_names"] == ["background", "anterior", "posterior"]
    assert set(np.unique(labels.data)) == {0, 1, 2}
    assert [la.name for la in viewer.layers if la.visible] == ["hippocampus_001", "hippocampus_001 labels"]
    assert "geometry" in viewer.layers["hippocampus_007"].metadata


def test_demo_opens_napari_with_the_sample_and_the_dock(make_napari_viewer, monkeypatch):
    import napari

    from napari_dmd.plugin import demo
    from napari_dmd.plugin.widget import DMDWidget

    monkeypatch.setattr(napari, "Viewer", lambda **kw: make_napari_viewer(title=kw.get("title", "")))
    viewer = demo.open_demo()
    assert len(viewer.layers) == 15
    widget = demo.dock_widget(viewer)
    assert isinstance(widget, DMDWidget)
    pairs = widget.session.pairs()
    assert len(pairs) == 12 and sum(v is not None for v in pairs.values()) == 3
    assert all(widget.session.reviewed[v].whole for v in pairs.values() if v)  # complete volumes: no tick box


def test_reader_refuses_a_dicom_series_with_a_damaged_slice(tmp_path):
    import sys
    from pathlib import Path

    from napari_dmd.errors import DataError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_io import write_dicom_series

    folder = tmp_path / "series"
    write_dicom_series(folder, np.arange(5 * 8 * 8, dtype=np.int16).reshape(5, 8, 8), (0.8, 0.6, 1.5),
                       (0.0, 0.0, 0.0), "1.2.826.0.1.3680043.2.1125.1.505")
    damaged = sorted(folder.iterdir())[2]
    damaged.write_bytes(damaged.read_bytes()[:100])
    reader = napari_get_reader(str(folder))
    with pytest.raises(DataError, match=f"{damaged} in the DICOM series"):
        reader(str(folder))


def test_a_file_of_several_channels_opens_as_one_layer_per_channel(make_napari_viewer, tmp_path):
    import SimpleITK as sitk

    img, _ = cube_case(0)
    vector = sitk.Compose([sitk.GetImageFromArray(img), sitk.GetImageFromArray(2 * img + 5)])
    GEO.apply(vector)
    sitk.WriteImage(vector, str(tmp_path / "brain.nrrd"))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "brain.nrrd"), plugin="napari-dmd")
    assert [layer.name for layer in layers] == ["brain_0000", "brain_0001"]  # channel files' names: one case
    assert all(type(layer).__name__ == "Image" and layer.data.shape == img.shape for layer in layers)
    np.testing.assert_allclose(layers[1].data, 2 * img + 5)
    np.testing.assert_allclose(layers[1].scale, (2.5, 0.9, 0.8))


def test_save_with_the_dialogs_default_filter_writes_the_nifti_and_its_review_record(
        make_napari_viewer, tmp_path, monkeypatch):
    from napari._qt import qt_viewer
    from napari.plugins import _npe2

    from napari_dmd.review import load_reviewed, sidecar_path

    viewer = make_napari_viewer()
    img, _ = cube_case(0)
    viewer.add_image(img, name="scan")
    labels = viewer.add_labels(np.zeros(img.shape, np.uint8), name="scan labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    labels.paint((5, 10, 10), 1)  # slice 5 reviewed
    viewer.layers.selection.active = labels
    filters, writers = _npe2.file_extensions_string_for_layers([labels])
    # the filter the dialog starts with where napari lists its own first: napari's (TIFF)
    default = next(f for f, w in zip(filters.split(";;"), writers) if w.plugin_name != "napari-dmd")
    path = tmp_path / "x.nii.gz"
    monkeypatch.setattr(qt_viewer.QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), default))
    viewer.window._qt_viewer._save_layers_dialog(selected=True)  # File → Save Selected Layers…, Save
    saved, _geometry = read_image(path)
    assert saved.shape == img.shape and saved[5, 10, 10] == 1
    assert load_reviewed(sidecar_path(path), img.shape).slices == {5}
    widget.shutdown()


def test_the_reader_is_chosen_at_activation_and_viewer_open_follows_it(make_napari_viewer, case_files):
    from napari.plugins.utils import get_preferred_reader
    from npe2 import PluginManager

    viewer = make_napari_viewer()  # fresh settings: no preference yet
    assert get_preferred_reader(str(case_files[0])) is None
    pm = PluginManager.instance()
    pm.deactivate("napari-dmd")
    pm.activate("napari-dmd")  # what napari does at the first use of any of the plugin's contributions
    assert get_preferred_reader(str(case_files[0])) == "napari-dmd"
    [layer] = viewer.open(str(case_files[0]), plugin=None)  # no choice asked
    assert "geometry" in layer.metadata and np.allclose(layer.scale, GEO.spacing[::-1])
