"""Deep Mutual Distillation training as an iterator of small progress reports.

The same ``Trainer`` runs in one process or in several (``distributed``): there each process takes
its share of the global batch, and the step equals the one-process step of the whole batch.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .augment import Augmentation
from .channels import describe
from .checkpoint import ModelPair, load_checkpoint
from .compiling import CompiledNets
from .config import CHECKPOINT_NAME, LOG_NAME, TrainConfig
from .data import PatchSampler, Volume
from .distributed import (
    World,
    agreed_precision,
    current_world,
    data_parallel,
    rank_generators,
    split_batch,
    synchronise_batch_norm,
)
from .errors import CheckpointError, DataError, DMDError
from .mixing import copy_paste
from .networks import SplitStatistics, splits_statistics
from .plan import Plan
from .precision import Precision, remember_fallback
from .prefetch import BatchMaker
from .run_folder import RunFolder
from .runtime import memory_format, resolve_device
from .settle import SETTLE_BATCHES, settle_statistics
from .spacing import choose_patch, data_spacing
from .step import DMDStep, Guard, Step

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "SETTLE_BATCHES", "Progress", "Trainer", "check_volumes"]
SPLIT_SHARE = 0.5  # 'auto' normalises labeled and unlabeled patches apart where one image holds more of the reviewed
# voxels than this share: its statistics would single that image out (README, "Batch-norm statistics")


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


def _resolve(config: TrainConfig, labeled: list[Volume], unlabeled: list[Volume], ndim: int, device: torch.device,
             init: Path | None) -> tuple[TrainConfig, ModelPair | None, dict | None]:
    """The run's settings (spacing, channels and patch from the data or the checkpoint ``init``), the model of
    ``init`` and its training state; ``CheckpointError`` for a checkpoint that does not fit the data."""
    model = state = None
    if init is not None:  # the networks keep the pooling and channels they were built with
        model, state = load_checkpoint(init, device)
        if len(model.channels) != labeled[0].image.count:
            raise CheckpointError(f"{Path(init).name} takes {describe(model.channels)}; the images have "
                                  f"{labeled[0].image.count}")
        if model.ndim != ndim or model.num_classes != config.num_classes:
            raise CheckpointError(f"{Path(init).name} is a {model.ndim}-D model for {model.num_classes} classes; "
                                  f"the data is {ndim}-D with {config.num_classes} classes")
        config = replace(config, spacing=model.config.spacing, channels=model.channels)
    else:
        config = replace(config, channels=labeled[0].image.names)
        if config.spacing is None:
            config = replace(config, spacing=data_spacing([v.spacing for v in labeled + unlabeled]))
    patch = config.patch_size or choose_patch([v.image.shape for v in labeled + unlabeled], config.spacing)
    if len(patch) != ndim:
        raise DataError(f"patch size {patch} has {len(patch)} values for {ndim}-D images")
    return replace(config, patch_size=patch), model, state  # the saved model remembers its patch


def _running_nets(nets: list[torch.nn.Module], config: TrainConfig, reviewed: list[int],
                  labeled_batch: int) -> list[torch.nn.Module]:
    """``nets`` as the step runs them: with the labeled and unlabeled patches normalised apart (``SplitStatistics``)
    where ``config.batch_norm`` asks for it, or, for 'auto', while one image holds most of the ``reviewed`` voxels
    (README), and the patch gives each part enough values."""
    if config.batch_norm == "auto":
        split = max(reviewed) > SPLIT_SHARE * sum(reviewed)
    else:
        split = config.batch_norm == "split"
    if split and splits_statistics(nets[0], config.patch_size, config.labeled_batch,
                                   config.unlabeled_batch):  # the global batch's parts
        return [SplitStatistics(net, labeled_batch) for net in nets]
    return nets


def runtime(device: torch.device, world: World, dmd: DMDStep) -> dict:
    """Where and how a run computes, for config.json and the user."""
    return {"device": str(device), "processes": world.size, "torch": torch.__version__,
            "networks": dmd.running.describe(), **dmd.precision.to_dict()}


def _resume(dmd: DMDStep, rng: np.random.Generator, state: dict | None, device: torch.device) -> None:
    """The optimiser and random streams of a checkpoint's training ``state``."""
    if state is None:
        raise CheckpointError("this checkpoint holds no training state to resume from")
    dmd.load_optimizer(state["optimizer"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state.get("scaler") and dmd.scaler.is_enabled():
        dmd.scaler.load_state_dict(state["scaler"])
    if state.get("cuda_rng") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)


class Trainer:
    """Trains a ``ModelPair`` with DMD; ``run()`` yields a ``Progress`` per step, ``stop()`` ends it.

    ``init`` warm-starts both networks from a checkpoint; with ``resume=True`` the optimiser, iteration and random
    state are restored too, so the run continues where it stopped. ``world`` (default: the process group joined, if
    any) makes this process one of several: rank 0 alone writes ``run_dir``, every process stops together. ``ahead``
    draws each next batch while a step runs (default: on CUDA; measured slower on a 2-core CPU, benchmarks/README.md).
    """

    def __init__(self, labeled: list[Volume], unlabeled: list[Volume], config: TrainConfig,
                 run_dir: Path | None = None, init: Path | None = None, resume: bool = False,
                 world: World | None = None, ahead: bool | None = None):
        if resume and init is None:
            raise DataError("resuming needs the checkpoint of the run to continue (init, --init)")
        ndim = check_volumes(labeled, unlabeled, config.num_classes)
        self.world = world = world if world is not None else current_world()
        self.device = world.device or resolve_device(config.device)
        config, model, state = _resolve(config, labeled, unlabeled, ndim, self.device, init)
        self.config, self.patch, self.run_dir = config, config.patch_size, Path(run_dir) if run_dir else None
        self.labeled_batch, self.unlabeled_batch = split_batch(config.labeled_batch, config.unlabeled_batch,
                                                               world.size)
        self.folder, self.checkpoint_path = RunFolder(self.run_dir, world), None
        self._stop, self._memory = threading.Event(), memory_format(ndim)
        self.model = model or ModelPair.create(config, ndim, self.device)
        self.model.config = config
        self.plan = Plan.of_config(config, self.device, self.patch, self.labeled_batch + self.unlabeled_batch)
        precision = self.plan.choose_precision()
        if world.distributed:
            precision = agreed_precision(precision)
            for net in self.model.nets:
                synchronise_batch_norm(net, self.device.type == "cuda")
        for net in self.model.nets:
            precision.apply(net.to(memory_format=self._memory))
        self._buffers = [b for net in self.model.nets for b in net.buffers()]
        self.dmd = DMDStep(list(self.model.nets), config, precision, self.device, world)
        self.guard = Guard(self.dmd)
        self.rng, self.start = np.random.default_rng(config.seed), 0
        if resume:
            _resume(self.dmd, self.rng, state, self.device)
            self.start = self.model.iteration
        else:  # a warm start: a new run from the model's weights, which keep their own count
            self.model.trained_before, self.model.iteration = self.model.model_iterations, 0
        if world.rank > 0:  # its own patches and dropout masks
            self.rng, torch_seed = rank_generators(config.seed, world.rank, self.start)
            torch.manual_seed(torch_seed)
        self.sampler = PatchSampler(labeled, unlabeled, self.patch, self.rng, config.foreground_fraction,
                                    config.labeled_sampling,
                                    Augmentation(config.augment_intensity, config.augment_spatial))
        self.batches = BatchMaker(self._draw, self.rng, self.device, self._memory,
                                  self.device.type == "cuda" if ahead is None else ahead)
        nets = _running_nets(list(self.model.nets), config, self.sampler.reviewed_voxels, self.labeled_batch)
        self.batch_norm = "split" if nets[0] is not self.model.nets[0] else "joint"  # what runs ('auto' resolved)
        if self.dmd.teachers is not None and self.batch_norm == "split":
            self.dmd.teachers.running = [SplitStatistics(net, self.labeled_batch) for net in self.dmd.teachers.nets]
        nets = [data_parallel(net, world) for net in nets] if world.distributed else nets
        self.dmd.running = CompiledNets(nets, self.device, self.plan.compiled)

    @property
    def precision(self) -> Precision:
        """The precision the step computes in now (fp32 after a fallback)."""
        return self.dmd.precision

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
        """The unlabeled terms' share at this run's ``iteration``: ``exp(-5 (1 - t)²)`` over the model's first
        ``lambda_rampup`` iterations (1 when 0; a warm start past the ramp keeps the full weights)."""
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
        iteration ``mix_start`` on, with unlabeled patches (nothing is drawn when it is off)."""
        cfg = self.config
        return (cfg.mix_probability > 0 and self.unlabeled_batch > 0
                and self.model.trained_before + iteration >= cfg.mix_start and self.rng.random() < cfg.mix_probability)

    def _draw(self, iteration: int) -> dict[str, np.ndarray]:
        """The arrays of ``iteration``'s batch (copy-paste mixed when ``_mixes``)."""
        batch = self.sampler.batch(self.labeled_batch, self.unlabeled_batch)
        if self._mixes(iteration):
            batch = copy_paste(batch, self.config.mix_ratio, self.rng)  # every patch now carries labels and a mask
        return batch

    def step(self, iteration: int, more: bool = False) -> Step:
        """One SGD step on a fresh batch (``more``: the next one is drawn meanwhile, where batches are made ahead);
        a non-finite step changes nothing (``step.DMDStep``; ``Step.problem`` says what)."""
        pseudo = self.config.pseudo_weight * self.ramp_at(iteration) if self.config.pseudo_weight > 0 else 0.0
        return self.dmd(self.batches.take(iteration, more), self.lr_at(iteration), self.lambda_at(iteration), pseudo)

    def settle_statistics(self, iteration: int) -> None:
        """Running statistics averaged over ``SETTLE_BATCHES`` batches at the current weights (``settle.py``; README,
        "Batch-norm statistics"): of the unlabeled part when the parts are normalised apart, else of whole batches,
        from a generator of their own (seeded by the seed and ``iteration``): training draws the same patches."""
        self.batches.wait()  # the batch made ahead draws from the sampler's own generator
        sampler_rng, self.sampler.rng = self.sampler.rng, np.random.default_rng([self.config.seed, iteration,
                                                                                 self.world.rank])
        try:
            settle_statistics(self.model.nets, self.dmd.snapshot, self._settle_batch, self.precision, self.device,
                              self._memory)
        finally:
            self.sampler.rng = sampler_rng

    def _settle_batch(self) -> np.ndarray:
        """Images of one batch whose statistics the running ones follow (``settle_statistics``)."""
        if self.batch_norm == "split":
            return np.stack([self.sampler.unlabeled_patch() for _ in range(self.unlabeled_batch)])
        return self.sampler.batch(self.labeled_batch, self.unlabeled_batch)["image"]

    def save(self, iteration: int) -> Path | None:
        """Write the checkpoint of the run folder (atomically); ``None`` without a run folder."""
        self.model.iteration = iteration
        state = {"optimizer": self.dmd.optimizer.state_dict(), "numpy_rng": self.batches.rng_state(),
                 "torch_rng": torch.get_rng_state(), "scaler": self.dmd.scaler.state_dict(),
                 "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        self.checkpoint_path = self.folder.save(self.model, state) or self.checkpoint_path
        return self.checkpoint_path

    def run(self) -> Iterator[Progress]:
        """Train to ``config.iterations``; yields after every step. A CUDA OOM becomes a ``DMDError``."""
        try:
            yield from self._steps()
        finally:
            self.batches.close()

    def _steps(self) -> Iterator[Progress]:
        cfg = self.config
        self.folder.prepare()
        self.folder.write_config(cfg.to_dict(), runtime(self.device, self.world, self.dmd))
        t0, saved, last = time.perf_counter(), self.start, None
        for it in range(self.start, cfg.iterations):
            try:
                if self._stop_requested():
                    break
                step = self.step(it, more=it + 1 < cfg.iterations)
            except torch.cuda.OutOfMemoryError as exc:
                raise DMDError(f"the GPU ran out of memory with patch {self.patch} and batch {self.labeled_batch}+"
                               f"{self.unlabeled_batch}: lower the patch size or the batch, or use precision "
                               "bf16/fp16") from exc
            except RuntimeError as exc:
                if not self.world.distributed:
                    raise
                raise self.folder.lost(exc, it, saved, self.save) from exc
            done, checked = it + 1, self.precision
            fallback = self.guard.after(step, done, self.lr_at(it))  # the step's values: read here, once
            if fallback and self.world.writes:
                remember_fallback(checked, self.precision)
            note = "; ".join(filter(None, (self.dmd.note, fallback)))
            if note:
                self.folder.write_config(cfg.to_dict(), runtime(self.device, self.world, self.dmd))
            elapsed = time.perf_counter() - t0
            self.folder.log((done, f"{step.sup_loss:.6g}", f"{step.distill_loss:.6g}", f"{step.loss:.6g}",
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
            raise self.folder.lost(exc, saved, saved, self.save) from exc
