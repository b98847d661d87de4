"""``napari-dmd``: train, predict and evaluate from the command line, and the demo.

Bad input ends with one line on stderr and exit status 2; an interrupted training keeps its
last checkpoint.
"""
from __future__ import annotations

import argparse
import csv
import signal
import sys
from io import StringIO
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm as _tqdm

from .config import TrainConfig
from .errors import DataError, DMDError

DEFAULTS = TrainConfig()
KINDS = "NIfTI, NRRD, MHA/MHD or a DICOM series"


def tqdm(*args, **kwargs) -> _tqdm:
    """A progress bar on a terminal, nothing when stderr is a file or a pipe."""
    return _tqdm(*args, disable=None, **kwargs)


def _folder_images(folder: Path) -> list[Path]:
    from .io import list_images

    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    paths = list_images(folder)
    if not paths:
        raise DataError(f"{folder} holds no image ({KINDS})")
    return paths


def _by_case(paths: list[Path]) -> dict[str, Path]:
    from .io import case_name

    return {case_name(p): p for p in paths}


def _check_geometry(image_path: Path, label_path: Path, image: np.ndarray, label: np.ndarray, gi, gl) -> None:
    if image.shape != label.shape:
        raise DataError(f"{label_path.name} has shape {label.shape}, its image {image_path.name} {image.shape}")
    if not np.allclose(gi.spacing, gl.spacing, rtol=1e-3) or not np.allclose(gi.origin, gl.origin, atol=1e-2) \
            or not np.allclose(gi.direction, gl.direction, atol=1e-3):
        raise DataError(f"{label_path.name} does not lie on its image {image_path.name} "
                        f"(spacing, origin or direction differ)")


def load_training_data(images: Path, labels: Path, unlabeled: list[Path]):
    """Labeled volumes (images with a label file of the same name), unlabeled volumes, class count."""
    from .data import Volume
    from .io import read_image

    image_paths, label_paths = _by_case(_folder_images(images)), _by_case(_folder_images(labels))
    paired = sorted(set(image_paths) & set(label_paths))
    if not paired:
        raise DataError(f"no label file in {labels} has the name of an image in {images}")
    orphans = sorted(set(label_paths) - set(image_paths))
    if orphans:
        raise DataError(f"label {label_paths[orphans[0]].name} has no image of the same name in {images}")
    labeled, top = [], 0
    for case in tqdm(paired, desc="reading labeled", unit="vol", leave=False):
        img, gi = read_image(image_paths[case])
        lab, gl = read_image(label_paths[case])
        _check_geometry(image_paths[case], label_paths[case], img, lab, gi, gl)
        v = Volume.create(img, lab, name=case, spacing=gi.scale)
        top = max(top, int(v.label.max()))
        labeled.append(v)
    unlabeled_paths = [image_paths[c] for c in sorted(set(image_paths) - set(label_paths))]
    for folder in unlabeled:
        unlabeled_paths += _folder_images(folder)
    unl = []
    for p in tqdm(unlabeled_paths, desc="reading unlabeled", unit="vol", leave=False):
        img, g = read_image(p)
        unl.append(Volume.create(img, name=p.name, spacing=g.scale))
    return labeled, unl, max(top + 1, 2)


def cmd_train(args: argparse.Namespace) -> None:
    """Train a model pair with DMD into a run folder."""
    from .training import Trainer

    labeled, unlabeled, found_classes = load_training_data(args.images, args.labels, args.unlabeled)
    num_classes = args.classes or (len(args.class_names) if args.class_names else found_classes)
    cfg = TrainConfig(num_classes=num_classes, class_names=tuple(args.class_names or ()),
                      iterations=args.iterations, lr=args.lr, lr_step=args.lr_step, lr_gamma=args.lr_gamma,
                      momentum=args.momentum, weight_decay=args.weight_decay, lambda_distill=args.lambda_distill,
                      lambda_rampup=args.lambda_rampup,
                      temperature=args.temperature, patch_size=tuple(args.patch) if args.patch else None,
                      labeled_batch=args.labeled_batch, unlabeled_batch=args.unlabeled_batch,
                      foreground_fraction=args.foreground_fraction, device=args.device, precision=args.precision,
                      checkpoint_every=args.checkpoint_every, seed=args.seed)
    trainer = Trainer(labeled, unlabeled, cfg, run_dir=args.out, init=args.init, resume=args.resume)
    note = "" if unlabeled else " (no unlabeled image: distillation on the labeled images only)"
    print(f"training on {len(labeled)} labeled + {len(unlabeled)} unlabeled volumes, {num_classes} classes, "
          f"patch {trainer.patch}, {trainer.device} {str(trainer.dtype).removeprefix('torch.')}{note}")
    bar = tqdm(total=cfg.iterations, initial=trainer.start, unit="it", desc="DMD")
    previous = signal.signal(signal.SIGINT, lambda *_: trainer.stop())  # Ctrl-C: stop after this step
    try:
        for p in trainer.run():
            bar.update(p.iteration - bar.n)
            bar.set_postfix(sup=f"{p.sup_loss:.3f}", dis=f"{p.distill_loss:.3f}", lr=f"{p.lr:.0e}")
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    if trainer.stopped:
        print(f"interrupted at iteration {trainer.model.iteration}; checkpoint written to {trainer.checkpoint_path}"
              " (continue with --init it --resume)", file=sys.stderr)
        raise SystemExit(130)
    print(f"model written to {trainer.checkpoint_path}")


