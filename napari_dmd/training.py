"""Deep Mutual Distillation training as an iterator of small progress reports."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .checkpoint import ModelPair, load_checkpoint, save_model
from .config import TrainConfig
from .data import PatchSampler, Volume, choose_patch_size
from .errors import CheckpointError, DataError, DMDError
from .io import write_text
from .losses import distillation_loss, supervised_loss
from .runtime import autocast, memory_format, resolve_device, resolve_precision

CHECKPOINT_NAME = "model.pt"


@dataclass(frozen=True)
class Progress:
    """One training step, as reported to a progress bar or log."""

    iteration: int
    total: int
    sup_loss: float
    distill_loss: float
    loss: float
    lr: float
    elapsed: float
    eta: float
    its_per_s: float
    device: str
    checkpoint: Path | None = None


def check_volumes(labeled: list[Volume], unlabeled: list[Volume], num_classes: int) -> int:
    """The common dimensionality of the volumes; ``DataError`` for data that cannot train."""
    if not labeled:
        raise DataError("no labeled image: label at least one image (or some of its slices) to train")
    for v in labeled:
        if v.label is None:
            raise DataError(f"{v.name or 'a labeled image'} has no labels")
        top = int(v.label.max())
        if top >= num_classes:
            raise DataError(f"labels of {v.name or 'an image'} hold value {top}, but there are only "
                            f"{num_classes} classes (0..{num_classes - 1})")
        if not (v.label > 0).any():
            raise DataError(f"labels of {v.name or 'an image'} are all background: label some structure first")
    dims = {v.image.ndim for v in labeled + unlabeled}
    if len(dims) > 1:
        raise DataError("all images must be 2D, or all 3D: found both")
    return dims.pop()


class Trainer:
    """Trains a ``ModelPair`` with DMD; ``run()`` yields a ``Progress`` per step, ``stop()`` ends it.

    ``init`` warm-starts both networks from a checkpoint; with ``resume=True`` the optimiser,
    iteration and random state are restored too, so the run continues where it stopped.
    """

    def __init__(self, labeled: list[Volume], unlabeled: list[Volume], config: TrainConfig,
                 run_dir: Path | None = None, init: Path | None = None, resume: bool = False):
        if resume and init is None:
            raise DataError("resuming needs the checkpoint of the run to continue (init, --init)")
        ndim = check_volumes(labeled, unlabeled, config.num_classes)
        self.patch = config.patch_size or choose_patch_size([v.image.shape for v in labeled + unlabeled])
        self.config = config = replace(config, patch_size=self.patch)  # the saved model remembers its patch
        self.device = resolve_device(config.device)
        self.dtype = resolve_precision(config.precision, self.device)
        if len(self.patch) != ndim:
            raise DataError(f"patch size {self.patch} has {len(self.patch)} values for {ndim}-D images")
        self.run_dir = Path(run_dir) if run_dir else None
        self.checkpoint_path: Path | None = None
        self._stop = threading.Event()
        self._memory = memory_format(ndim)

        state = None
        if init is not None:
            self.model, state = load_checkpoint(init, self.device)
            if self.model.ndim != ndim or self.model.num_classes != config.num_classes:
                raise CheckpointError(
                    f"{Path(init).name} is a {self.model.ndim}-D model for {self.model.num_classes} classes; "
                    f"the data is {ndim}-D with {config.num_classes} classes")
            self.model.config = config
        else:
            self.model = ModelPair.create(config, ndim, self.device)
        for net in self.model.nets:
            net.to(memory_format=self._memory)
        params = [p for net in self.model.nets for p in net.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.rng = np.random.default_rng(config.seed)
        self.start = 0
        if resume:
            if state is None:
                raise CheckpointError("this checkpoint holds no training state to resume from")
            self.optimizer.load_state_dict(state["optimizer"])
            self.rng.bit_generator.state = state["numpy_rng"]
            torch.set_rng_state(state["torch_rng"])
            if state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            if state.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], self.device)
            self.start = self.model.iteration
        else:
            self.model.iteration = 0
        self.sampler = PatchSampler(labeled, unlabeled, self.patch, self.rng, config.foreground_fraction)
        self.unlabeled_batch = config.unlabeled_batch

    def stop(self) -> None:
        """Ask the run to end after the current step (thread-safe); a checkpoint is written."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop.is_set()

    def lr_at(self, iteration: int) -> float:
        """Step schedule: ``lr × gamma^(iteration // lr_step)``."""
        return self.config.lr * self.config.lr_gamma ** (iteration // self.config.lr_step)

    def lambda_at(self, iteration: int) -> float:
        """λ, ramped up as ``exp(-5 (1 - t)²)`` over ``lambda_rampup`` iterations (constant when 0)."""
        cfg = self.config
        if cfg.lambda_rampup == 0:
            return cfg.lambda_distill
        t = min(iteration / cfg.lambda_rampup, 1.0)
        return cfg.lambda_distill * float(np.exp(-5.0 * (1.0 - t) ** 2))

    def step(self, iteration: int) -> tuple[float, float, float]:
        """One SGD step on a fresh batch; returns (supervised, distillation, total) loss."""
        cfg, nl = self.config, self.config.labeled_batch
        batch = self.sampler.batch(nl, self.unlabeled_batch)
        x = torch.from_numpy(batch["image"]).to(self.device).contiguous(memory_format=self._memory)
        y = torch.from_numpy(batch["label"]).to(self.device)
        m = torch.from_numpy(batch["mask"]).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(iteration)
        for net in self.model.nets:
            net.train()
        with autocast(self.device, self.dtype):
            logits = [net(x) for net in self.model.nets]
        sup = sum(supervised_loss(z[:nl], y, m) for z in logits)
        dis = distillation_loss(*logits, cfg.temperature) if cfg.lambda_distill > 0 else torch.zeros(())
        loss = sup + self.lambda_at(iteration) * dis
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(sup.detach()), float(dis.detach()), float(loss.detach())

    def save(self, iteration: int) -> Path | None:
        """Write the checkpoint of the run folder (atomically); ``None`` without a run folder."""
        self.model.iteration = iteration
        if self.run_dir is None:
            return None
        state = {"optimizer": self.optimizer.state_dict(), "numpy_rng": self.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "scaler": self.scaler.state_dict(),
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        self.checkpoint_path = save_model(self.model, self.run_dir / CHECKPOINT_NAME, state)
        return self.checkpoint_path

    def run(self) -> Iterator[Progress]:
        """Train to ``config.iterations``; yields after every step. A CUDA OOM becomes a ``DMDError``."""
        cfg = self.config
        if self.run_dir is not None:
            write_text(self.run_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
        t0, saved, last = time.perf_counter(), self.start, None
        for it in range(self.start, cfg.iterations):
            if self._stop.is_set():
                break
            try:
                sup, dis, loss = self.step(it)
            except torch.cuda.OutOfMemoryError as exc:
                raise DMDError(
                    f"the GPU ran out of memory with patch {self.patch} and batch "
                    f"{cfg.labeled_batch}+{cfg.unlabeled_batch}: lower the patch size or the batch, "
                    "or use precision bf16/fp16") from exc
            done = it + 1
            if not np.isfinite(loss):
                raise DMDError(f"training diverged at iteration {done} (loss {loss}): lower the learning rate")
            ckpt = None
            if done == cfg.iterations or done % cfg.checkpoint_every == 0:
                ckpt, saved = self.save(done), done
            elapsed = time.perf_counter() - t0
            rate = (done - self.start) / elapsed
            last = Progress(done, cfg.iterations, sup, dis, loss, self.lr_at(it), elapsed,
                            (cfg.iterations - done) / rate, rate, str(self.device), ckpt)
            yield last
        if last is not None and saved != last.iteration:
            yield replace(last, checkpoint=self.save(last.iteration))
