"""``napari-dmd``: train, predict and evaluate from the command line, and the demo.

Bad input ends with one line on stderr and exit status 2; Ctrl-C (SIGINT) and SIGTERM stop a
training after the current step with a checkpoint written (exit status 130 and 143).
"""
from __future__ import annotations

import argparse
import csv
import signal
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import Field, replace
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    CHECKPOINT_NAME,
    COMBINE,
    COMBINES,
    CONFIG_NAME,
    LOG_NAME,
    MIN_PATCH,
    PREDICT_BATCH,
    WEIGHTING,
    WEIGHTINGS,
    RunOptions,
    TrainConfig,
    declared_settings,
    flag_of,
)
from .errors import DataError, DMDError
from .export import add_parser as add_export_parser
from .folders import (
    KINDS,
    TrainingData,
    by_case,
    check_geometry,
    check_label_map,
    folder_images,
    image_cases,
    infer_classes,
    load_training_data,
    reviewed_of,
)
from .outputs import Outputs, locked
from .progress import bar, windows
from .review import Reviewed, write_run_record
from .sample_data import CLASS_NAMES, DEMO_ITERATIONS, SAMPLE_DIR
from .spacing import describe
from .structures import VOLUMES_CSV

LOG_EVERY = 50  # without a terminal (a scheduler, nohup, a pipe): a progress line every this many iterations


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) received outside a training loop."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (nothing outside the main thread)."""
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


# ------------------------------------------------------------------ train
def _setting_value(value: Any) -> Any:
    """A parsed option as a ``TrainConfig`` value (lists of ``nargs`` become tuples)."""
    return tuple(value) if isinstance(value, list) else value


def _resume_config(args: argparse.Namespace) -> tuple[TrainConfig, int]:
    """The settings of the run ``--init`` to continue (``--iterations`` may raise its length; device,
    precision and checkpointing may change) and the iteration it reached; flags that contradict
    what the run learned with are refused."""
    from .checkpoint import REFUSED_PATCH, check_resumable, load_checkpoint

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


