"""``napari-dmd predict``: label maps, disagreement and the slices to label next for a cohort."""
from __future__ import annotations

import argparse
import csv
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..channels import describe
from ..config import MIN_PATCH
from ..errors import DataError
from ..folders import KINDS, by_case, folder_images, image_cases, reviewed_of
from ..outputs import Outputs, locked
from ..progress import bar, windows
from ..structures import VOLUMES_CSV
from ..workspace_results import DISAGREEMENT, LABEL_NEXT
from .common import write_csv
from .workspace import workspace_cases


def output_path(out: Path, source: Path, case: str | None = None) -> Path:
    """Where the prediction of ``source`` goes: named as the case (default: the file's name), in the same format
    (DICOM becomes .nii.gz)."""
    from ..io import WRITABLE_EXTENSIONS, case_name, extension

    ext = extension(source) if source.is_file() else ""
    return out / f"{case or case_name(source)}{ext if ext in WRITABLE_EXTENSIONS else '.nii.gz'}"


Case = tuple[str, list[Path]]  # a case to predict: its name and its files (one, or one per channel)


def _cases(paths: list[Path], channels: int) -> list[Case]:
    """The cases of the images given, whatever the model: nnU-Net's channel files of a case grouped (``case_0000``,
    ``case_0001``, ...: the files named ``X_NNNN`` where ``X_0000`` is among them), every other file a case of its
    own (``scan_0001``, ``scan_0002`` without a ``scan_0000`` are two). A case of channel files whose count is not
    the model's ``channels`` is refused, naming the case, its files and both counts."""
    from ..channels import CHANNEL_FILE
    from ..io import case_name

    numbered: dict[str, list[Path]] = {}
    for p in paths:
        if m := CHANNEL_FILE.match(case_name(p)):
            numbered.setdefault(m["case"], []).append(p)
    groups = {case: files for case, files in numbered.items()
              if any(case_name(f).endswith("_0000") for f in files)}
    for case, files in groups.items():
        if len(files) != channels:
            names, where = ", ".join(f.name for f in files), files[0].parent.absolute()
            raise DataError(f"case {case!r} has {len(files)} channel file(s) ({names}) in {where}, "
                            f"but the model takes {channels} channel(s): give each case's {channels} channel file(s), "
                            f"or a model of {len(files)} channel(s)")
    grouped = image_cases([p for files in groups.values() for p in files], True)
    cases, seen = [], set()
    for p in paths:
        m = CHANNEL_FILE.match(case_name(p))
        case = m["case"] if m and m["case"] in grouped else None
        if case is None:
            cases.append((case_name(p), [p]))
        elif case not in seen:
            seen.add(case)
            cases.append((case, grouped[case]))
    return cases


def _written_by(target: Path) -> list[Path]:
    """The files that writing the image ``target`` makes (a ``.mhd`` header has its ``.raw`` data file)."""
    from ..io import case_name, extension

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
    first: dict[Path, Path] = {}
    for (_, paths), target in zip(cases, targets):
        other = first.setdefault(target, paths[0])
        if other != paths[0]:
            raise DataError(f"{other.absolute()} and {paths[0].absolute()} have the same name, {target.name!r}, so "
                            f"their predictions would overwrite each other: predict them into different --out "
                            f"folders, or rename one")
    outputs.claim([out / "disagreement.csv", out / LABEL_NEXT, out / VOLUMES_CSV,
                   *(f for t in targets for f in _written_by(t))])
    folder = Outputs(out / DISAGREEMENT, "predict")
    folder.claim(f for case, paths in cases for f in _written_by(output_path(out / DISAGREEMENT, paths[0], case)))


def _reviews(cases: list[Case], labels: Path | None) -> dict[str, Path]:
    """The label file of each case that has one in ``labels``, its review record checked before any
    image is predicted (a malformed one is refused before anything is written)."""
    from ..io import image_shape

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
    from ..distributed import current_world, join_world

    join_world(args.device)  # under torchrun: the cases are split over the processes, rank 0 writes the tables
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    given = workspace_cases(args) if args.workspace else None
    if given is None:
        missing = [f for f in ("--model", "--images", "--out") if getattr(args, f[2:]) is None]
        if missing:
            raise DataError(f"predict needs {' and '.join(missing)} (or --workspace FOLDER)")
    elif not given:
        print(f"every case of {args.workspace} is reviewed whole: nothing to predict")
        return
    paths = _expand(args.images) if given is None else []
    with ExitStack() as stack:
        outputs = stack.enter_context(locked(args.out, "predict")) if current_world().writes else \
            Outputs(args.out, "predict")
        _predict(args, given or paths, outputs, grouped=given is not None)


