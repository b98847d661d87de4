"""A training run's folder as this process writes it: config.json, log.csv and the checkpoint (rank 0 alone
writes; every write is atomic or an append)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .checkpoint import ModelPair, save_model
from .config import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME
from .distributed import World, lost_process
from .io import write_text
from .outputs import Outputs

LOG_COLUMNS = ("iteration", "sup_loss", "distill_loss", "loss", "lambda", "lr", "precision", "skipped", "seconds")


class RunFolder:
    """``path`` (``None``: a run that writes nothing) as process ``world.rank`` of the run writes it."""

    def __init__(self, path: Path | None, world: World):
        self.path, self.world = (Path(path) if path else None), world

    @property
    def writes(self) -> bool:
        """Whether this process writes the folder."""
        return self.path is not None and self.world.writes

    @property
    def checkpoint(self) -> Path | None:
        return None if self.path is None else self.path / CHECKPOINT_NAME

    def prepare(self) -> None:
        if self.writes:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, settings: dict, runtime: dict) -> None:
        if self.writes:
            write_text(self.path / CONFIG_NAME, json.dumps({**settings, "runtime": runtime}, indent=1))
            Outputs(self.path, "train").wrote(self.path / CONFIG_NAME)

    def log(self, row: tuple) -> None:
        """Append one row of ``LOG_COLUMNS`` to log.csv (its header first)."""
        if not self.writes:
            return
        path = self.path / LOG_NAME
        new = not path.exists()
        with path.open("a", encoding="utf-8") as f:
            if new:
                f.write(",".join(LOG_COLUMNS) + "\n")
            f.write(",".join(str(v) for v in row) + "\n")
        if new:
            Outputs(self.path, "train").wrote(path, appended=True)

    def save(self, model: ModelPair, state: dict) -> Path | None:
        """Write the checkpoint with the training ``state`` (rank 0; the others name the file it writes)."""
        if self.path is None or not self.writes:
            return self.checkpoint
        path = save_model(model, self.checkpoint, state)
        Outputs(self.path, "train").wrote(path)
        return path

    def lost(self, exc: RuntimeError, done: int, saved: int, save: Callable[[int], Path | None]) -> Exception:
        """The error of a distributed run that lost a process after ``done`` iterations; rank 0 writes the
        checkpoint of iteration ``done`` first with ``save`` (unless it wrote it already at ``saved``)."""
        lost = lost_process(exc)
        if self.path is None:
            return lost
        if not self.writes:
            return type(lost)(f"{lost}; rank 0 writes the checkpoints: {self.checkpoint} holds the last one it wrote")
        path = save(done) if done > saved else self.checkpoint
        if not path.exists():
            return type(lost)(f"{lost}; no iteration finished, nothing written")
        return type(lost)(f"{lost} after iteration {done}; checkpoint of iteration {max(done, saved)} in {path} "
                          f"(continue with --init {path} --resume)")
