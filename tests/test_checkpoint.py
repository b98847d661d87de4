"""Checkpoint writes: a full disk is named as such and leaves the previous file intact."""
import shutil
from collections import namedtuple

import pytest
import torch

from napari_dmd import io
from napari_dmd.checkpoint import atomic_torch_save
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