def _predict(args: argparse.Namespace, given: list, outputs: Outputs, grouped: bool) -> None:
    """``cmd_predict`` with ``--out`` held: each image's files are written and recorded before the next.
    ``given``: image paths, or (``grouped``) the cases of a workspace."""
    from ..checkpoint import REFUSED_PATCH, load_model
    from ..distributed import current_world

    world = current_world()
    model = load_model(args.model, str(world.device) if world.device is not None else args.device)
    cases = given if grouped else _cases(given, len(model.channels))
    targets = [output_path(args.out, files[0], case) for case, files in cases]
    table = _prediction_table(args.out, outputs)
    _check_outputs(cases, targets, args.out, outputs)
    if REFUSED_PATCH in model.extra and not args.patch:
        raise DataError(f"{args.model.absolute()} was trained with patch {model.extra[REFUSED_PATCH]}, under the "
                        f"{MIN_PATCH} voxels per axis this napari-dmd accepts: give a window with --patch, e.g. "
                        f"--patch {' '.join(str(max(MIN_PATCH, p)) for p in model.extra[REFUSED_PATCH])}")
    labels = _reviews(cases, args.labels)
    world.barrier()  # rank 0 holds --out before anything is written
    slice_scores, reviewed = {}, {}

    def record(r: dict) -> None:  # rank 0: in the manifests and tables as soon as its files are written
        _record(args.out, outputs, r, table)
        slice_scores[r["name"]] = r["slice_scores"]
        if r["reviewed"] is not None:
            reviewed[r["name"]] = r["reviewed"]

    mine = []
    for (case, files), target in bar(list(zip(cases, targets))[world.rank::world.size], desc="predicting",
                                     unit="vol"):
        mine.append(_predict_case(args, model, case, files, target, labels.get(case)))
        if not world.distributed:
            record(mine.pop())
    if world.distributed:  # every process's cases, recorded by rank 0 in the order of the cases
        order = {t.name: k for k, t in enumerate(targets)}
        gathered = sorted((r for rank in world.gather(mine) for r in rank), key=lambda r: order[r["name"]])
        if not world.writes:
            return
        for r in gathered:
            record(r)
    _write_label_next(args.out / LABEL_NEXT, slice_scores, reviewed)
    outputs.wrote(args.out / LABEL_NEXT)
    print(f"{len(slice_scores)} predictions in {args.out}; the slices to label next are in "
          f"{args.out / LABEL_NEXT}")


def _predict_case(args: argparse.Namespace, model, case: str, files: list[Path], target: Path,
                  label: Path | None) -> dict:
    """Predict one case and write its label map and disagreement map; what the tables need of it."""
    from ..folders import read_case
    from ..inference import largest_components, predict
    from ..io import write_image
    from ..structures import volumes_table

    image, geometry = read_case(files, model.channels if len(files) > 1 else (), args.spacing)
    shown = files[0].absolute() if len(files) == 1 else f"case {case!r} ({', '.join(f.name for f in files)})"
    if image.ndim != model.ndim:
        raise DataError(f"{shown} is a {image.ndim}D image of shape {image.shape}, but the model "
                        f"{args.model.absolute()} is {model.ndim}D: predict it with a {image.ndim}D model")
    if image.count != len(model.channels):
        raise DataError(f"{shown} has {image.count} channel(s), but the model {args.model.absolute()} takes "
                        f"{describe(model.channels)}: give each case's channels (one 4D or colour file, or channel "
                        f"files case_0000, case_0001, ...), or a model of {image.count} channel(s)")
    update, done = windows(target.name)
    pred = predict(model, image, tuple(args.patch) if args.patch else None,
                   tuple(args.stride) if args.stride else None, args.batch_size, progress=update,
                   weighting=args.weighting, combine=args.combine, mirror=args.mirror)
    done()
    written = largest_components(pred.labels) if args.largest_component else pred.labels
    write_image(target, written, geometry)
    disagreement = output_path(args.out / DISAGREEMENT, files[0], case)
    write_image(disagreement, pred.disagreement, geometry)
    return {"name": target.name, "target": target, "disagreement": disagreement,
            "volumes": volumes_table(written, geometry, model.class_names), "score": pred.volume_score,
            "slice_scores": pred.slice_scores, "reviewed": None if label is None else reviewed_of(label, image.shape)}


def _record(out: Path, outputs: Outputs, r: dict, table: dict[str, dict]) -> None:
    """Record one case's prediction in the manifests and the tables (rank 0)."""
    from ..structures import update_volumes_csv

    outputs.wrote(*_written_by(r["target"]))
    update_volumes_csv(out / VOLUMES_CSV, r["name"], r["volumes"])
    outputs.wrote(out / VOLUMES_CSV)
    Outputs(out / DISAGREEMENT, "predict").wrote(*_written_by(r["disagreement"]))
    table[r["name"]] = {"case": r["name"], "disagreement": f"{r['score']:.6f}"}
    write_csv(out / "disagreement.csv", sorted(table.values(), key=lambda r: -float(r["disagreement"])))
    outputs.wrote(out / "disagreement.csv")


def _write_label_next(path: Path, slice_scores: dict[str, np.ndarray], reviewed: dict) -> None:
    """The 'label this next' list of ``ranking.suggest``: unreviewed slabs along axis 0, spread over the images."""
    from ..ranking import SCORE_HELP, suggest

    picks = suggest(slice_scores, reviewed, count=max(10, len(slice_scores)))
    write_csv(path, [{"rank": k, "case": s.image, "slice": s.index, "score": f"{s.score:.6f}"}
                      for k, s in enumerate(picks, 1)], ["rank", "case", "slice", "score"])
    if picks:
        print(f"label next: {picks[0].image} slice {picks[0].index}, score {picks[0].score:.3f} ({SCORE_HELP})")
    else:
        print("nothing left to label next: every slice of every image is reviewed")


def _expand(sources: list[Path]) -> list[Path]:
    """Image files as given; folders as the images they hold, or as one DICOM series."""
    from ..io import is_supported, list_images, not_found

    paths: list[Path] = []
    for src in sources:
        if not src.exists():
            raise not_found(src)
        inside = list_images(src) if src.is_dir() else []
        if src.is_dir() and not inside and not is_supported(src):
            raise DataError(f"{src.absolute()} holds no image ({KINDS})")
        paths += inside or [src]
    return paths