def output_path(out: Path, source: Path) -> Path:
    """Where the prediction of ``source`` goes: same name, same format (DICOM becomes .nii.gz)."""
    from .io import WRITABLE_EXTENSIONS, case_name, extension

    ext = extension(source) if source.is_file() else ""
    return out / f"{case_name(source)}{ext if ext in WRITABLE_EXTENSIONS else '.nii.gz'}"


def cmd_predict(args: argparse.Namespace) -> None:
    """Predict images with a saved model; write label maps, disagreement maps and a ranking CSV."""
    from .checkpoint import load_model
    from .inference import largest_components, predict
    from .io import read_image, write_image

    paths = _expand(args.images)
    targets = [output_path(args.out, path) for path in paths]
    inputs = {path.resolve() for path in paths}
    for path, target in zip(paths, targets):
        if target.resolve() in inputs:
            raise DataError(f"the prediction of {path.name} would overwrite an input image: choose another --out")
    if len(set(targets)) < len(targets):
        raise DataError("two input images have the same name, so their predictions would overwrite each other: "
                        "predict them into different --out folders")
    model = load_model(args.model, args.device)
    rows = []
    for path, target in tqdm(list(zip(paths, targets)), desc="predicting", unit="vol"):
        image, geometry = read_image(path)
        pred = predict(model, image, tuple(args.patch) if args.patch else None,
                       tuple(args.stride) if args.stride else None, args.batch_size)
        write_image(target, largest_components(pred.labels) if args.largest_component else pred.labels, geometry)
        write_image(output_path(args.out / "disagreement", path), pred.disagreement, geometry)
        top = np.argsort(pred.slice_scores)[::-1][:5]
        rows.append({"case": target.name, "disagreement": f"{pred.volume_score:.6f}",
                     "most_ambiguous_slices": " ".join(map(str, top))})
    rows.sort(key=lambda r: -float(r["disagreement"]))
    _write_csv(args.out / "disagreement.csv", rows)
    print(f"{len(rows)} predictions in {args.out}; label next: {rows[0]['case']} "
          f"(slices {rows[0]['most_ambiguous_slices']})")


def _expand(sources: list[Path]) -> list[Path]:
    """Image files as given; folders as the images they hold, or as one DICOM series."""
    from .io import is_supported, list_images

    paths: list[Path] = []
    for src in sources:
        if not src.exists():
            raise DataError(f"{src} does not exist")
        inside = list_images(src) if src.is_dir() else []
        if src.is_dir() and not inside and not is_supported(src):
            raise DataError(f"{src} holds no image ({KINDS})")
        paths += inside or [src]
    return paths


