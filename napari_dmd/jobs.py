"""The dock's runs as plain Python: training and prediction as generators of plain messages.

A thread drives them (``plugin/job_thread.py``); they never touch Qt, widgets or layers. They yield
``Preparing`` (what the set-up does and how long), ``Started``, the engine's ``Progress`` after every
step, an ``ImageResult`` per image at every refresh, ``Refreshed`` when a refresh is complete, and
``Finished`` (or ``Failed`` with a message fit to show a user) last.
Errors are yielded, not raised, so napari never shows a traceback for bad input.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .channels import Channels
from .config import PREDICT_BATCH, RANKING_SLAB, REFRESH_WHOLE_MVOXELS, RunOptions, TrainConfig
from .data import Volume
from .errors import DMDError
from .pairing import TrainingSet, build_volumes
from .plan import Plan, preparing_text
from .spacing import data_spacing
from .speed_store import Speed

log = logging.getLogger(__name__)
CONTRAST_PERCENTILE = 99.5


def contrast_top(disagreement: np.ndarray) -> float:
    """The upper contrast limit of a disagreement map: its 99.5th percentile (at least 0.01)."""
    d = np.asarray(disagreement).ravel()
    sample = d[::max(1, d.size // 1_000_000)]  # a percentile of a million values is plenty
    return max(0.01, float(np.percentile(sample, CONTRAST_PERCENTILE)))


@dataclass(frozen=True)
class Started:
    """The run is set up (volumes checked, networks built); ``plan`` is the run's own, the key of its measured
    speed."""

    plan: Plan
    precision: str  # what runs in which precision, and why
    labeled: int
    unlabeled: int
    start: int
    total: int
    trained_before: int = 0  # iterations the model had before this run (a warm start)
    limit: float | None = None  # the run's time limit in seconds (RunOptions.minutes), if any


@dataclass(frozen=True)
class Preparing:
    """What the run does before its first iteration, and how long that takes, in words."""

    text: str


@dataclass(frozen=True)
class ImageResult:
    """Prediction of one image, whole or of the slices ``rows`` (start, stop) along axis 0 only: label map,
    disagreement map and 'label this next' scores per slice of what was predicted."""

    name: str
    labels: np.ndarray
    disagreement: np.ndarray
    slice_scores: np.ndarray
    volume_score: float
    iteration: int
    contrast: float | None = None  # the disagreement layer's upper contrast limit (computed here, not on the GUI)
    rows: tuple[int, int] | None = None  # None: the whole image


@dataclass(frozen=True)
class View:
    """What the user looks at: an image and its slice in view along axis 0."""

    image: str
    index: int


@dataclass(frozen=True)
class Predicting:
    """Predictions of ``count`` images (whole, or the slab in view) with the model of ``iteration`` begin."""

    iteration: int
    count: int


@dataclass(frozen=True)
class Refreshed:
    """A refresh with the model of ``iteration`` is complete (``final``: every image whole, at the end)."""

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
        self._view: View | None = None
        self._lock = threading.Lock()

    def look_at(self, view: View | None) -> None:
        """The dock says what the user looks at (a refresh during training predicts it first)."""
        with self._lock:
            self._view = view

    @property
    def view(self) -> View | None:
        """What the user looked at last, as the dock said."""
        with self._lock:
            return self._view

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
    options: RunOptions
    run_dir: Path | None = None
    init: Path | None = None


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


Item = tuple[str, np.ndarray | Channels, tuple[int, int] | None]  # an image to predict: name, image, rows (None: whole)


def refresh_items(images: list[tuple[str, np.ndarray | Channels]], view: View | None, final: bool) -> list[Item]:
    """What a refresh predicts. At the end of a run: every image whole (the ranking covers them all). During
    training: only the image in view (nothing when none is), whole while it holds at most
    ``REFRESH_WHOLE_MVOXELS``, else the slab of ``RANKING_SLAB`` slices around the slice in view of a 3D image,
    so a refresh costs one case (on clinical-size data a slab), not every volume; the others are predicted when
    the user looks at them, at the end of the run and on request."""
    if final:
        return [(name, image, None) for name, image in images]
    shown = next((image for name, image in images if view is not None and name == view.image), None)
    if shown is None:
        return []
    channels = Channels.of(shown)
    if channels.size <= REFRESH_WHOLE_MVOXELS * 1e6 or channels.ndim != 3:
        return [(view.image, shown, None)]
    half = RANKING_SLAB // 2
    start = int(np.clip(view.index - half, 0, channels.shape[0] - 1))
    return [(view.image, shown, (start, min(channels.shape[0], view.index + half + 1)))]


def predict_images(model, items: list[Item], patch: tuple[int, ...] | None, iteration: int,
                   control: Control, volumes: Mapping[str, Volume] | None = None) -> Iterator[object]:
    """``Predicting``, then one ``ImageResult`` per item; an abort ends it within a batch of windows. An image
    that is one of the training ``volumes`` is normalised with that volume's statistics (computed once). A slab
    (``rows`` given) is a quick look: its windows do not overlap (stride = patch: in 3D an eighth of the windows
    of the default half-patch overlap), so a CT's slab shows within seconds."""
    from .inference import predict

    yield Predicting(iteration, len(items))
    for name, image, rows in items:
        try:
            control.check()
            stats = volumes[name].stats if volumes and name in volumes else None
            pred = predict(model, image, patch_size=patch, stride=None if rows is None else patch,
                           batch_size=PREDICT_BATCH, progress=control.check, rows=rows, stats=stats)
        except Aborted:
            return
        yield ImageResult(name, pred.labels, pred.disagreement, pred.slice_scores, pred.volume_score, iteration,
                          contrast_top(pred.disagreement), rows)


