"""A run of the dock on a workspace, as plain Python (no Qt): the data read from the workspace's files as
``train --workspace`` reads them (not from napari layers: unlabelled cases need not be open), refreshes of the case
in view, and at the end every case predicted into the workspace as ``predict --workspace`` does it.

Its messages are those of ``jobs.train_and_predict``; the final predictions are not sent to the dock (a cohort
does not fit in memory) but written, and ``Refreshed(final=True)`` tells the dock to read the case in view's.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .channels import Channels
from .config import RunOptions, TrainConfig
from .jobs import (
    Control,
    Finished,
    Predicting,
    Preparing,
    Refreshed,
    Started,
    _failure,
    _release,
    _timed,
    predict_images,
    refresh_items,
    run_speed,
    thread_ended,
    training_threads,
)
from .plan import preparing_text
from .spacing import data_spacing


@dataclass
class WorkspaceJob:
    """What a Start on a workspace needs; ``shown(case)`` gives the image of the case in view (its layers' data)."""

    root: Path
    config: TrainConfig  # its class count and names come from the workspace's labels when it names none
    options: RunOptions
    run_dir: Path
    init: Path | None
    shown: Callable[[str], np.ndarray | Channels | None]
    cases: int  # the workspace's cases (what the final prediction counts)


def workspace_data(root: Path):
    """The training data of a workspace, read as ``train --workspace`` reads it (its cache, its channel names)."""
    from .folders import load_training_data
    from .workspace import Workspace

    with Workspace(root, writable=False) as ws:
        data = load_training_data(ws.layout.images, ws.layout.labels, [], None, ws.cache, ws.layout.channel_names)
        ws.check_label_values(data.values)
        return data, ws.layout.class_names


def _write_records(run_dir: Path, data) -> None:
    """What the run trains on and the review records that limited it, in the run folder (as ``train`` writes)."""
    from .outputs import Outputs
    from .review import Reviewed, write_run_record
    from .run_data import data_record, write_data_record

    outputs = Outputs(run_dir, "train")
    outputs.wrote(write_data_record(run_dir, data_record([v.name for v in data.labeled],
                                                         [v.name for v in data.unlabeled])))
    if data.reviewed:
        outputs.wrote(write_run_record(run_dir, {n: Reviewed.from_dict(r) for n, r in data.reviewed.items()}))


def predict_workspace(root: Path, model: Path) -> Path:
    """Every case of the workspace not reviewed whole (and ``imagesTs/``) predicted with ``model`` into its
    predictions folder, as ``predict --workspace`` does it; that folder."""
    from .cli.parser import build_parser

    args = build_parser().parse_args(["predict", "--workspace", str(root), "--model", str(model)])
    args.func(args)
    return args.out


def predict_on_workspace(root: Path, model, checkpoint: Path, cases: int, control: Control) -> Iterator[object]:
    """The prediction thread of Predict on a workspace: every case predicted into it with ``checkpoint``."""
    try:
        yield Predicting(model.model_iterations, cases)
        predict_workspace(root, checkpoint)
        yield Refreshed(model.model_iterations, True)
        yield Finished(model, None, model.model_iterations, control.stopped, control.aborted)
    except Exception as exc:
        yield _failure(exc, "predicting the workspace")
    finally:
        _release()
        control.done.set()


def train_workspace(job: WorkspaceJob, control: Control) -> Iterator[object]:
    """The training thread of a Start on a workspace (see the module's text)."""
    import torch

    what, trainer, t0, threads = "reading the workspace", None, time.perf_counter(), torch.get_num_threads()
    try:
        from .folders import infer_classes
        from .training import Trainer

        torch.set_num_threads(training_threads(job.options.threads, threads))
        data, names = workspace_data(job.root)
        for note in data.notes:
            yield Preparing(note)
        classes = len(names) or infer_classes(data.values)
        config = replace(job.config, num_classes=classes, class_names=tuple(names[:classes]))
        volumes = data.labeled + data.unlabeled
        yield Preparing(preparing_text(replace(config, channels=volumes[0].image.names),
                                       [v.image.shape for v in volumes], data_spacing([v.spacing for v in volumes])))
        what = "setting up the networks"
        trainer = Trainer(data.labeled, data.unlabeled, config, run_dir=job.run_dir, init=job.init)
        _write_records(job.run_dir, data)
        unlabeled = len(data.unlabeled)
        del data, volumes
        control.attach(trainer)
        setup = time.perf_counter() - t0
        yield Started(trainer.plan, trainer.precision.describe(), len(trainer.sampler.labeled), unlabeled,
                      trainer.start, trainer.config.iterations, trainer.model.trained_before, job.options.seconds)
        what, last, progress, predicting, in_training = "training", trainer.start, None, [0.0, 0.0], 0.0
        for progress in trainer.run():
            if progress.iteration != last:
                last, in_training = progress.iteration, predicting[0]
            yield progress
            if job.options.seconds is not None and progress.elapsed >= job.options.seconds:
                control.stop()
            view = control.view
            image = job.shown(view.image) if view is not None else None
            if job.options.refresh_due(last, progress.total) and last != progress.total and image is not None \
                    and not control.stopped:
                what = "predicting"
                trainer.settle_statistics(last)
                items = refresh_items([(view.image, image)], view, False)
                yield from _timed(predict_images(trainer.model, items, trainer.patch, last, control), items,
                                  predicting)
                yield Refreshed(last, False)
                what = "training"
        speed = run_speed(trainer, progress, last, setup, in_training, predicting)
        model, checkpoint, precision = trainer.model, trainer.checkpoint_path, trainer.precision.describe()
        trainer = None
        control.detach()
        if not control.aborted and checkpoint is not None:
            what = "predicting the workspace"
            yield Predicting(last, job.cases)
            predict_workspace(job.root, checkpoint)
            yield Refreshed(last, True)
        yield Finished(model, checkpoint, last, control.stopped, control.aborted, precision, speed)
    except Exception as exc:
        yield _failure(exc, what)
    finally:
        trainer = None
        thread_ended(control, threads)
