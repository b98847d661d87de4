"""Several channels per case (issue 24): held without copies, normalised each on its own, recorded in the model,
read from nnU-Net channel files, colour/vector and 4D images, and refused with one line where they do not fit."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from cli_helpers import FAST, GEOM, run

from napari_dmd.channels import Channels
from napari_dmd.checkpoint import ModelPair, load_model, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.data import PatchSampler, Volume, normalize_intensity
from napari_dmd.errors import DataError
from napari_dmd.folders import image_cases, load_training_data, read_case
from napari_dmd.inference import predict
from napari_dmd.io import Geometry, image_shape, read_channels, read_image, write_image
from napari_dmd.mixing import copy_paste
from napari_dmd.runtime import resolve_device

from synthetic import make_case

PATCH = (16, 16, 16)


def two_channels(seed: int, shape=(16, 24, 24)):
    """(T1, T2, label): T2 shows the structure dark on a different scale; T1 is T2's inverse plus an offset."""
    image, label = make_case(seed, shape)
    return image, (-800.0 * image + 3000).astype(np.int16), label


def test_channels_are_views_of_one_shape():
    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), np.uint8)
    c = Channels.split(rgb, -1, ("red", "green", "blue"))
    assert c.count == 3 and c.shape == (5, 6) and c.ndim == 2 and c.names == ("red", "green", "blue")
    assert all(np.shares_memory(a, rgb) for a in c.arrays)  # no copy of the image
    np.testing.assert_array_equal(c.arrays[1], rgb[..., 1])
    four = np.zeros((2, 4, 5, 6), np.float32)
    assert Channels.split(four, 0).shape == (4, 5, 6) and Channels.split(four, 0).names == ("channel 0", "channel 1")
    with pytest.raises(DataError, match="differ in shape"):
        Channels([np.zeros((4, 5)), np.zeros((4, 6))])
    with pytest.raises(DataError, match="2 channel names for 1"):
        Channels([np.zeros((4, 5))], ("a", "b"))


def test_each_channel_is_normalised_on_its_own_in_patches_and_windows():
    t1, t2, label = two_channels(0)
    v = Volume.create(Channels([t1, t2], ("T1", "T2")), label)
    assert v.image.arrays[1] is t2 and len(v.stats) == 2  # held as given, one normalisation per channel
    batch = PatchSampler([v], [v], PATCH, np.random.default_rng(0)).batch(2, 2)
    assert batch["image"].shape == (4, 2, *PATCH) and batch["label"].shape == (2, 1, *PATCH)
    # T2 is an affine image of T1 on another scale: normalised on its own it is the opposite patch (normalised
    # with T1's statistics, or together, it would be hundreds of times larger)
    np.testing.assert_allclose(batch["image"][:, 1], -batch["image"][:, 0], atol=0.05)


def test_copy_paste_moves_a_box_through_every_channel_with_its_labels():
    t1, t2, label = two_channels(1)
    v = Volume.create(Channels([t1, t2]), label)
    u = Volume.create(Channels([t1[::-1].copy(), t2[::-1].copy()]))
    batch = PatchSampler([v], [u], PATCH, np.random.default_rng(3)).batch(1, 1)
    mixed = copy_paste(batch, 0.5, np.random.default_rng(1))
    pasted = mixed["mask"][1, 0] > 0  # the unlabeled patch's box from the labeled patch
    assert pasted.any() and not pasted.all()
    for c in range(2):
        np.testing.assert_array_equal(mixed["image"][1, c][pasted], batch["image"][0, c][pasted])
        np.testing.assert_array_equal(mixed["image"][1, c][~pasted], batch["image"][1, c][~pasted])
    np.testing.assert_array_equal(mixed["label"][1, 0][pasted], batch["label"][0, 0][pasted])


def test_a_two_channel_model_predicts_as_its_networks_and_refuses_one_channel():
    cfg = TrainConfig(patch_size=PATCH, precision="fp32", channels=("T1", "T2"))
    model = ModelPair.create(cfg, 3, resolve_device("cpu"))
    assert model.nets[0].enc[0][0].in_channels == 2
    t1, t2, _ = two_channels(2, PATCH)
    got = predict(model, Channels([t1, t2]), PATCH)
    x = torch.from_numpy(np.stack([normalize_intensity(t1), normalize_intensity(t2)]))[None]
    for net in model.nets:
        net.eval()
    with torch.no_grad():
        want = (sum(torch.sigmoid(net(x))[0, 0] for net in model.nets) / 2 > 0.5).numpy()  # the pair's mean
    assert (got.labels == want).mean() > 0.999
    with pytest.raises(DataError, match=r"takes 2 channel\(s\) \(T1, T2\); the image has 1"):
        predict(model, t1, PATCH)


