"""The pair of networks with what is needed to use it, and atomic checkpoints."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data import NORMALIZATION
from .errors import CheckpointError
from .heads import out_channels
from .io import write_failure
from .networks import build_network
from .runtime import resolve_device

FORMAT = "napari-dmd/1"


@dataclass
class ModelPair:
    """Two networks of one architecture, initialised differently, with their classes and settings."""

    nets: tuple[nn.Module, nn.Module]
    config: TrainConfig
    ndim: int
    device: torch.device
    normalization: str = NORMALIZATION
    iteration: int = 0  # of the run that trained it (where a resume continues)
    trained_before: int = 0  # iterations the weights had had before that run (warm starts)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, config: TrainConfig, ndim: int, device: torch.device) -> ModelPair:
        """Two networks from consecutive draws of one generator seeded with ``config.seed``, so they
        start from different weights (as in the authors' code) and a seed reproduces both."""
        torch.manual_seed(config.seed)
        nets = tuple(build_network(ndim, out_channels(config.num_classes)).to(device) for _ in range(2))
        return cls(nets, config, ndim, device)  # type: ignore[arg-type]

    @property
    def model_iterations(self) -> int:
        """All the iterations the weights have had, across warm starts."""
        return self.trained_before + self.iteration

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return self.config.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, background first."""
        return self.config.class_names


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename over it; ``CheckpointError`` if it cannot."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*"):  # left by a write that was killed (kill -9)
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:  # a Python file: torch writes it without holding the GIL for long
            torch.save(obj, f)  # a full disk is a RuntimeError from torch
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(write_failure(path, exc)) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def non_finite_tensors(states: list[dict[str, torch.Tensor]]) -> list[str]:
    """Names of the weights and buffers that hold NaN or Inf."""
    return [f"net {'AB'[i]} {k}" for i, state in enumerate(states) for k, v in state.items()
            if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def save_model(model: ModelPair, path: Path, training_state: dict[str, Any] | None = None) -> Path:
    """Save both networks, settings and classes (and, for resuming, the optimiser and RNG state).
    A model with non-finite weights or buffers is refused, so a good file is never replaced by it."""
    bad = non_finite_tensors([net.state_dict() for net in model.nets])
    if bad:
        raise CheckpointError(f"not writing {Path(path).name}: the model holds NaN or Inf ({', '.join(bad[:3])})")
    payload = {
        "format": FORMAT,
        "ndim": model.ndim,
        "config": model.config.to_dict(),
        "normalization": model.normalization,
        "iteration": model.iteration,
        "model_iterations": model.model_iterations,
        "nets": [{k: v.cpu() for k, v in net.state_dict().items()} for net in model.nets],
        "training_state": training_state,
    }
    atomic_torch_save(payload, Path(path))
    return Path(path)


def load_checkpoint(path: Path, device: str | torch.device = "auto") -> tuple[ModelPair, dict[str, Any] | None]:
    """The model pair and the saved training state (``None`` for a model saved without one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # no code runs from a shared file
    except Exception as exc:  # any unreadable file: torch raises many kinds
        raise CheckpointError(f"{path.name} is not a napari-dmd checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path.name} is not a napari-dmd checkpoint")
    bad = non_finite_tensors(payload["nets"])
    if bad:
        raise CheckpointError(f"{path.name} holds NaN or Inf weights ({', '.join(bad[:3])}): it cannot predict; "
                              "use an earlier checkpoint")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    config = TrainConfig.from_dict(payload["config"])
    model = ModelPair.create(config, payload["ndim"], dev)
    try:
        for net, state in zip(model.nets, payload["nets"]):
            net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path.name}: the saved weights do not fit the network") from exc
    model.normalization, model.iteration = payload["normalization"], payload["iteration"]
    model.trained_before = max(0, int(payload.get("model_iterations", model.iteration)) - model.iteration)
    return model, payload.get("training_state")


def load_model(path: Path, device: str | torch.device = "auto") -> ModelPair:
    """The model pair saved at ``path``, ready to predict."""
    return load_checkpoint(path, device)[0]