def _write_csv(path: Path, rows: list[dict]) -> None:
    from .io import write_text

    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Score predictions against ground truth of the same names: per case, per class, and means."""
    from .io import read_image
    from .metrics import METRICS, evaluate_case, summarize

    preds, refs = _by_case(_folder_images(args.predictions)), _by_case(_folder_images(args.labels))
    cases = sorted(set(preds) & set(refs))
    if not cases:
        raise DataError(f"no prediction in {args.predictions} has the name of a label file in {args.labels}")
    rows = []
    for case in tqdm(cases, desc="evaluating", unit="vol", leave=False):
        pred, _ = read_image(preds[case])
        ref, g = read_image(refs[case])
        if pred.shape != ref.shape:
            raise DataError(f"prediction {preds[case].name} has shape {pred.shape}, the label {ref.shape}")
        classes = args.classes or max(int(ref.max()), int(pred.max()), 1) + 1
        rows += [{"case": case, **r} for r in evaluate_case(pred, ref, classes, g.scale)]
    keys = list(METRICS)
    table = rows + [{"case": "mean", **m} for m in summarize(rows)]
    print(f"{'case':<24}{'class':>6}" + "".join(f"{k:>10}" for k in keys))
    for r in table:
        print(f"{r['case']:<24}{r['class']:>6}" + "".join(f"{r[k]:>10.4f}" for k in keys))
    if args.out:
        _write_csv(args.out, [{k: r[k] for k in ["case", "class", *keys]} for r in table])
        print(f"written to {args.out}")


def cmd_demo(args: argparse.Namespace) -> None:
    """napari with the plugin and the sample data, or the same loop headless."""
    if args.headless:
        from .sample_data import CLASS_NAMES, SAMPLE_DIR

        run = args.out / "run"
        for argv in (["train", "--images", str(SAMPLE_DIR / "images"), "--labels", str(SAMPLE_DIR / "labels"),
                      "--out", str(run), "--iterations", str(args.iterations), "--lr-step", str(args.iterations),
                      "--class-names", *CLASS_NAMES],
                     ["predict", "--model", str(run / "model.pt"), "--images", str(SAMPLE_DIR / "images"),
                      "--out", str(args.out / "predictions")]):
            print("napari-dmd " + " ".join(argv))
            cmd = build_parser().parse_args(argv)
            cmd.func(cmd)
        return
    import napari

    from .plugin.demo import open_demo, train_and_screenshot

    if args.screenshot:
        print(train_and_screenshot(args.screenshot, args.iterations, args.iterations // 3))
        return
    open_demo()
    napari.run()


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model pair with Deep Mutual Distillation")
    p.add_argument("--images", type=Path, required=True, help="folder of labeled images (others there count as unlabeled)")
    p.add_argument("--labels", type=Path, required=True, help="folder of label maps named like their images")
    p.add_argument("--unlabeled", type=Path, nargs="*", default=[], help="folders of unlabeled images")
    p.add_argument("--out", type=Path, required=True, help="run folder (model.pt, config.json)")
    p.add_argument("--classes", type=int, help="number of classes with background (default: from the labels)")
    p.add_argument("--class-names", nargs="+", help="names of the classes, background first")
    p.add_argument("--iterations", type=int, default=DEFAULTS.iterations)
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--lr-step", type=int, default=DEFAULTS.lr_step, help="multiply lr by --lr-gamma every this many iterations")
    p.add_argument("--lr-gamma", type=float, default=DEFAULTS.lr_gamma)
    p.add_argument("--momentum", type=float, default=DEFAULTS.momentum)
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    p.add_argument("--lambda", dest="lambda_distill", type=float, default=DEFAULTS.lambda_distill,
                   help="weight of the distillation loss")
    p.add_argument("--lambda-rampup", type=int, default=DEFAULTS.lambda_rampup,
                   help="ramp lambda up over this many iterations (0: constant, as in the paper)")
    p.add_argument("--temperature", type=float, default=DEFAULTS.temperature)
    p.add_argument("--patch", type=int, nargs="+", help="patch size in array order (z y x); default: from the data")
    p.add_argument("--labeled-batch", type=int, default=DEFAULTS.labeled_batch)
    p.add_argument("--unlabeled-batch", type=int, default=DEFAULTS.unlabeled_batch)
    p.add_argument("--foreground-fraction", type=float, default=DEFAULTS.foreground_fraction,
                   help="share of labeled crops centred on a labeled voxel (default 0: uniform crops, as in the "
                        "paper); raise it, e.g. to 0.33, for structures small next to the patch")
    p.add_argument("--device", default=DEFAULTS.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", default=DEFAULTS.precision, choices=["auto", "fp32", "bf16", "fp16"])
    p.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--init", type=Path, help="warm start from this checkpoint")
    p.add_argument("--resume", action="store_true", help="with --init: continue its run (optimiser, iteration)")
    p.set_defaults(func=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = argparse.ArgumentParser(prog="napari-dmd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    p = sub.add_parser("predict", help="predict images with a trained model")
    p.add_argument("--model", type=Path, required=True, help="model.pt of a run folder")
    p.add_argument("--images", type=Path, nargs="+", required=True, help="image files or folders")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patch", type=int, nargs="+", help="window size (z y x); default: the training patch")
    p.add_argument("--stride", type=int, nargs="+", help="window stride (z y x); default: half the window")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the largest connected component of each class")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--predictions", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--classes", type=int, help="number of classes with background (default: from the data)")
    p.add_argument("--out", type=Path, help="CSV file for the table")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("demo", help="napari with the plugin and sample data (--headless: the loop without a screen)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--out", type=Path, default=Path("napari-dmd-demo"))
    p.add_argument("--iterations", type=int, default=300, help="training iterations of --headless and --screenshot")
    p.add_argument("--screenshot", type=Path, help="train in the dock, save a picture of the window there, and quit")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DMDError as exc:
        print(f"napari-dmd: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