def test_the_checkpoint_keeps_the_channels(tmp_path):
    cfg = TrainConfig(patch_size=PATCH, precision="fp32", channels=("T2", "ADC"))
    path = save_model(ModelPair.create(cfg, 3, resolve_device("cpu")), tmp_path / "model.pt")
    loaded = load_model(path, "cpu")
    assert loaded.channels == ("T2", "ADC") and loaded.nets[0].enc[0][0].in_channels == 2
    old = ModelPair.create(TrainConfig(patch_size=PATCH), 3, resolve_device("cpu"))
    assert old.channels == ("image",) and old.nets[0].enc[0][0].in_channels == 1  # one channel by default


def write_channel_files(root, cases=3, labeled=2):
    """nnU-Net's layout: images/case{k}_0000 (T1, float) and _0001 (T2, int16); labels/case{k} for the first."""
    for k in range(cases):
        t1, t2, label = two_channels(k)
        write_image(root / "images" / f"case{k}_0000.nii.gz", t1, GEOM)
        write_image(root / "images" / f"case{k}_0001.nii.gz", t2, GEOM)
        if k < labeled:
            write_image(root / "labels" / f"case{k}.nii.gz", label, GEOM)
    return root


def test_channel_files_are_grouped_by_case_and_checked(tmp_path):
    root = write_channel_files(tmp_path)
    data = load_training_data(root / "images", root / "labels", [], channel_names=("T1", "T2"))
    assert len(data.labeled) == 2 and len(data.unlabeled) == 1
    assert all(v.image.count == 2 and v.image.names == ("T1", "T2") for v in data.labeled + data.unlabeled)
    with pytest.raises(DataError, match=r"case0_0000.nii.gz is a case of 2 channel\(s\), but 1 channel names"):
        load_training_data(root / "images", root / "labels", [], channel_names=("T1",))
    t1, _, _ = two_channels(0)
    write_image(root / "images" / "extra.nii.gz", t1, GEOM)  # a file named otherwise among channel files
    with pytest.raises(DataError, match="extra.nii.gz is not named as a channel file"):
        load_training_data(root / "images", root / "labels", [])
    (root / "images" / "extra.nii.gz").unlink()
    files = sorted((root / "images").iterdir())
    (root / "images" / "case2_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'case2' has channel files 0000; every case needs 2 channels"):
        image_cases(sorted((root / "images").iterdir()), True)
    write_image(root / "images" / "case2_0001.nii.gz", np.zeros((16, 24, 20), np.int16), GEOM)
    with pytest.raises(DataError, match="case2_0001.nii.gz has shape"):
        read_case(image_cases(files, True)["case2"])
    moved = Geometry(spacing=(0.8, 0.8, 3.0), origin=GEOM.origin, direction=GEOM.direction)
    write_image(root / "images" / "case2_0001.nii.gz", np.zeros((16, 24, 24), np.int16), moved)
    with pytest.raises(DataError, match="does not lie on its image"):
        read_case(image_cases(files, True)["case2"])


def test_colour_vector_and_4d_files_are_read_as_channels(tmp_path):
    t1, t2, _ = two_channels(4)
    vector = sitk.Compose([sitk.GetImageFromArray(t1), sitk.GetImageFromArray(t2.astype(np.float32))])
    GEOM.apply(vector)
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    four = sitk.JoinSeries([sitk.GetImageFromArray(t1), sitk.GetImageFromArray(t2.astype(np.float32))])
    sitk.WriteImage(four, str(tmp_path / "four.nii.gz"))
    for name in ("vector.nrrd", "four.nii.gz"):
        image, geometry = read_channels(tmp_path / name)
        assert image.count == 2 and image.shape == t1.shape and geometry.ndim == 3
        assert image_shape(tmp_path / name) == t1.shape  # one channel's, from the header (predict --labels)
        np.testing.assert_allclose(image.arrays[1], t2)
    assert read_channels(tmp_path / "vector.nrrd")[1] == GEOM
    with pytest.raises(DataError, match="2 values per voxel"):
        read_image(tmp_path / "vector.nrrd")  # a label map or a one-channel image must be one channel