def preload() -> None:
    """Import what a run uses, on the GUI thread while the dock opens. Imported for the first time in
    the worker's thread, a module's loading holds the interpreter lock for up to a few hundred
    milliseconds at a time and stalls the viewer (torch's optimisers load ``torch._dynamo``, some
    800 modules, when the first one is made)."""
    import torch._dynamo  # noqa: F401

    from . import inference, training  # noqa: F401


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
    import torch

    what = "preparing the training data"
    trainer = None
    t0 = time.perf_counter()
    threads = torch.get_num_threads()  # PyTorch's, given back when the run ends
    try:
        from .training import Trainer

        torch.set_num_threads(training_threads(job.options.threads, threads))

        labeled, unlabeled = build_volumes(job.data)
        what = "setting up the networks"
        yield Preparing(preparing_text(replace(job.config, channels=labeled[0].image.names),
                                       [v.image.shape for v in labeled + unlabeled],
                                       data_spacing([v.spacing for v in labeled + unlabeled])))
        trainer = Trainer(labeled, unlabeled, job.config, run_dir=job.run_dir, init=job.init)
        volumes = {v.name: v for v in labeled + unlabeled}  # their statistics normalise the predictions too
        del labeled, unlabeled
        control.attach(trainer)
        setup = time.perf_counter() - t0
        yield Started(trainer.plan, trainer.precision.describe(), len(trainer.sampler.labeled),
                      len(job.data.unlabeled), trainer.start, trainer.config.iterations, trainer.model.trained_before,
                      job.options.seconds)
        what = "training"
        refreshed, last, progress = -1, trainer.start, None
        predicting, in_training = [0.0, 0.0], 0.0  # seconds and megavoxels predicted; seconds before the last step
        for progress in trainer.run():
            if progress.iteration != last:  # (the engine repeats its last step with the final checkpoint)
                last, in_training = progress.iteration, predicting[0]
            yield progress
            if job.options.seconds is not None and progress.elapsed >= job.options.seconds:
                control.stop()
            if job.options.refresh_due(last, progress.total) and not control.stopped and last != refreshed:
                what = "predicting"
                if last != progress.total:  # (the final checkpoint has settled them)
                    trainer.settle_statistics(last)
                items = refresh_items(job.data.images, control.view, last == progress.total)
                yield from _timed(predict_images(trainer.model, items, trainer.patch, last, control, volumes),
                                  items, predicting)
                refreshed = last
                yield Refreshed(last, last == progress.total)
                what = "training"
        if not control.aborted and refreshed != last:
            what = "predicting"
            items = refresh_items(job.data.images, None, True)
            yield from _timed(predict_images(trainer.model, items, trainer.patch, last, control, volumes), items,
                              predicting)
            yield Refreshed(last, True)
        speed = run_speed(trainer, progress, last, setup, in_training, predicting)
        model, checkpoint, precision = trainer.model, trainer.checkpoint_path, trainer.precision.describe()
        trainer = volumes = None
        control.detach()
        yield Finished(model, checkpoint, last, control.stopped, control.aborted, precision, speed)
    except Exception as exc:
        yield _failure(exc, what)
    finally:
        trainer = None
        thread_ended(control, threads)


def run_speed(trainer, progress, last: int, setup: float, in_training: float, predicting: list[float]) -> Speed | None:
    """A training thread's measured speed for the next run's estimate: its set-up seconds, seconds per iteration
    without the predictions (``in_training``: their seconds up to the last step), seconds per predicted megavoxel;
    ``None`` when no step ran."""
    if progress is None or last == trainer.start:
        return None
    return Speed(setup, (progress.elapsed - in_training) / (last - trainer.start),
                 predicting[0] / predicting[1] if predicting[1] else None, trainer.precision.name)


def thread_ended(control: Control, threads: int) -> None:
    """What a training thread does last, however it ended: the trainer let go, memory released, PyTorch's
    ``threads`` given back, the run's end signalled."""
    import torch

    control.detach()
    _release()
    torch.set_num_threads(threads)
    control.done.set()


def training_threads(setting: int, default: int) -> int:
    """The CPU threads a run trains with: ``setting``, or (0) one fewer than PyTorch's ``default`` (at least 1),
    so the viewer keeps a core (measured in benchmarks/threads.py)."""
    return setting if setting > 0 else max(1, default - 1)


def _timed(messages: Iterator[object], items: list[Item], spent: list[float]) -> Iterator[object]:
    """Pass on a prediction's messages, adding its seconds and megavoxels to ``spent`` (once complete)."""
    t0, done = time.perf_counter(), 0
    for msg in messages:
        done += isinstance(msg, ImageResult)
        yield msg
    if done == len(items):
        spent[0] += time.perf_counter() - t0
        spent[1] += sum(Channels.of(image).size if rows is None else
                        (rows[1] - rows[0]) * np.prod(Channels.of(image).shape[1:]) for _, image, rows in items) / 1e6


def predict_only(model, images: list[tuple[str, np.ndarray | Channels]], control: Control) -> Iterator[object]:
    """The prediction thread for a loaded model: one ``ImageResult`` per image, then ``Refreshed``."""
    try:
        yield from predict_images(model, [(name, image, None) for name, image in images], None,
                                  model.model_iterations, control)
        yield Refreshed(model.model_iterations, True)
        yield Finished(model, None, model.model_iterations, control.stopped, control.aborted)
    except Exception as exc:
        yield _failure(exc, "predicting")
    finally:
        _release()
        control.done.set()
