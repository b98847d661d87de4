"""What runs in the worker thread: training and prediction as generators of plain messages.

The generators never touch Qt, widgets or layers. They yield ``Started``, the engine's
``Progress`` after every step, an ``ImageResult`` per image at every refresh, ``Refreshed`` when a
refresh is complete, and ``Finished`` (or ``Failed`` with a message fit to show a user) last.
Errors are yielded, not raised, so napari never shows a traceback for bad input.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..errors import DMDError
from .pairing import TrainingSet, build_volumes
from .preview import Speed
from .results import contrast_top

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """The run is set up (volumes normalised, networks built)."""

    device: str
    precision: str  # what runs in which precision, and why
    patch: tuple[int, ...]
    labeled: int
    unlabeled: int
    start: int
    total: int
    trained_before: int = 0  # iterations the model had before this run (a warm start)


@dataclass(frozen=True)
class ImageResult:
    """Prediction of one image: label map, disagreement map and its per-slice means."""

    name: str
    labels: np.ndarray
    disagreement: np.ndarray
    slice_scores: np.ndarray
    volume_score: float
    iteration: int
    contrast: float | None = None  # the disagreement layer's upper contrast limit (computed here, not on the GUI)


@dataclass(frozen=True)
class Predicting:
    """Predictions of ``count`` images with the model of ``iteration`` begin."""

    iteration: int
    count: int


@dataclass(frozen=True)
class Refreshed:
    """All images were predicted with the model of ``iteration``."""

    iteration: int
    final: bool


@dataclass(frozen=True)
class Finished:
    """The run ended: completed, stopped, or (``aborted``) cancelled by closing."""

    model: object  # napari_dmd.checkpoint.ModelPair
    checkpoint: Path | None
    iteration: int
    stopped: bool
    aborted: bool
    precision: str = ""  # what the run computed in at its end, and why (a fallback to fp32 says so)
    speed: Speed | None = None  # measured, for the next run's estimate


@dataclass(frozen=True)
class Failed:
    """The run could not go on; ``message`` is fit to show a user."""

    message: str


class Aborted(Exception):
    """Raised inside a prediction when the dock or the viewer is closing."""


class Control:
    """Thread-safe stop/abort flags shared by the dock and the worker, and a 'done' event."""

    def __init__(self) -> None:
        self._stop, self._abort, self.done = threading.Event(), threading.Event(), threading.Event()
        self._trainer = None
        self._lock = threading.Lock()

    def attach(self, trainer) -> None:
        """Remember the trainer so ``stop`` reaches it (even a stop asked before it existed)."""
        with self._lock:
            self._trainer = trainer
            if self._stop.is_set():
                trainer.stop()

    def detach(self) -> None:
        """Forget the trainer (its optimizer and volumes are freed with it)."""
        with self._lock:
            self._trainer = None

    def stop(self) -> None:
        """End training after the current step; the final checkpoint and predictions follow."""
        with self._lock:
            self._stop.set()
            if self._trainer is not None:
                self._trainer.stop()

    def abort(self) -> None:
        """Like ``stop``, without the final predictions (the dock or the viewer is closing)."""
        self._abort.set()
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has finished; False on timeout."""
        return self.done.wait(timeout)

    def check(self, *_progress) -> None:
        """A prediction's progress callback: ``Aborted`` once an abort was asked."""
        if self._abort.is_set():
            raise Aborted()


@dataclass
class TrainJob:
    """Everything the training thread needs; built on the GUI thread from the layers."""

    data: TrainingSet
    config: TrainConfig
    run_dir: Path | None = None
    init: Path | None = None
    refresh_every: int = 500
    first_refresh: int | None = None  # an earlier first refresh (a first look soon on a CPU)
    minutes: float | None = None  # stop after this much training time
    batch_size: int = 4

    def refresh_due(self, iteration: int, total: int) -> bool:
        """Whether predictions are refreshed after ``iteration``."""
        return iteration == total or iteration == self.first_refresh or iteration % max(1, self.refresh_every) == 0


def _failure(exc: BaseException, what: str) -> Failed:
    try:
        import torch

        oom = isinstance(exc, torch.cuda.OutOfMemoryError)
    except Exception:  # torch without CUDA support
        oom = False
    if oom:
        return Failed(f"the GPU ran out of memory while {what}: lower the patch size or the batch, "
                      "or choose precision bf16/fp16")
    if isinstance(exc, DMDError):
        return Failed(str(exc))
    if isinstance(exc, MemoryError):
        return Failed(f"out of memory while {what}: lower the patch size or the batch, or use fewer images")
    log.exception("napari-dmd: unexpected error while %s", what)
    return Failed(f"unexpected error while {what}: {type(exc).__name__}: {exc}")