RUN_FILES = (CONFIG_NAME, LOG_NAME, "reviewed.json")  # what a run writes beside model.pt


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
    from .io import write_text

    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if not line.split(",", 1)[0].isdigit()
                        or int(line.split(",", 1)[0]) <= reached]
    if len(kept) < len(lines):
        write_text(path, "".join(kept))


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model pair with DMD into a run folder; the exit status (130/143 when stopped by a signal)."""
    from .distributed import current_world, join_world

    join_world(args.device)  # under torchrun: this process joins the others; rank 0 alone prints and writes
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
                                  args.channel_names or ())
        for note in data.notes:
            print(note)
        if args.ignore_label is not None and all(set(v.tolist()) <= {0} for v in data.values.values()):
            raise DataError(f"without the voxels of --ignore-label {args.ignore_label}, every label file holds only "
                            f"0 (background): if {args.ignore_label} marks the structure, remap it to 1 instead")
        if not args.resume:
            num_classes = args.classes or (len(args.class_names) if args.class_names else infer_classes(data.values))
            settings = {f.name: _setting_value(getattr(args, f.name)) for f in declared_settings()}
            cfg = TrainConfig(num_classes=num_classes, class_names=tuple(args.class_names or ()), **settings)
        if args.ignore_label is not None and args.ignore_label < cfg.num_classes:
            raise DataError(f"--ignore-label {args.ignore_label} is class {args.ignore_label} of {cfg.num_classes}: "
                            f"the ignored value must not be a class")
        if args.resume and current_world().writes:
            _prune_log(args.out / LOG_NAME, reached)
        return _train(args, data, cfg, options)


def _train(args: argparse.Namespace, data: TrainingData, cfg: TrainConfig, options: RunOptions) -> int:
    """Train with signals stopping after the current step; the run folder also gets ``reviewed.json``
    when review records or ``--ignore-label`` limited the supervision."""
    from .training import Trainer

    trainer = Trainer(data.labeled, data.unlabeled, cfg, run_dir=args.out, init=args.init, resume=args.resume)
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
    progress = bar(total=cfg.iterations, initial=trainer.start, unit="it", desc="DMD")
    every = 0 if sys.stderr.isatty() else max(1, min(cfg.checkpoint_every, LOG_EVERY))  # no bar: a line instead
    received: list[int] = []

    limit = options.seconds

    def stop(signum: int, _frame: Any) -> None:  # stop after this step; the checkpoint is written
        received.append(signum)
        trainer.stop()

    with _signals(stop):
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


# ------------------------------------------------------------------ predict
def output_path(out: Path, source: Path, case: str | None = None) -> Path:
    """Where the prediction of ``source`` goes: named as the case (default: the file's name), in the same format
    (DICOM becomes .nii.gz)."""
    from .io import WRITABLE_EXTENSIONS, case_name, extension

    ext = extension(source) if source.is_file() else ""
    return out / f"{case or case_name(source)}{ext if ext in WRITABLE_EXTENSIONS else '.nii.gz'}"


Case = tuple[str, list[Path]]  # a case to predict: its name and its files (one, or one per channel)


def _cases(paths: list[Path], channels: int) -> list[Case]:
    """The cases of the images given: one file each, or nnU-Net's channel files of a case grouped
    (``case_0000``, ``case_0001``, ...): for a model of several channels when every name ends in ``_NNNN``, for
    a one-channel model when every name ends in ``_0000``."""
    from .channels import CHANNEL_FILE
    from .io import case_name

    found = [CHANNEL_FILE.match(case_name(p)) for p in paths]
    grouped = all(found) and (channels > 1 or all(m["channel"] == "0000" for m in found if m))
    cases = list(image_cases(paths, True).items()) if grouped and paths else [(case_name(p), [p]) for p in paths]
    wrong = next(((c, files) for c, files in cases if len(files) > 1 and len(files) != channels), None)
    if wrong is not None:
        raise DataError(f"case {wrong[0]!r} has {len(wrong[1])} channel files; the model takes {channels}")
    return cases


def _written_by(target: Path) -> list[Path]:
    """The files that writing the image ``target`` makes (a ``.mhd`` header has its ``.raw`` data file)."""
    from .io import case_name, extension

    return [target, target.with_name(case_name(target) + ".raw")] if extension(target) == ".mhd" else [target]


def _prediction_table(out: Path, outputs: Outputs) -> dict[str, dict]:
    """The rows of ``out/disagreement.csv`` by file name, when predict wrote it: its earlier predictions."""
    table = out / "disagreement.csv"
    try:
        return {row["case"]: row for row in csv.DictReader(table.open(newline=""))} if outputs.owns(table) else {}
    except (OSError, KeyError, csv.Error):
        return {}


def _check_outputs(cases: list[Case], targets: list[Path], out: Path, outputs: Outputs) -> None:
    """Refuse predictions that would overwrite an input, each other, or a file predict did not write."""
    inputs = {path.resolve() for _, paths in cases for path in paths}
    for (_, paths), target in zip(cases, targets):
        if any(f.resolve() in inputs for f in _written_by(target)):
            raise DataError(f"the prediction of {paths[0].absolute()} would overwrite an input image: choose another "
                            f"--out")
    if len(set(targets)) < len(targets):
        raise DataError("two input images have the same name, so their predictions would overwrite each other: "
                        "predict them into different --out folders")
    outputs.claim([out / "disagreement.csv", out / "label_next.csv", out / VOLUMES_CSV,
                   *(f for t in targets for f in _written_by(t))])
    folder = Outputs(out / "disagreement", "predict")
    folder.claim(f for case, paths in cases for f in _written_by(output_path(out / "disagreement", paths[0], case)))


def _reviews(cases: list[Case], labels: Path | None) -> dict[str, Path]:
    """The label file of each case that has one in ``labels``, its review record checked before any
    image is predicted (a malformed one is refused before anything is written)."""
    from .io import image_shape

    found = by_case(folder_images(labels)) if labels else {}
    pairs = {}
    for case, paths in cases:
        if case in found:
            reviewed_of(found[case], image_shape(paths[0]))
            pairs[case] = found[case]
    return pairs


def cmd_predict(args: argparse.Namespace) -> None:
    """Predict images with a saved model; write label maps, disagreement maps, each image's mean
    disagreement (``disagreement.csv``) and structure volumes (``volumes.csv``), both updated after each
    image, so they always list what predict wrote into ``--out``, and the slices to label next
    (``label_next.csv``)."""
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    paths = _expand(args.images)
    with locked(args.out, "predict") as outputs:
        _predict(args, paths, outputs)


def _predict(args: argparse.Namespace, paths: list[Path], outputs: Outputs) -> None:
    """``cmd_predict`` with ``--out`` held: each image's files are written and recorded before the next."""
    from .checkpoint import REFUSED_PATCH, load_model
    from .folders import read_case
    from .inference import largest_components, predict
    from .io import write_image
    from .structures import update_volumes_csv, volumes_table

    model = load_model(args.model, args.device)
    cases = _cases(paths, len(model.channels))
    targets = [output_path(args.out, files[0], case) for case, files in cases]
    table = _prediction_table(args.out, outputs)
    _check_outputs(cases, targets, args.out, outputs)
    if REFUSED_PATCH in model.extra and not args.patch:
        raise DataError(f"{args.model.absolute()} was trained with patch {model.extra[REFUSED_PATCH]}, under the "
                        f"{MIN_PATCH} voxels per axis this napari-dmd accepts: give a window with --patch, e.g. "
                        f"--patch {' '.join(str(max(MIN_PATCH, p)) for p in model.extra[REFUSED_PATCH])}")
    labels = _reviews(cases, args.labels)
    maps = Outputs(args.out / "disagreement", "predict")
    slice_scores, reviewed = {}, {}
    for (case, files), target in bar(list(zip(cases, targets)), desc="predicting", unit="vol"):
        image, geometry = read_case(files, model.channels if len(files) > 1 else ())
        update, done = windows(target.name)
        pred = predict(model, image, tuple(args.patch) if args.patch else None,
                       tuple(args.stride) if args.stride else None, args.batch_size, progress=update,
                       weighting=args.weighting, combine=args.combine, mirror=args.mirror)
        done()
        written = largest_components(pred.labels) if args.largest_component else pred.labels
        write_image(target, written, geometry)
        outputs.wrote(*_written_by(target))
        update_volumes_csv(args.out / VOLUMES_CSV, target.name, volumes_table(written, geometry, model.class_names))
        outputs.wrote(args.out / VOLUMES_CSV)
        disagreement = output_path(args.out / "disagreement", files[0], case)
        write_image(disagreement, pred.disagreement, geometry)
        maps.wrote(*_written_by(disagreement))
        table[target.name] = {"case": target.name, "disagreement": f"{pred.volume_score:.6f}"}
        _write_csv(args.out / "disagreement.csv", sorted(table.values(), key=lambda r: -float(r["disagreement"])))
        outputs.wrote(args.out / "disagreement.csv")
        slice_scores[target.name] = pred.slice_scores
        if case in labels:
            reviewed[target.name] = reviewed_of(labels[case], image.shape)
    _write_label_next(args.out / "label_next.csv", slice_scores, reviewed)
    outputs.wrote(args.out / "label_next.csv")
    print(f"{len(slice_scores)} predictions in {args.out}; the slices to label next are in "
          f"{args.out / 'label_next.csv'}")


def _write_label_next(path: Path, slice_scores: dict[str, np.ndarray], reviewed: dict) -> None:
    """The 'label this next' list of ``ranking.suggest``: unreviewed slabs along axis 0, spread over the images."""
    from .ranking import SCORE_HELP, suggest

    picks = suggest(slice_scores, reviewed, count=max(10, len(slice_scores)))
    _write_csv(path, [{"rank": k, "case": s.image, "slice": s.index, "score": f"{s.score:.6f}"}
                      for k, s in enumerate(picks, 1)], ["rank", "case", "slice", "score"])
    if picks:
        print(f"label next: {picks[0].image} slice {picks[0].index}, score {picks[0].score:.3f} ({SCORE_HELP})")
    else:
        print("nothing left to label next: every slice of every image is reviewed")


def _expand(sources: list[Path]) -> list[Path]:
    """Image files as given; folders as the images they hold, or as one DICOM series."""
    from .io import is_supported, list_images

    paths: list[Path] = []
    for src in sources:
        if not src.exists():
            raise DataError(f"{src.absolute()} does not exist")
        inside = list_images(src) if src.is_dir() else []
        if src.is_dir() and not inside and not is_supported(src):
            raise DataError(f"{src.absolute()} holds no image ({KINDS})")
        paths += inside or [src]
    return paths


def _write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """A CSV table of ``rows`` (columns: ``fields``, else the keys of the first row), written atomically."""
    from .io import write_text

    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


# ------------------------------------------------------------------ evaluate
ABSENT = "-"  # a class absent from both prediction and label: no score, left out of the mean


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score predictions against ground truth of the same names: per case, per class, and means.

    Every label file needs its prediction, on its grid; the class count (given or found over all
    files) is the same for every case. A class absent from both a prediction and its label has no
    score there (``-``, an empty CSV cell) and is left out of that class's mean, as MONAI's
    ``ignore_empty`` and nnU-Net do: it would count as a perfect Dice otherwise.
    """
    if not args.out:
        _evaluate(args, None)
        return
    if args.out.is_dir():
        raise DataError(f"--out {args.out.absolute()} is a folder: give a file name for the CSV table")
    with locked(args.out.parent, "evaluate") as outputs:
        outputs.claim([args.out])
        _evaluate(args, outputs)


def _evaluate(args: argparse.Namespace, outputs: Outputs | None) -> None:
    """``cmd_evaluate`` with the CSV's folder held (``outputs``), if one is written."""
    from .io import read_image
    from .metrics import METRICS, evaluate_case, summarize

    preds, refs = by_case(folder_images(args.predictions)), by_case(folder_images(args.labels))
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DataError(f"{len(missing)} of {len(refs)} label files have no prediction in {args.predictions} "
                        f"(first: {refs[missing[0]].name}): predict them, or evaluate a labels folder without them")
    unscored = sorted(set(preds) - set(refs))
    if unscored:
        print(f"{len(unscored)} predictions have no label file in {args.labels} and are not scored "
              f"(first: {preds[unscored[0]].name})")
    cases = sorted(refs)
    values: dict[Path, np.ndarray] = {}
    for case in bar(cases, desc="checking", unit="vol", leave=False):  # everything, before minutes of scoring
        pred, gp = read_image(preds[case])
        ref, gr = read_image(refs[case])
        check_geometry(refs[case], preds[case], ref.shape, pred.shape, gr, gp, what="prediction")
        values[refs[case]] = check_label_map(ref, refs[case])
        values[preds[case]] = check_label_map(pred, preds[case])
    classes = args.classes or infer_classes(values)
    beyond = [(p, int(v.max())) for p, v in values.items() if v.size and v.max() >= classes]
    if beyond:
        raise DataError(f"{beyond[0][0].absolute()} holds value {beyond[0][1]}, outside the {classes} classes "
                        f"(--classes)")
    rows = []
    for case in bar(cases, desc="evaluating", unit="vol", leave=False):
        pred, _ = read_image(preds[case])
        ref, g = read_image(refs[case])
        present = set(np.unique(pred).tolist()) | set(np.unique(ref).tolist())
        rows += [{"case": case, **(r if r["class"] in present else {**r, **dict.fromkeys(METRICS, float("nan"))})}
                 for r in evaluate_case(pred, ref, classes, g.scale)]
    keys = list(METRICS)
    table = rows + [{"case": "mean", **m} for m in summarize(rows)]
    print(f"{len(cases)} cases, {classes} classes; '{ABSENT}': class absent from both prediction and label, "
          f"left out of the mean")
    print(f"{'case':<24}{'class':>6}" + "".join(f"{k:>10}" for k in keys))
    for r in table:
        print(f"{r['case']:<24}{r['class']:>6}" + "".join(f"{ABSENT:>10}" if np.isnan(r[k]) else f"{r[k]:>10.4f}"
                                                          for k in keys))
    if outputs is not None:
        _write_csv(args.out, [{"case": r["case"], "class": r["class"], **{k: "" if np.isnan(r[k]) else r[k]
                                                                          for k in keys}} for r in table])
        outputs.wrote(args.out)
        print(f"written to {args.out} (an empty cell: class absent from both prediction and label, left out of "
              f"the mean)")


# ------------------------------------------------------------------ demo
def _free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    candidates = (base.with_name(f"{base.name}-{k}") if k > 1 else base for k in range(1, 10_000))
    return next(p for p in candidates if not p.exists())


def cmd_demo(args: argparse.Namespace) -> int | None:
    """napari with the plugin and the sample data, or the same loop headless."""
    if args.headless:
        run = _free_folder(args.out / "run")
        for argv in (["train", "--images", str(SAMPLE_DIR / "images"), "--labels", str(SAMPLE_DIR / "labels"),
                      "--out", str(run), "--iterations", str(args.iterations), "--lr-step", str(args.iterations),
                      "--class-names", *CLASS_NAMES],
                     ["predict", "--model", str(run / CHECKPOINT_NAME), "--images", str(SAMPLE_DIR / "images"),
                      "--out", str(args.out / "predictions")]):
            print("napari-dmd " + " ".join(argv))
            cmd = build_parser().parse_args(argv)
            code = cmd.func(cmd)
            if code:
                return code
        return None
    import napari

    from .plugin.demo import open_demo, train_and_screenshot

    if args.screenshot:
        print(train_and_screenshot(args.screenshot, args.iterations, args.iterations // 3))
        return None
    open_demo()
    napari.run()
    return None


# ------------------------------------------------------------------ parser
class _Given(argparse.Action):
    """Store the value and remember that the option was given (``namespace.given``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = namespace.given | {self.dest}


def add_setting(parser: argparse.ArgumentParser, f: Field, of: type | None = None) -> None:
    """The command-line option of a setting declared in ``of`` (default ``TrainConfig``; ``RunOptions``), with its
    default and help."""
    kind = typing.get_type_hints(of or TrainConfig)[f.name]
    many = typing.get_origin(kind) is not None  # tuple[int, ...] | None
    text = f.metadata["help"].replace("%", "%%") + ("" if f.default is None else " (default: %(default)s)")
    parser.add_argument(flag_of(f), dest=f.name, action=_Given, default=f.default, help=text,
                        type=int if many else kind, nargs="+" if many else None, choices=f.metadata["choices"])


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model pair with Deep Mutual Distillation")
    p.add_argument("--images", type=Path, required=True,
                   help="folder of labeled images (others there count as unlabeled)")
    p.add_argument("--labels", type=Path, required=True,
                   help="folder of label maps named like their images; a <case>.reviewed.json beside a label file "
                        "(written by the dock) limits it to the slices reviewed")
    p.add_argument("--unlabeled", type=Path, nargs="*", default=[], help="folders of unlabeled images")
    p.add_argument("--out", type=Path, required=True, help="run folder (model.pt, config.json), new or resumed")
    p.add_argument("--classes", type=int, help="number of classes with background (default: from the labels)")
    p.add_argument("--class-names", nargs="+", help="names of the classes, background first")
    p.add_argument("--channel-names", nargs="+", help="names of the image channels (modalities), in channel order "
                   "(default: 'image' for one, 'channel 0', 'channel 1', ... for several); a case's channels are "
                   "one colour, vector or 4D file, or nnU-Net's channel files case_0000, case_0001, ...")
    p.add_argument("--ignore-label", type=int,
                   help="label value of voxels that are not supervised (not reviewed); it must not be a class")
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="folder keeping the volumes read as uncompressed arrays: later runs open them memory-mapped "
                        "instead of reading the images (a stale or damaged entry is rebuilt); default: none")
    for f in declared_settings():
        add_setting(p, f)
    for f in declared_settings(of=RunOptions):
        if f.metadata["cli"]:
            add_setting(p, f, RunOptions)
    p.add_argument("--init", type=Path, help="warm start from this checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="with --init: continue its run (its settings, optimiser, iteration; --iterations may rise)")
    p.set_defaults(func=cmd_train, given=frozenset())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(prog="napari-dmd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("predict", help="predict images with a trained model")
    p.add_argument("--model", type=Path, required=True, help="model.pt of a run folder")
    p.add_argument("--images", type=Path, nargs="+", required=True, help="image files or folders")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for the predictions; files there are overwritten only if predict wrote them")
    p.add_argument("--labels", type=Path, help="folder of the label files so far: label_next.csv leaves out what "
                   "they cover (all of an image, or the slices its <case>.reviewed.json records)")
    p.add_argument("--patch", type=int, nargs="+", help="window size (z y x); default: the training patch")
    p.add_argument("--stride", type=int, nargs="+", help="window stride (z y x); default: half the window")
    p.add_argument("--batch-size", type=int, default=PREDICT_BATCH, help="windows per forward pass")
    p.add_argument("--weighting", choices=WEIGHTINGS, default=WEIGHTING,
                   help="how each window's voxels count where windows overlap (default: %(default)s)")
    p.add_argument("--combine", choices=COMBINES, default=COMBINE,
                   help="labels from network A ('a') or the mean of both networks (default: %(default)s)")
    p.add_argument("--mirror", action="store_true",
                   help="average each window over its in-plane flips (4 forward passes instead of 1)")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected component of each class")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--predictions", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True, help="ground truth; each needs a prediction of its name")
    p.add_argument("--classes", type=int, help="number of classes with background (default: from all files)")
    p.add_argument("--out", type=Path, help="CSV file for the table (new, or one evaluate wrote)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("demo", help="napari with the plugin and sample data (--headless: the loop without a screen)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--out", type=Path, default=Path("napari-dmd-demo"))
    p.add_argument("--iterations", type=int, default=DEMO_ITERATIONS,
                   help="training iterations of --headless and --screenshot")
    p.add_argument("--screenshot", type=Path, help="train in the dock, save a picture of the window there, and quit")
    p.set_defaults(func=cmd_demo)
    add_export_parser(sub)
    return parser


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory (CPU or GPU), which torch reports as a RuntimeError."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        with _signals(_raise_interrupted):
            code = args.func(args)
    except DMDError as exc:
        print(f"napari-dmd: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        print(f"napari-dmd: error: out of memory ({str(exc).strip().splitlines()[0][:200]}): lower --patch or the "
              f"batch size, or free memory; every file written is complete", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written, where no clearer message was made
        from .io import write_failure

        where = Path(exc.filename).absolute() if exc.filename else "a file"
        print(f"napari-dmd: error: {write_failure(where, exc).replace('cannot write', 'cannot use', 1)}",
              file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"napari-dmd: {signal.Signals(signum).name}: stopped; every file written is complete",
              file=sys.stderr)
        return 128 + signum
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
