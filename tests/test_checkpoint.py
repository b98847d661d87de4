"""Checkpoints: the model's iteration count, and a full disk named as such leaving the previous file intact."""
import shutil
from collections import namedtuple

import pytest
import torch

from napari_dmd import io
from napari_dmd.checkpoint import ModelPair, atomic_torch_save, load_model, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.errors import CheckpointError


def test_a_full_disk_is_named_and_the_previous_checkpoint_survives(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    before = path.read_bytes()

    def full(*_a, **_k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 0))
    assert io.shutil is shutil
    with pytest.raises(CheckpointError, match="the disk is full"):
        atomic_torch_save({"a": torch.zeros(2)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_the_model_iterations_are_saved_and_an_older_checkpoint_falls_back_to_its_run(tmp_path):
    model = ModelPair.create(TrainConfig(), 2, torch.device("cpu"))
    model.trained_before, model.iteration = 110, 30
    save_model(model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", "cpu")
    assert (loaded.iteration, loaded.model_iterations) == (30, 140)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    del payload["model_iterations"]  # written before the count was kept
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt", "cpu")
    assert (old.iteration, old.model_iterations) == (30, 30)
