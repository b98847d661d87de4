"""The pair of networks with what is needed to use it, and atomic checkpoints."""
from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data import NORMALIZATION
from .errors import CheckpointError, DataError
from .heads import out_channels
from .io import write_failure
from .networks import build_network
from .runtime import resolve_device

FORMAT = "napari-dmd/1"
REQUIRED = ("ndim", "config", "normalization", "iteration", "nets")  # keys every checkpoint holds
REFUSED_PATCH = "refused_patch"  # in ModelPair.extra: the saved patch this version no longer accepts


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
        nets = tuple(build_network(ndim, out_channels(config.num_classes), config.spacing, len(config.channels)
                                   ).to(device) for _ in range(2))
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

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the input channels, one per channel."""
        return self.config.channels


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
        with zipfile.ZipFile(tmp) as written:  # read back whole: every record's checksum
            if written.testzip() is not None:
                raise OSError(5, "what was written does not read back")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, RuntimeError, zipfile.BadZipFile) as exc:
        raise CheckpointError(write_failure(path, exc if not isinstance(exc, zipfile.BadZipFile)
                                            else OSError(5, "what was written does not read back"))) from exc
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
        raise CheckpointError(f"not writing {Path(path).absolute()}: the model holds NaN or Inf ({', '.join(bad[:3])})")
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
    shown = path.absolute()
    if not path.is_file():
        raise CheckpointError(_not_a_checkpoint(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # no code runs from a shared file
    except Exception as exc:  # any unreadable file: torch raises many kinds
        raise CheckpointError(f"{shown} is not a napari-dmd checkpoint, or it is damaged "
                              f"({type(exc).__name__})") from exc
    written = payload.get("format") if isinstance(payload, dict) else None
    if isinstance(written, str) and written.startswith("napari-dmd/") and written != FORMAT:
        raise CheckpointError(f"{shown} was written by another version of napari-dmd (format {written}; this one "
                              f"reads {FORMAT}): use the napari-dmd that wrote it")
    if written != FORMAT:
        raise CheckpointError(f"{shown} is not a napari-dmd checkpoint")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise CheckpointError(f"{shown} is damaged: it lacks {', '.join(map(repr, missing))}")
    bad = non_finite_tensors(payload["nets"])
    if bad:
        raise CheckpointError(f"{shown} holds NaN or Inf weights ({', '.join(bad[:3])}): it cannot predict; "
                              "use an earlier checkpoint")
    state = payload.get("training_state")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    config = _config(payload["config"], shown)
    model = ModelPair.create(config, payload["ndim"], dev)
    if config.patch_size is None and payload["config"].get("patch_size"):
        model.extra[REFUSED_PATCH] = tuple(payload["config"]["patch_size"])
    try:
        for net, state_dict in zip(model.nets, payload["nets"]):
            net.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{shown}: the saved weights do not fit the network") from exc
    model.normalization, model.iteration = payload["normalization"], payload["iteration"]
    model.trained_before = max(0, int(payload.get("model_iterations", model.iteration)) - model.iteration)
    return model, state


def _not_a_checkpoint(path: Path) -> str:
    """Why there is no checkpoint file at ``path``, naming its folder and what that folder holds."""
    shown = path.absolute()
    if path.is_dir():
        inside = path / "model.pt"
        hint = f"give its checkpoint, {inside}" if inside.is_file() else "give a checkpoint file (model.pt)"
        return f"{shown} is a folder, not a checkpoint file: {hint}"
    folder = shown.parent
    if not folder.is_dir():
        return f"no checkpoint file at {shown}: its folder {folder} does not exist"
    found = sorted(p.name for p in folder.glob("*.pt"))
    holds = f"holds {', '.join(found[:5])}" if found else "holds no .pt file"
    return f"no checkpoint file {path.name} in the folder {folder} (it {holds})"


def check_resumable(path: Path, state: dict[str, Any] | None) -> None:
    """``CheckpointError`` naming ``path`` unless its training ``state`` can continue the run: present,
    and no NaN or Inf in the optimizer's momentum (its weights may still predict and warm-start)."""
    if state is None:
        raise CheckpointError(f"{Path(path).absolute()} holds no training state to resume from: start a new run "
                              "from it (--init without --resume)")
    optimizer = state.get("optimizer")
    entries = optimizer.get("state", {}) if isinstance(optimizer, dict) else {}
    if any(v.is_floating_point() and not bool(torch.isfinite(v).all())
           for entry in entries.values() for v in entry.values() if isinstance(v, torch.Tensor)):
        raise CheckpointError(f"{Path(path).absolute()}: its optimizer state holds NaN or Inf, so the run cannot be "
                              "resumed from it; start a new run from its weights (--init without --resume) or use "
                              "an earlier checkpoint")


def _config(saved: dict, shown: Path) -> TrainConfig:
    """The saved settings; a patch an earlier version accepted and this one does not (under 16 voxels) is
    dropped (and kept in ``ModelPair.extra[REFUSED_PATCH]``), so the model still predicts with ``--patch``."""
    try:
        return TrainConfig.from_dict(saved)
    except DataError as exc:
        if not saved.get("patch_size"):
            raise CheckpointError(f"{shown} holds settings this napari-dmd refuses: {exc}") from exc
        try:
            return TrainConfig.from_dict({**saved, "patch_size": None})
        except DataError:
            raise CheckpointError(f"{shown} holds settings this napari-dmd refuses: {exc}") from exc


def load_model(path: Path, device: str | torch.device = "auto") -> ModelPair:
    """The model pair saved at ``path``, ready to predict."""
    return load_checkpoint(path, device)[0]
