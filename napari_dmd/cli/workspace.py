"""``napari-dmd workspace``, and what ``train --workspace`` and ``predict --workspace`` take from a workspace."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DataError
from ..workspace import Workspace
from ..workspace_lock import check_state_writable


def _open(args: argparse.Namespace, command: str) -> Workspace:
    """The workspace of ``--workspace`` for reading (train and predict write their own folders, not labels),
    refused with one line where its hidden folder cannot be written, or where other options say where the data
    is."""
    clash = [f"--{f}" for f in ("images", "labels", "unlabeled") if getattr(args, f, None)]
    if clash:
        raise DataError(f"--workspace gives the data: drop {' and '.join(clash)}")
    ws = Workspace(args.workspace, writable=False)
    check_state_writable(ws.layout.state, f"{command} --workspace")
    return ws


def workspace_training(args: argparse.Namespace) -> Workspace:
    """Fill ``args`` of ``train --workspace``: the images and labels of the workspace, its cache, a new run in
    it (or the run ``--resume`` continues), and the channel and class names of its ``dataset.json``."""
    ws = _open(args, "train")
    cases = ws.cases()  # dataset.json against the files, every label on its image's grid
    if not any(c.label is not None and c.reviewed != 0 for c in cases):
        raise DataError(f"the workspace {ws.layout.root.absolute()} has no labelled case yet "
                        f"({len(cases)} cases, no reviewed label file in {ws.layout.labels}): label one first")
    args.images, args.labels, args.unlabeled = ws.layout.images, ws.layout.labels, []
    args.cache = args.cache or ws.cache
    if args.out is None:
        args.out = args.init.parent if args.resume and args.init is not None else ws.new_run()
    if not args.channel_names and ws.layout.channel_names:
        args.channel_names = list(ws.layout.channel_names)
    if not args.class_names and not args.classes and ws.layout.class_names:
        args.class_names = list(ws.layout.class_names)
    return ws


def workspace_cases(args: argparse.Namespace) -> list[tuple[str, list[Path]]]:
    """The cases ``predict --workspace`` predicts (every case not reviewed whole, and imagesTs/), ``args`` filled:
    the workspace's latest model unless ``--model``, its predictions folder unless ``--out``, its labels."""
    ws = _open(args, "predict")
    cases = ws.cases()
    args.model = args.model or ws.latest_model()
    args.out = args.out or ws.predictions(args.model)
    if args.labels is None and ws.layout.labels.is_dir():
        args.labels = ws.layout.labels
    return [(c.name, list(c.images)) for c in cases if not c.labelled_whole]


def cmd_workspace(args: argparse.Namespace) -> None:
    """List the cases of a workspace with their state, or (``--create``) make a new, empty one."""
    from ..workspace_layout import create

    if args.create:
        if not args.class_names:
            raise DataError("--create needs --class-names (background first)")
        layout = create(args.folder, args.channel_names, args.class_names)
        print(f"created the workspace {layout.root.absolute()}: put images in {layout.images} "
              f"(case_0000{layout.file_ending} per channel), labels in {layout.labels}")
        return
    with Workspace(args.folder, writable=False) as ws:
        cases = ws.cases()
        layout = ws.layout
        names = f", classes {', '.join(layout.class_names)}" if layout.class_names else ""
        print(f"{layout.root.absolute()}: {layout.kind} layout, {len(cases)} cases{names}")
        print(f"{'case':<28}{'shape':>18}{'spacing':>22}{'channels':>10}  state")
        for c in cases:
            spacing = "×".join(f"{s:g}" for s in c.spacing)
            print(f"{c.name:<28}{'×'.join(map(str, c.shape)):>18}{spacing:>22}{c.channels:>10}  {c.state}")
