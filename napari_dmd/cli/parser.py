"""The argument parser of every command, its options built from the declared settings."""
from __future__ import annotations

import argparse
import typing
from dataclasses import Field
from pathlib import Path

from ..config import (
    COMBINE,
    COMBINES,
    PREDICT_BATCH,
    WEIGHTING,
    WEIGHTINGS,
    RunOptions,
    TrainConfig,
    declared_settings,
    flag_of,
)
from ..export import add_parser as add_export_parser
from ..sample_data import DEMO_ITERATIONS
from .demo import cmd_demo
from .evaluate import cmd_evaluate
from .open import cmd_open
from .predict import cmd_predict
from .train import cmd_train
from .workspace import cmd_workspace


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


def _spacing_option(parser: argparse.ArgumentParser) -> None:
    """``--spacing Z Y X``: the voxel size of every image (and label map), in place of what the files state."""
    parser.add_argument("--spacing", type=float, nargs="+", metavar="MM",
                        help="voxel size in mm (z y x) of every image, replacing what the files state (default: "
                             "the files'; a spacing that is 0, negative, not finite or outside 0.001-1000 mm is "
                             "refused)")


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model pair with Deep Mutual Distillation")
    p.add_argument("--workspace", type=Path, help="workspace folder (nnU-Net or MSD layout, or a folder of images): "
                   "trains on every case, the labelled ones as far as they are reviewed, the others unlabeled "
                   "(imagesTs/ left out); the run goes to its .napari-dmd/runs/ unless --out is given")
    p.add_argument("--images", type=Path,
                   help="without --workspace: folder of labeled images (others there count as unlabeled)")
    p.add_argument("--labels", type=Path,
                   help="without --workspace: folder of label maps named like their images; a <case>.reviewed.json "
                        "beside a label file (written by the dock) limits it to the slices reviewed")
    p.add_argument("--unlabeled", type=Path, nargs="*", default=[], help="folders of unlabeled images")
    p.add_argument("--out", type=Path, help="run folder (model.pt, config.json), new or resumed")
    p.add_argument("--classes", type=int, help="number of classes with background (default: from the labels)")
    p.add_argument("--class-names", nargs="+", help="names of the classes, background first")
    p.add_argument("--channel-names", nargs="+", help="names of the image channels (modalities), in channel order "
                   "(default: 'image' for one, 'channel 0', 'channel 1', ... for several); a case's channels are "
                   "one colour, vector or 4D file, or nnU-Net's channel files case_0000, case_0001, ...")
    p.add_argument("--ignore-label", type=int,
                   help="label value of voxels that are not supervised (not reviewed); it must not be a class")
    _spacing_option(p)
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
    p.add_argument("--workspace", type=Path, help="workspace folder: predicts every case not reviewed whole, and "
                   "imagesTs/, into its .napari-dmd/predictions/<run>/ (with the workspace's latest model unless "
                   "--model is given)")
    p.add_argument("--model", type=Path, help="model.pt of a run folder")
    p.add_argument("--images", type=Path, nargs="+", help="without --workspace: image files or folders")
    p.add_argument("--out", type=Path,
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
    _spacing_option(p)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("--predictions", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True, help="ground truth; each needs a prediction of its name")
    p.add_argument("--classes", type=int, help="number of classes with background (default: from all files)")
    p.add_argument("--out", type=Path, help="CSV file for the table (new, or one evaluate wrote)")
    _spacing_option(p)
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("demo", help="napari with the dock on a copy of the sample workspace (--headless: the loop "
                       "without a screen)")
    p.add_argument("--headless", action="store_true")
    p.add_argument("--out", type=Path, default=Path("napari-dmd-demo"), help="where the sample workspace is copied")
    p.add_argument("--iterations", type=int, default=DEMO_ITERATIONS,
                   help="training iterations of --headless and --screenshot")
    p.add_argument("--screenshot", type=Path, help="train in the dock, save a picture of the window there, and quit")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("workspace", help="list the cases of a workspace and their state, or create a new one")
    p.add_argument("folder", type=Path, help="the workspace folder")
    p.add_argument("--create", action="store_true", help="create an empty workspace in nnU-Net's layout "
                   "(imagesTr/, labelsTr/, dataset.json) with --channel-names and --class-names")
    p.add_argument("--channel-names", nargs="+", default=["image"], help="with --create: the image channels")
    p.add_argument("--class-names", nargs="+", help="with --create: the classes, background first")
    p.set_defaults(func=cmd_workspace)
    p = sub.add_parser("open", help="napari with the DMD dock on a workspace: its cases, the case in view loaded, "
                       "labels saved as you go")
    p.add_argument("folder", type=Path, help="the workspace folder")
    p.set_defaults(func=cmd_open)
    add_export_parser(sub)
    return parser

