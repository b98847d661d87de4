"""``napari-dmd evaluate``: Dice, Jaccard, 95HD and ASD of predictions against ground truth."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..folders import by_case, check_geometry, check_label_map, folder_images, infer_classes
from ..outputs import Outputs, locked
from ..progress import bar
from .common import write_csv

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
    from ..io import read_image
    from ..metrics import METRICS, evaluate_case, summarize

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
        pred, gp = read_image(preds[case], args.spacing)
        ref, gr = read_image(refs[case], args.spacing)
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
        pred, _ = read_image(preds[case], args.spacing)
        ref, g = read_image(refs[case], args.spacing)
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
        write_csv(args.out, [{"case": r["case"], "class": r["class"], **{k: "" if np.isnan(r[k]) else r[k]
                                                                          for k in keys}} for r in table])
        outputs.wrote(args.out)
        print(f"written to {args.out} (an empty cell: class absent from both prediction and label, left out of "
              f"the mean)")