def predict_images(model, images: list[tuple[str, np.ndarray]], patch: tuple[int, ...] | None,
                   iteration: int, control: Control, batch_size: int = 4) -> Iterator[object]:
    """``Predicting``, then one ``ImageResult`` per image; an abort ends it within a batch of windows."""
    from ..inference import predict

    yield Predicting(iteration, len(images))
    for name, image in images:
        try:
            control.check()
            pred = predict(model, image, patch_size=patch, batch_size=batch_size, progress=control.check)
        except Aborted:
            return
        yield ImageResult(name, pred.labels, pred.disagreement, pred.slice_scores, pred.volume_score, iteration,
                          contrast_top(pred.disagreement))


def preload() -> None:
    """Import what a run uses, on the GUI thread while the dock opens. Imported for the first time in
    the worker's thread, a module's loading holds the interpreter lock for up to a few hundred
    milliseconds at a time and stalls the viewer (torch's optimisers load ``torch._dynamo``, some
    800 modules, when the first one is made)."""
    import torch._dynamo  # noqa: F401

    from .. import inference, training  # noqa: F401


def _release() -> None:
    """Give the GPU's cached memory back once a run has ended."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_and_predict(job: TrainJob, control: Control) -> Iterator[object]:
    """The training thread: train, refresh predictions when due (``TrainJob.refresh_due``) and at the end.

    It measures its own speed (set-up, training iterations without the predictions, predicted
    voxels) for the next run's estimate. When it ends, nothing of the run is kept but the model:
    the trainer (optimizer state, normalised volumes) is dropped and the GPU's cache emptied.
    """
    what = "preparing the training data"
    trainer = None
    t0 = time.perf_counter()
    try:
        from ..training import Trainer

        labeled, unlabeled = build_volumes(job.data)
        what = "setting up the networks"
        trainer = Trainer(labeled, unlabeled, job.config, run_dir=job.run_dir, init=job.init)
        del labeled, unlabeled
        control.attach(trainer)
        setup = time.perf_counter() - t0
        yield Started(str(trainer.device), trainer.precision.describe(), tuple(trainer.patch),
                      len(trainer.sampler.labeled), len(job.data.unlabeled), trainer.start, trainer.config.iterations,
                      trainer.model.trained_before)
        what = "training"
        refreshed, last, progress = -1, trainer.start, None
        predicting, in_training = [0.0, 0.0], 0.0  # seconds and megavoxels predicted; seconds before the last step
        for progress in trainer.run():
            if progress.iteration != last:  # (the engine repeats its last step with the final checkpoint)
                last, in_training = progress.iteration, predicting[0]
            yield progress
            if job.minutes is not None and progress.elapsed >= 60 * job.minutes:
                control.stop()
            if job.refresh_due(last, progress.total) and not control.stopped and last != refreshed:
                what = "predicting"
                yield from _timed(predict_images(trainer.model, job.data.images, trainer.patch, last, control,
                                                 job.batch_size), job.data.images, predicting)
                refreshed = last
                yield Refreshed(last, last == progress.total)
                what = "training"
        if not control.aborted and refreshed != last:
            what = "predicting"
            yield from _timed(predict_images(trainer.model, job.data.images, trainer.patch, last, control,
                                             job.batch_size), job.data.images, predicting)
            yield Refreshed(last, True)
        speed = None if progress is None or last == trainer.start else Speed(
            setup, (progress.elapsed - in_training) / (last - trainer.start),
            predicting[0] / predicting[1] if predicting[1] else None, trainer.precision.name)
        model, checkpoint, precision = trainer.model, trainer.checkpoint_path, trainer.precision.describe()
        trainer = None
        control.detach()
        yield Finished(model, checkpoint, last, control.stopped, control.aborted, precision, speed)
    except Exception as exc:
        yield _failure(exc, what)
    finally:
        trainer = None
        control.detach()
        _release()
        control.done.set()


def _timed(messages: Iterator[object], images: list[tuple[str, np.ndarray]], spent: list[float]) -> Iterator[object]:
    """Pass on a prediction's messages, adding its seconds and megavoxels to ``spent`` (once complete)."""
    t0, done = time.perf_counter(), 0
    for msg in messages:
        done += isinstance(msg, ImageResult)
        yield msg
    if done == len(images):
        spent[0] += time.perf_counter() - t0
        spent[1] += sum(np.size(image) for _, image in images) / 1e6


def predict_only(model, images: list[tuple[str, np.ndarray]], control: Control,
                 batch_size: int = 4) -> Iterator[object]:
    """The prediction thread for a loaded model: one ``ImageResult`` per image, then ``Refreshed``."""
    try:
        yield from predict_images(model, images, None, model.model_iterations, control, batch_size)
        yield Refreshed(model.model_iterations, True)
        yield Finished(model, None, model.model_iterations, control.stopped, control.aborted)
    except Exception as exc:
        yield _failure(exc, "predicting")
    finally:
        _release()
        control.done.set()
