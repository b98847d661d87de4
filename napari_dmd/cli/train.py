"""``napari-dmd train``: a model pair trained with DMD into a run folder."""
from __future__ import annotations

import argparse
import signal
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import CHECKPOINT_NAME, CONFIG_NAME, LOG_NAME, RunOptions, TrainConfig, declared_settings, flag_of
from ..errors import DataError
from ..folders import TrainingData, infer_classes, load_training_data
from ..outputs import Outputs, locked
from ..progress import bar
from ..review import Reviewed, write_run_record
from ..run_data import DATA_NAME, data_changes, data_record, write_data_record
from ..spacing import describe
from .common import signals
from .workspace import workspace_training

LOG_EVERY = 50  # without a terminal (a scheduler, nohup, a pipe): a progress line every this many iterations


def _setting_value(value: Any) -> Any:
    """A parsed option as a ``TrainConfig`` value (lists of ``nargs`` become tuples)."""
    return tuple(value) if isinstance(value, list) else value


def _resume_config(args: argparse.Namespace) -> tuple[TrainConfig, int]:
    """The settings of the run ``--init`` to continue (``--iterations`` may raise its length; device,
    precision and checkpointing may change) and the iteration it reached; flags that contradict
    what the run learned with are refused."""
    from ..checkpoint import REFUSED_PATCH, check_resumable, load_checkpoint

    saved, state = load_checkpoint(args.init, "cpu")
    check_resumable(args.init, state)
    if REFUSED_PATCH in saved.extra:
        raise DataError(f"{args.init.absolute()} was trained with patch {saved.extra[REFUSED_PATCH]}, which this "
                        f"napari-dmd no longer accepts: start a new run from it (--init without --resume) with --patch")
    cfg, changes, conflicts = saved.config, {}, []
    for f in declared_settings():
        if f.name not in args.given:
            continue
        value, old = _setting_value(getattr(args, f.name)), getattr(saved.config, f.name)
        if value == old:
            continue
        if f.name == "iterations" or not f.metadata["affects_model"]:
            changes[f.name] = value
        else:
            conflicts.append(f"{flag_of(f)} {value} (the run has {old})")
    if args.classes and args.classes != cfg.num_classes:
        conflicts.append(f"--classes {args.classes} (the run has {cfg.num_classes})")
    if args.class_names and tuple(args.class_names) != cfg.class_names:
        conflicts.append(f"--class-names {' '.join(args.class_names)} (the run has {' '.join(cfg.class_names)})")
    if conflicts:
        raise DataError(f"--resume continues {args.init} with its own settings, and these contradict them: "
                        f"{'; '.join(conflicts)}. Drop them, or start a new run from it (--init without --resume)")
    return replace(cfg, **changes), saved.iteration


RUN_FILES = (CONFIG_NAME, LOG_NAME, "reviewed.json", DATA_NAME)  # what a run writes beside model.pt


def _check_run_folder(args: argparse.Namespace) -> None:
    """Refuse an ``--out`` that is a file, or that holds another run's model (resuming it is fine)."""
    if args.out.exists() and not args.out.is_dir():
        raise DataError(f"--out {args.out.absolute()} is a file: give a folder for the run")
    if args.resume and args.init is None:
        raise DataError("--resume continues a run: give its checkpoint with --init")
    target = args.out / CHECKPOINT_NAME
    if target.exists() and not (args.resume and args.init.resolve() == target.resolve()):
        raise DataError(f"{args.out.absolute()} already holds a run ({CHECKPOINT_NAME}): choose another --out, or "
                        f"continue that run with --init {target} --resume")


def _claim_run_folder(args: argparse.Namespace, outputs: Outputs) -> None:
    """Refuse a run folder holding files of a run that this command did not write (or that were edited
    since); a run folder of an earlier napari-dmd, without a manifest, is continued by ``--resume``."""
    resumed_here = args.resume and args.init.resolve() == (args.out / CHECKPOINT_NAME).resolve()
    if not (resumed_here and not outputs.entries()):
        outputs.claim(args.out / name for name in RUN_FILES)


