"""Deep Mutual Distillation training as an iterator of small progress reports.

The same ``Trainer`` runs in one process or in several (``distributed``): there each process takes
its share of the global batch, and the step equals the one-process step of the whole batch.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .augment import Augmentation
from .channels import describe
from .checkpoint import ModelPair, load_checkpoint, save_model
from .config import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, TrainConfig
from .data import PatchSampler, Volume
from .distributed import (
    World,
    agreed_precision,
    current_world,
    data_parallel,
    lost_process,
    rank_generators,
    split_batch,
    synchronise_batch_norm,
)
from .errors import CheckpointError, DataError, DMDError
from .io import write_text
from .mixing import copy_paste
from .networks import SplitStatistics, splits_statistics
from .outputs import Outputs
from .plan import Plan
from .precision import Precision, remember_fallback
from .runtime import memory_format, resolve_device
from .spacing import choose_patch, data_spacing
from .step import Batch, DMDStep, Guard, Step

LOG_COLUMNS = ("iteration", "sup_loss", "distill_loss", "loss", "lambda", "lr", "precision", "skipped", "seconds")
SPLIT_SHARE = 0.5  # 'auto' normalises labeled and unlabeled patches apart where one image holds more of the reviewed
# voxels than this share: its statistics would single that image out (README, "Batch-norm statistics")
SETTLE_BATCHES = 16  # batches whose batch-norm statistics, at the current weights, replace the running ones


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
    skipped: int = 0
    precision: str = ""
    note: str = ""


def check_volumes(labeled: list[Volume], unlabeled: list[Volume], num_classes: int) -> int:
    """The common dimensionality of the volumes; ``DataError`` for data that cannot train (no labels, a
    label beyond the classes, no structure, 2D and 3D mixed, different channel counts)."""
    if not labeled:
        raise DataError("no labeled image: label at least one image (or some of its slices) to train")
    structure = False
    for v in labeled:
        if v.label is None:
            raise DataError(f"{v.name or 'a labeled image'} has no labels")
        top = int(v.label.max())
        if top >= num_classes:
            raise DataError(f"labels of {v.name or 'an image'} hold value {top}, but there are only "
                            f"{num_classes} classes (0..{num_classes - 1})")
        structure = structure or v.has_structure()
    if not structure:  # an empty label says "nothing here", but some image must show the structure
        raise DataError("every labeled image is all background: label some structure in at least one image")
    dims = {v.image.ndim for v in labeled + unlabeled}
    if len(dims) > 1:
        raise DataError("all images must be 2D, or all 3D: found both")
    first = labeled[0]
    other = next((v for v in labeled + unlabeled if v.image.count != first.image.count), None)
    if other is not None:
        raise DataError(f"{other.name or 'an image'} has {other.image.count} channel(s), {first.name or 'the first'} "
                        f"{first.image.count}: every image needs the same channels")
    return dims.pop()


class Trainer:
    """Trains a ``ModelPair`` with DMD; ``run()`` yields a ``Progress`` per step, ``stop()`` ends it.

    ``init`` warm-starts both networks from a checkpoint; with ``resume=True`` the optimiser,
    iteration and random state are restored too, so the run continues where it stopped.
    ``world`` (default: the process group joined, if any) makes this process one of several:
    rank 0 alone writes ``run_dir``, every process stops together.
    """

    def __init__(self, labeled: list[Volume], unlabeled: list[Volume], config: TrainConfig,
                 run_dir: Path | None = None, init: Path | None = None, resume: bool = False,
                 world: World | None = None):
        if resume and init is None:
            raise DataError("resuming needs the checkpoint of the run to continue (init, --init)")
        ndim = check_volumes(labeled, unlabeled, config.num_classes)
        self.world = world = world if world is not None else current_world()
        self.device = world.device or resolve_device(config.device)
        state = None
        if init is not None:  # the networks keep the pooling and channels they were built with
            model, state = load_checkpoint(init, self.device)
            if len(model.channels) != labeled[0].image.count:
                raise CheckpointError(f"{Path(init).name} takes {describe(model.channels)}; the images have "
                                      f"{labeled[0].image.count}")
            config = replace(config, spacing=model.config.spacing, channels=model.channels)
        else:
            config = replace(config, channels=labeled[0].image.names)
            if config.spacing is None:
                config = replace(config, spacing=data_spacing([v.spacing for v in labeled + unlabeled]))
        self.patch = config.patch_size or choose_patch([v.image.shape for v in labeled + unlabeled], config.spacing)
        self.config = config = replace(config, patch_size=self.patch)  # the saved model remembers its patch
        self.labeled_batch, self.unlabeled_batch = split_batch(config.labeled_batch, config.unlabeled_batch,
                                                               world.size)
        if len(self.patch) != ndim:
            raise DataError(f"patch size {self.patch} has {len(self.patch)} values for {ndim}-D images")
        self.run_dir = Path(run_dir) if run_dir else None
        self.checkpoint_path: Path | None = None
        self._stop = threading.Event()
        self._memory = memory_format(ndim)

        if init is not None:
            self.model = model
            if self.model.ndim != ndim or self.model.num_classes != config.num_classes:
                raise CheckpointError(
                    f"{Path(init).name} is a {self.model.ndim}-D model for {self.model.num_classes} classes; "
                    f"the data is {ndim}-D with {config.num_classes} classes")
            self.model.config = config
        else:
            self.model = ModelPair.create(config, ndim, self.device)
        self.plan = Plan.of_config(config, self.device, self.patch, self.labeled_batch + self.unlabeled_batch)
        precision = self.plan.choose_precision()
        if world.distributed:
            precision = agreed_precision(precision)
            for net in self.model.nets:
                synchronise_batch_norm(net, self.device.type == "cuda")
        for net in self.model.nets:
            precision.apply(net.to(memory_format=self._memory))
        self._buffers = [b for net in self.model.nets for b in net.buffers()]
        self.dmd = DMDStep(list(self.model.nets), list(self.model.nets), config, precision, self.device, world)
        self.guard = Guard(self.dmd)
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
        else:  # a warm start: a new run from the model's weights, which keep their own count
            self.model.trained_before, self.model.iteration = self.model.model_iterations, 0
        if world.rank > 0:  # its own patches and dropout masks
            self.rng, torch_seed = rank_generators(config.seed, world.rank, self.start)
            torch.manual_seed(torch_seed)
        self.sampler = PatchSampler(labeled, unlabeled, self.patch, self.rng, config.foreground_fraction,
                                    config.labeled_sampling,
                                    Augmentation(config.augment_intensity, config.augment_spatial))
        nets: list[torch.nn.Module] = list(self.model.nets)
        if config.batch_norm == "auto":  # apart while one image holds most of what supervises (README)
            split = max(self.sampler.reviewed_voxels) > SPLIT_SHARE * sum(self.sampler.reviewed_voxels)
        else:
            split = config.batch_norm == "split"
        if split and splits_statistics(nets[0], self.patch, config.labeled_batch,
                                       config.unlabeled_batch):  # the global batch's parts
            nets = [SplitStatistics(net, self.labeled_batch) for net in nets]
        self.batch_norm = "split" if nets[0] is not self.model.nets[0] else "joint"  # what runs ('auto' resolved)
        self.dmd.nets = [data_parallel(net, world) for net in nets] if world.distributed else nets

    @property
    def _nets(self) -> list[torch.nn.Module]:
        """The networks as the step runs them (wrapped for split statistics or several processes)."""
        return self.dmd.nets

    @property
    def precision(self) -> Precision:
        """The precision the step computes in now (fp32 after a fallback)."""
        return self.dmd.precision

    @precision.setter
    def precision(self, precision: Precision) -> None:
        self.dmd.precision = precision

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Both networks' SGD optimiser."""
        return self.dmd.optimizer

    @property
    def scaler(self) -> torch.amp.GradScaler:
        """The fp16 loss scaler (disabled in other precisions)."""
        return self.dmd.scaler

    @property
    def skipped(self) -> int:
        """Steps skipped so far because something was not finite."""
        return self.guard.skipped

    def stop(self) -> None:
        """Ask the run to end after the current step (thread-safe); a checkpoint is written."""
        self._stop.set()

    def _stop_requested(self) -> bool:
        """Whether to stop before the next step: asked here, or (distributed) in any process."""
        if self.world.distributed and self.world.agree([float(self._stop.is_set())])[0]:
            self._stop.set()
        return self._stop.is_set()

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop.is_set()

    def lr_at(self, iteration: int) -> float:
        """Step schedule: ``lr × gamma^(iteration // lr_step)``."""
        return self.config.lr * self.config.lr_gamma ** (iteration // self.config.lr_step)

    def ramp_at(self, iteration: int) -> float:
        """The share of the unlabeled terms' weights at this run's ``iteration``: ``exp(-5 (1 - t)²)`` over the
        model's first ``lambda_rampup`` iterations (1 when 0), counted over the model's own iterations, so a
        warm start of a model trained past the ramp keeps the full weights."""
        cfg = self.config
        if cfg.lambda_rampup == 0:
            return 1.0
        t = min((self.model.trained_before + iteration) / cfg.lambda_rampup, 1.0)
        return float(np.exp(-5.0 * (1.0 - t) ** 2))

    def lambda_at(self, iteration: int) -> float:
        """λ at this run's ``iteration`` (ramped up, ``ramp_at``)."""
        return self.config.lambda_distill * self.ramp_at(iteration)

    def _mixes(self, iteration: int) -> bool:
        """Whether this step's batch is mixed by copy-paste: with probability ``mix_probability`` from the model's
        iteration ``mix_start`` on, when there are unlabeled patches (nothing is drawn when it is off)."""
        cfg = self.config
        return (cfg.mix_probability > 0 and self.unlabeled_batch > 0
                and self.model.trained_before + iteration >= cfg.mix_start and self.rng.random() < cfg.mix_probability)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast dtype the run computes in now (fp32 after a fallback)."""
        return self.precision.dtype

    def step(self, iteration: int) -> Step:
        """One SGD step on a fresh batch. A non-finite loss, gradient or batch-norm statistic skips
        the update and puts the batch-norm statistics back as they were (``Step.problem`` says what)."""
        batch = self.sampler.batch(self.labeled_batch, self.unlabeled_batch)
        if self._mixes(iteration):
            batch = copy_paste(batch, self.config.mix_ratio, self.rng)  # every patch now carries labels and a mask
        x = torch.from_numpy(batch["image"]).to(self.device).contiguous(memory_format=self._memory)
        y = torch.from_numpy(batch["label"]).to(self.device)
        m = torch.from_numpy(batch["mask"]).to(self.device)
        pseudo = self.config.pseudo_weight * self.ramp_at(iteration) if self.config.pseudo_weight > 0 else 0.0
        return self.dmd(Batch(x, y, m), self.lr_at(iteration), self.lambda_at(iteration), pseudo)

    def settle_statistics(self, iteration: int) -> None:
        """Replace the batch-norm running statistics, which predictions normalise with, by their average over
        ``SETTLE_BATCHES`` batches at the current weights (dropout off): the unlabeled part of a training batch
        when the parts are normalised apart, the whole batch otherwise. The running statistics trail the
        weights by about ten steps, which early in a run, while the weights move fast, mispredicts images
        other than the labeled ones (README, "Batch-norm statistics"). Patches come from a generator of their
        own (seeded by the seed and ``iteration``), so training draws the same patches with or without it;
        statistics that come out not finite leave the old ones in place."""
        nets = self.model.nets
        norms = [m for net in nets for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        drops = [m for net in nets for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
        modes, momenta, saved = [net.training for net in nets], [m.momentum for m in norms], \
            [b.clone() for b in self._buffers]
        sampler_rng, self.sampler.rng = self.sampler.rng, np.random.default_rng([self.config.seed, iteration,
                                                                                 self.world.rank])
        try:
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
            for net in nets:
                net.train()
            for d in drops:
                d.eval()
            with torch.no_grad(), self.precision.autocast(self.device):
                for _ in range(SETTLE_BATCHES):
                    x = torch.from_numpy(self._settle_batch()).to(self.device).contiguous(memory_format=self._memory)
                    for net in nets:
                        net(x)
            if not all(torch.isfinite(b).all() for b in self._buffers if b.is_floating_point()):
                self.dmd.restore(saved)
        finally:
            self.sampler.rng = sampler_rng
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
            for net, mode in zip(nets, modes):
                net.train(mode)

    def _settle_batch(self) -> np.ndarray:
        """Images of one batch whose statistics the running ones follow (``settle_statistics``)."""
        if self.batch_norm == "split":
            return np.stack([self.sampler.unlabeled_patch() for _ in range(self.unlabeled_batch)])
        return self.sampler.batch(self.labeled_batch, self.unlabeled_batch)["image"]

    def save(self, iteration: int) -> Path | None:
        """Write the checkpoint of the run folder (atomically); ``None`` without a run folder."""
        self.model.iteration = iteration
        if self.run_dir is None:
            return None
        if not self.world.writes:
            self.checkpoint_path = self.run_dir / CHECKPOINT_NAME  # written by rank 0
            return self.checkpoint_path
        state = {"optimizer": self.optimizer.state_dict(), "numpy_rng": self.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "scaler": self.scaler.state_dict(),
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        self.checkpoint_path = save_model(self.model, self.run_dir / CHECKPOINT_NAME, state)
        Outputs(self.run_dir, "train").wrote(self.checkpoint_path)
        return self.checkpoint_path

    def runtime(self) -> dict:
        """Where and how the run computes, for config.json and the user."""
        return {"device": str(self.device), "processes": self.world.size, "torch": torch.__version__,
                **self.precision.to_dict()}

    @property
    def _writes(self) -> bool:
        """Whether this process writes the run folder."""
        return self.run_dir is not None and self.world.writes

    def _write_config(self) -> None:
        if self._writes:
            write_text(self.run_dir / CONFIG_NAME,
                       json.dumps({**self.config.to_dict(), "runtime": self.runtime()}, indent=1))
            Outputs(self.run_dir, "train").wrote(self.run_dir / CONFIG_NAME)

    def _log(self, row: tuple) -> None:
        if not self._writes:
            return
        path = self.run_dir / LOG_NAME
        new = not path.exists()
        with path.open("a", encoding="utf-8") as f:
            if new:
                f.write(",".join(LOG_COLUMNS) + "\n")
            f.write(",".join(str(v) for v in row) + "\n")
        if new:
            Outputs(self.run_dir, "train").wrote(path, appended=True)

    def run(self) -> Iterator[Progress]:
        """Train to ``config.iterations``; yields after every step. A CUDA OOM becomes a ``DMDError``."""
        cfg = self.config
        if self._writes:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        t0, saved, last = time.perf_counter(), self.start, None
        for it in range(self.start, cfg.iterations):
            try:
                if self._stop_requested():
                    break
                step = self.step(it)
            except torch.cuda.OutOfMemoryError as exc:
                raise DMDError(
                    f"the GPU ran out of memory with patch {self.patch} and batch "
                    f"{self.labeled_batch}+{self.unlabeled_batch}: lower the patch size or the batch, "
                    "or use precision bf16/fp16") from exc
            except RuntimeError as exc:
                if not self.world.distributed:
                    raise
                raise self._lost(exc, it, saved) from exc
            done = it + 1
            checked = self.precision
            note = self.guard.after(step, done, self.lr_at(it))
            if note:
                if self.world.writes:
                    remember_fallback(checked, self.precision)
                self._write_config()
            elapsed = time.perf_counter() - t0
            self._log((done, f"{step.sup_loss:.6g}", f"{step.distill_loss:.6g}", f"{step.loss:.6g}",
                       f"{self.lambda_at(it):.6g}", f"{self.lr_at(it):.6g}", checked.name, self.skipped,
                       f"{elapsed:.3f}"))
            ckpt = None
            if done == cfg.iterations or done % cfg.checkpoint_every == 0:
                self.settle_statistics(done)
                ckpt, saved = self.save(done), done
            rate = (done - self.start) / elapsed
            last = Progress(done, cfg.iterations, step.sup_loss, step.distill_loss, step.loss, self.lr_at(it),
                            elapsed, (cfg.iterations - done) / rate, rate, str(self.device), ckpt, self.skipped,
                            self.precision.name, note)
            yield last
        if last is not None and saved != last.iteration:
            saved = last.iteration
            self.settle_statistics(saved)
            yield replace(last, checkpoint=self.save(saved), note="")
        try:
            self.world.barrier()  # no process leaves before rank 0 has written the checkpoint
        except RuntimeError as exc:
            raise self._lost(exc, saved, saved) from exc

    def _lost(self, exc: RuntimeError, done: int, saved: int) -> DMDError:
        """The error of a distributed run that lost a process after ``done`` iterations; rank 0 writes
        the checkpoint of iteration ``done`` first (unless it wrote it already at ``saved``)."""
        lost = lost_process(exc)
        if self.run_dir is None:
            return lost
        if not self.world.writes:
            return type(lost)(f"{lost}; rank 0 writes the checkpoints: {self.run_dir / CHECKPOINT_NAME} holds the "
                              "last one it wrote")
        path = self.save(done) if done > saved else self.run_dir / CHECKPOINT_NAME
        if not path.exists():
            return type(lost)(f"{lost}; no iteration finished, nothing written")
        return type(lost)(f"{lost} after iteration {done}; checkpoint of iteration {max(done, saved)} in {path} "
                          f"(continue with --init {path} --resume)")