def test_train_and_predict_two_channels_from_the_command_line(tmp_path, capsys):
    root = write_channel_files(tmp_path)
    out, _ = run(["train", "--images", root / "images", "--labels", root / "labels", "--out", root / "run",
                  "--channel-names", "T1", "T2", *FAST], capsys)
    assert "2 channels (T1, T2)" in out.splitlines()[0]
    assert load_model(root / "run" / "model.pt", "cpu").channels == ("T1", "T2")
    assert json.loads((root / "run" / "config.json").read_text())["channels"] == ["T1", "T2"]
    run(["predict", "--model", root / "run" / "model.pt", "--images", root / "images", "--out", root / "pred",
         "--device", "cpu"], capsys)
    written = sorted(p.name for p in (root / "pred").glob("*.nii.gz"))
    assert written == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]  # one prediction per case, named as nnU-Net
    assert read_image(root / "pred" / "case0.nii.gz")[0].shape == (16, 24, 24)
    _, err = run(["predict", "--model", root / "run" / "model.pt", "--images", root / "images" / "case0_0000.nii.gz",
                  "--out", root / "one", "--device", "cpu"], capsys, code=2)
    assert "case 'case0' has 1 channel file(s) (case0_0000.nii.gz)" in err and "the model takes 2 channel(s)" in err
    run(["train", "--images", root / "images", "--labels", root / "labels", "--out", root / "warm",
         "--init", root / "run" / "model.pt", *FAST], capsys)
    assert load_model(root / "warm" / "model.pt", "cpu").channels == ("T1", "T2")  # a warm start keeps them
    one = tmp_path / "one"
    t1, _, label = two_channels(0)
    write_image(one / "images" / "case0.nii.gz", t1, GEOM)
    write_image(one / "labels" / "case0.nii.gz", label, GEOM)
    _, err = run(["train", "--images", one / "images", "--labels", one / "labels", "--out", one / "run",
                  "--init", root / "run" / "model.pt", *FAST], capsys, code=2)
    assert "takes 2 channel(s) (T1, T2); the images have 1" in err


def test_numbered_scans_are_not_taken_for_channels(tmp_path, capsys, model):
    """scan_0001 and scan_0002 (no scan_0000) are two cases whatever the model; case_0000 alone is the case 'case';
    channel files with a gap are refused naming the missing channel."""
    from napari_dmd.cli.predict import _cases

    paths = [tmp_path / "scan_0001.nii.gz", tmp_path / "scan_0002.nii.gz"]
    for channels in (1, 2):
        assert [c for c, _ in _cases(paths, channels)] == ["scan_0001", "scan_0002"]
    assert [c for c, _ in _cases([tmp_path / "case_0000.nii.gz"], 1)] == ["case"]
    with pytest.raises(DataError, match="case 'case' has channel files 0000, 0002 in .*: channel 0001 is missing"):
        _cases([tmp_path / "case_0000.nii.gz", tmp_path / "case_0002.nii.gz"], 2)


def test_the_cache_keeps_every_channel_memory_mapped(tmp_path):
    root = write_channel_files(tmp_path)
    first = load_training_data(root / "images", root / "labels", [], cache=root / "cache", channel_names=("T1", "T2"))
    again = load_training_data(root / "images", root / "labels", [], cache=root / "cache", channel_names=("T1", "T2"))
    for a, b in zip(first.labeled + first.unlabeled, again.labeled + again.unlabeled):
        assert b.image.names == ("T1", "T2") and all(isinstance(x, np.memmap) for x in b.image.arrays)
        assert a.stats == b.stats and len(b.stats) == 2
        for x, y in zip(a.image.arrays, b.image.arrays):
            np.testing.assert_array_equal(x, y)


def test_the_export_names_the_channels(tmp_path):
    from napari_dmd.export import EXPORT_JSON, export_model

    cfg = TrainConfig(patch_size=PATCH, precision="fp32", channels=("T2", "ADC"))
    path = save_model(ModelPair.create(cfg, 3, resolve_device("cpu")), tmp_path / "model.pt")
    export_model(path, tmp_path / "export", "torchscript")
    described = json.loads((tmp_path / "export" / EXPORT_JSON).read_text())["input"]
    assert described["channels"] == 2 and described["channel_names"] == ["T2", "ADC"]
    assert described["shape"] == ["batch", 2, *PATCH]