def _prune_log(path: Path, reached: int) -> None:
    """Drop the rows of ``log.csv`` after iteration ``reached`` (written after the checkpoint a resume
    continues from, before a kill), so the log lists each iteration once."""
    from ..io import write_text

    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if not line.split(",", 1)[0].isdigit()
                        or int(line.split(",", 1)[0]) <= reached]
    if len(kept) < len(lines):
        write_text(path, "".join(kept))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model pair with DMD into a run folder; the exit status (130/143 when stopped by a signal)."""
    from ..distributed import current_world, join_world

    join_world(args.device)  # under torchrun: this process joins the others; rank 0 alone prints and writes
    ws = workspace_training(args) if args.workspace else None
    if ws is None:
        missing = [f for f in ("--images", "--labels", "--out") if getattr(args, f[2:]) is None]
        if missing:
            raise DataError(f"train needs {' and '.join(missing)} (or --workspace FOLDER)")
    _check_run_folder(args)
    options = RunOptions(minutes=args.minutes)  # checked before minutes of reading
    with ExitStack() as stack:
        if current_world().writes:  # one command at a time writes a run folder
            _claim_run_folder(args, stack.enter_context(locked(args.out, "train")))
        if args.resume:
            cfg, reached = _resume_config(args)
            if reached >= cfg.iterations:
                print(f"the run in {args.init.parent} is finished: it is at iteration {reached} (of "
                      f"{cfg.iterations}); raise --iterations above {reached} to train it further")
                return 0
        data = load_training_data(args.images, args.labels, args.unlabeled, args.ignore_label, args.cache,
                                  args.channel_names or (), args.spacing)
        for note in data.notes:
            print(note)
        if ws is not None:
            ws.check_label_values(data.values)
        if args.ignore_label is not None and all(set(v.tolist()) <= {0} for v in data.values.values()):
            raise DataError(f"without the voxels of --ignore-label {args.ignore_label}, every label file holds only "
                            f"0 (background): if {args.ignore_label} marks the structure, remap it to 1 instead")
        if not args.resume:
            num_classes = args.classes or (len(args.class_names) if args.class_names else infer_classes(data.values))
            settings = {f.name: _setting_value(getattr(args, f.name)) for f in declared_settings()}
            cfg = TrainConfig(num_classes=num_classes, class_names=tuple(args.class_names or ()), **settings)
        changed = data_changes(args.init, _record(data)) if args.resume else None
        if changed:
            print(changed)
        if args.ignore_label is not None and args.ignore_label < cfg.num_classes:
            raise DataError(f"--ignore-label {args.ignore_label} is class {args.ignore_label} of {cfg.num_classes}: "
                            f"the ignored value must not be a class")
        _check_given_classes(args, data, cfg.num_classes)
        if args.resume and current_world().writes:
            _prune_log(args.out / LOG_NAME, reached)
        return _train(args, data, cfg, options)


def _check_given_classes(args: argparse.Namespace, data: TrainingData, num_classes: int) -> None:
    """``DataError`` naming the label file, its value and where the class count came from (``--classes``,
    ``--class-names`` or the resumed run) when a label value is not one of the classes."""
    source = f"--classes {args.classes}" if args.classes else \
        f"--class-names {' '.join(args.class_names)} (background first)" if args.class_names and not args.resume else \
        f"the run {args.init.absolute()} that --resume continues" if args.resume else None
    beyond = next(((p, int(v.max())) for p, v in data.values.items() if v.size and v.max() >= num_classes), None)
    if source and beyond:
        raise DataError(f"{beyond[0].absolute()} holds label value {beyond[1]}, but {source} gives {num_classes} "
                        f"classes (values 0 to {num_classes - 1}): name every class, background first, or remap the "
                        f"labels")


def _record(data: TrainingData) -> dict[str, list[str]]:
    """The record of the volumes a run trains on."""
    return data_record([v.name for v in data.labeled], [v.name for v in data.unlabeled])


def _train(args: argparse.Namespace, data: TrainingData, cfg: TrainConfig, options: RunOptions) -> int:
    """Train with signals stopping after the current step; the run folder also gets ``reviewed.json``
    when review records or ``--ignore-label`` limited the supervision."""
    from ..regime import weaker_dmd
    from ..training import Trainer

    trainer = Trainer(data.labeled, data.unlabeled, cfg, run_dir=args.out, init=args.init, resume=args.resume)
    if trainer.world.writes:  # what it trains on, for a later --resume
        Outputs(args.out, "train").wrote(write_data_record(args.out, _record(data)))
    if trainer.world.writes and (data.reviewed or args.ignore_label is not None):  # what supervised, kept
        Outputs(args.out, "train").wrote(write_run_record(
            args.out, {n: Reviewed.from_dict(r) for n, r in data.reviewed.items()}, args.ignore_label))
    found = sorted(set().union(*(v.tolist() for v in data.values.values())))
    note = "" if data.unlabeled else " (no unlabeled image: distillation on the labeled images only)"
    channels = trainer.config.channels
    inputs = f", {len(channels)} channels ({', '.join(channels)})" if len(channels) > 1 else ""
    print(f"training on {len(data.labeled)} labeled + {len(data.unlabeled)} unlabeled volumes{inputs}, "
          f"{cfg.num_classes} classes (label values found: {', '.join(map(str, found))}), patch {trainer.patch} "
          f"({describe(trainer.config.spacing, trainer.model.nets[0].pools)}), {trainer.device}, "
          f"precision {trainer.precision.describe()}, batch norm {trainer.batch_norm}{note}", flush=True)
    weaker = weaker_dmd(len(data.labeled), len(data.unlabeled), trainer.model.trained_before + cfg.iterations,
                        cfg.lambda_distill, cfg.unlabeled_batch)
    if weaker is not None:  # the honest default: say what was measured, offer the supervised pair
        print(f"note: {weaker.describe()}; the supervised pair trains with --lambda 0 --unlabeled-batch 0",
              flush=True)
    progress = bar(total=cfg.iterations, initial=trainer.start, unit="it", desc="DMD")
    every = 0 if sys.stderr.isatty() else max(1, min(cfg.checkpoint_every, LOG_EVERY))  # no bar: a line instead
    received: list[int] = []

    limit = options.seconds

    def stop(signum: int, _frame: Any) -> None:  # stop after this step; the checkpoint is written
        received.append(signum)
        trainer.stop()

    with signals(stop):
        try:
            for p in trainer.run():
                progress.update(p.iteration - progress.n)
                progress.set_postfix(sup=f"{p.sup_loss:.3f}", dis=f"{p.distill_loss:.3f}", lr=f"{p.lr:.0e}")
                if p.note:
                    progress.write(p.note, file=sys.stderr)
                if limit and p.elapsed >= limit:
                    trainer.stop()
                if every and (p.iteration % every == 0 or p.iteration == p.total):
                    print(f"iteration {p.iteration}/{p.total}: loss {p.loss:.4f} (supervised {p.sup_loss:.4f}, "
                          f"distillation {p.distill_loss:.4f}), lr {p.lr:.0e}, {p.precision}, skipped {p.skipped}, "
                          f"{p.its_per_s:.2f} it/s, {p.eta / 60:.0f} min left", flush=True)
        finally:
            progress.close()
    if limit and trainer.stopped and not received and trainer.model.iteration < cfg.iterations:
        print(f"the {args.minutes:g}-minute limit ended training at iteration {trainer.model.iteration}; model written "
              f"to {trainer.checkpoint_path} (continue with --init it --resume)")
        return 0
    if trainer.stopped:
        name = signal.Signals(received[-1]).name if received else "stop"
        saved = f"checkpoint written to {trainer.checkpoint_path} (continue with --init it --resume)" \
            if trainer.checkpoint_path else "no iteration finished, nothing written"
        print(f"{name}: interrupted at iteration {trainer.model.iteration}; {saved}", file=sys.stderr)
        return 128 + (received[-1] if received else signal.SIGINT)
    print(f"model written to {trainer.checkpoint_path}")
    return 0

