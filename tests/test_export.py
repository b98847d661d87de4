"""Export: TorchScript and ONNX networks that predict as napari-dmd does, the JSON beside them, no overwriting
of files export did not write, the sub-command."""
import argparse
import json

import numpy as np
import pytest
import torch
from torch import nn

from napari_dmd.checkpoint import ModelPair, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.data import normalize_intensity
from napari_dmd.errors import CheckpointError, DataError
from napari_dmd.export import EXPORT_FORMAT, EXPORT_JSON, add_parser, export_model
from napari_dmd.inference import predict
from napari_dmd.runtime import resolve_device


def saved_model(tmp_path, ndim: int, num_classes: int, patch: tuple[int, ...]):
    """(path, model): a model pair with random batch-norm running statistics, so eval mode matters, and a
    binary head's bias set so that about half of ``image``'s voxels are foreground, saved."""
    model = ModelPair.create(TrainConfig(num_classes=num_classes, patch_size=patch, precision="fp32"), ndim,
                             resolve_device("cpu"))
    gen = torch.Generator().manual_seed(1)
    x = torch.from_numpy(normalize_intensity(image(patch)))[None, None]
    for net in model.nets:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
        if num_classes == 2:
            with torch.no_grad():
                net.head.bias -= net.eval()(x).median()
    return save_model(model, tmp_path / "run" / "model.pt"), model


def image(shape, seed=0):
    """A raw image a little larger than two windows along each axis, with a bright box."""
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 20, shape)
    img[tuple(slice(s // 4, s // 2) for s in shape)] += 80
    return img.astype(np.float32)


def assert_same_prediction(exported, model, img):
    """napari-dmd's sliding-window prediction with the exported networks equals its own."""
    ours = predict(model, img)
    theirs = predict(ModelPair(exported, model.config, model.ndim, model.device), img)
    np.testing.assert_allclose(theirs.disagreement.astype(np.float32), ours.disagreement.astype(np.float32),
                               atol=1e-3)
    assert (theirs.labels != ours.labels).mean() < 1e-3  # equal but at exact ties of the probabilities
    assert len(np.unique(ours.labels)) > 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_predicts_as_napari_dmd(tmp_path):
    path, model = saved_model(tmp_path, 3, 3, (16, 16, 16))
    written = export_model(path, tmp_path / "export", "torchscript", both=True)
    assert [p.name for p in written] == ["network_a.pt", "network_b.pt", EXPORT_JSON]
    nets = tuple(torch.jit.load(str(p)) for p in written[:2])
    x = torch.randn(3, 1, 16, 16, 16)
    with torch.no_grad():
        model.nets[0].eval()
        torch.testing.assert_close(nets[0](x), model.nets[0](x), atol=1e-4, rtol=1e-4)
    assert_same_prediction(nets, model, image((16, 20, 24)))
    info = json.loads(written[-1].read_text())
    assert info["format"] == EXPORT_FORMAT and info["networks"] == {"A": "network_a.pt", "B": "network_b.pt"}
    assert info["input"]["shape"] == ["batch", 1, 16, 16, 16] and info["input"]["channels"] == 1
    assert info["patch"] == [16, 16, 16] and info["class_names"] == ["background", "class 1", "class 2"]
    assert info["output"]["activation"] == "softmax" and info["output"]["shape"] == ["batch", 3, 16, 16, 16]
    assert info["normalization"]["name"] == model.normalization and "percentile" in info["normalization"]["steps"]


class OnnxNet(nn.Module):
    """An ONNX Runtime session as a module napari-dmd's ``predict`` can call."""

    def __init__(self, path):
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(self, x):
        return torch.from_numpy(self.session.run(None, {"image": x.float().contiguous().numpy()})[0])


def test_onnx_export_predicts_as_napari_dmd(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path, model = saved_model(tmp_path, 2, 2, (32, 32))
    written = export_model(path, tmp_path / "export", "onnx", both=True)
    shown = sorted(p.name for p in (tmp_path / "export").iterdir() if not p.name.startswith("."))
    assert shown == [EXPORT_JSON, "network_a.onnx", "network_b.onnx"]  # weights inside
    assert_same_prediction((OnnxNet(written[0]), OnnxNet(written[1])), model, image((40, 52)))
    info = json.loads(written[-1].read_text())
    assert info["networks"] == {"A": "network_a.onnx", "B": "network_b.onnx"}
    assert info["output"]["activation"] == "sigmoid" and info["input"]["shape"] == ["batch", 1, 32, 32]


def test_export_replaces_only_what_export_wrote(tmp_path):
    path, _ = saved_model(tmp_path, 2, 2, (16, 16))
    out = tmp_path / "export"
    out.mkdir()
    (out / "network_b.pt").write_text("someone else's")
    export_model(path, out, "torchscript")  # network A only: B is not touched
    with pytest.raises(DataError, match="not written by napari-dmd export"):
        export_model(path, out, "torchscript", both=True)
    assert (out / "network_b.pt").read_text() == "someone else's"
    export_model(path, out, "torchscript")  # its own files are replaced
    (out / EXPORT_JSON).write_text("{}")  # a user's edit is kept
    with pytest.raises(DataError, match="changed since napari-dmd export wrote it"):
        export_model(path, out, "torchscript")
    assert (out / EXPORT_JSON).read_text() == "{}"
    assert not list(out.glob(".*tmp"))


def test_export_subcommand(tmp_path, capsys):
    path, _ = saved_model(tmp_path, 2, 2, (16, 16))
    parser = argparse.ArgumentParser(prog="napari-dmd")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["export", "--model", str(path), "--format", "torchscript", "--out", str(tmp_path / "e")])
    assert args.func(args) == 0
    assert "network_a.pt" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--model", str(path), "--format", "tflite", "--out", str(tmp_path / "e")])
    with pytest.raises(CheckpointError):
        args.func(parser.parse_args(["export", "--model", str(tmp_path / "none.pt"), "--format", "onnx",
                                     "--out", str(tmp_path / "e")]))
