"""Thick slices: the spacing-aware pooling and patch against isotropic pooling, same iterations.

la_half (1.25 mm isotropic) made anisotropic as a thick-slice scan would be: every 4 slices along z
averaged into one 5 mm slice (11 slices of 5 × 1.25 × 1.25 mm), the label of a thick slice the majority
of its 4 thin ones. Both arms train DMD on the standard split (8 labeled, 72 unlabeled) with the
protocol's settings; 'isotropic' is today's V-Net (2×2×2 pooling, patch from the data's median shape
rounded to 16), 'spacing-aware' pools in-plane until the pixels are as coarse as the slices and picks its
patch by physical extent (``napari_dmd.spacing``). The prediction (the pair's mean; ``--combine a``: network A, as
the committed results were scored) is scored on the 20 test cases (voxel Dice and Jaccard), sliding windows at
half the patch.

    python benchmarks/anisotropy.py --iterations 500 --seeds 0 1
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from napari_dmd.checkpoint import load_model
from napari_dmd.config import CHECKPOINT_NAME, TrainConfig
from napari_dmd.data import Volume
from napari_dmd.inference import predict
from napari_dmd.io import read_image
from napari_dmd.metrics import evaluate_case, summarize
from napari_dmd.spacing import describe
from napari_dmd.training import Trainer

from datasets import LA_HALF
from protocol import add_prediction_options, prediction_tag
from results_file import load_results, save_result

THICK = 4  # thin slices per thick slice
SPACING = (1.25 * THICK, 1.25, 1.25)
ARMS = ("isotropic", "spacing-aware")


def thick(path: Path, label: bool) -> np.ndarray:
    """The volume at ``path`` with every ``THICK`` slices along z merged (mean; labels: majority)."""
    arr, _ = read_image(path)
    z = arr.shape[0] // THICK * THICK
    blocks = arr[:z].reshape(z // THICK, THICK, *arr.shape[1:]).astype(np.float32).mean(axis=1)
    return (blocks >= 0.5).astype(np.uint8) if label else blocks


def run_arm(arm: str, seed: int, iterations: int, runs: Path, combine: str, mirror: bool) -> dict:
    """Train one arm (or reuse a finished run) and score its prediction (``combine``, ``mirror``) on the test
    split."""
    split = LA_HALF.split()
    spacing = SPACING if arm == "spacing-aware" else None
    cfg = TrainConfig(num_classes=2, class_names=LA_HALF.class_names, iterations=iterations, lambda_rampup=0,
                      seed=seed)
    run_dir = runs / f"anisotropy_{arm}_it{iterations}_s{seed}"
    seconds = 0.0
    ckpt = run_dir / CHECKPOINT_NAME
    if not (ckpt.exists() and load_model(ckpt, "cpu").iteration == iterations):
        labeled = [Volume.create(thick(i, False), thick(lab, True), name=i.name, spacing=spacing)
                   for i, lab in split.labeled]
        unlabeled = [Volume.create(thick(i, False), name=i.name, spacing=spacing) for i in split.unlabeled]
        trainer = Trainer(labeled, unlabeled, cfg, run_dir=run_dir)
        plan = describe(trainer.config.spacing, trainer.model.nets[0].pools)
        print(f"{arm} seed {seed}: patch {trainer.patch}, {plan}", flush=True)
        t0 = time.perf_counter()
        for p in trainer.run():
            if p.iteration % 100 == 0:
                print(f"  it {p.iteration}/{p.total} sup {p.sup_loss:.3f} {p.its_per_s:.2f} it/s", flush=True)
        seconds = time.perf_counter() - t0
    model = load_model(ckpt, "cpu")
    patch = model.config.patch_size
    stride = tuple(max(1, p // 2) for p in patch)
    rows = []
    for image_path, label_path in split.test:
        pred = predict(model, thick(image_path, False), patch, stride, batch_size=8, combine=combine,
                       mirror=mirror)
        rows += [{"case": image_path.name, **r} for r in evaluate_case(pred.labels, thick(label_path, True), 2)]
    return {"arm": arm, "seed": seed, "iterations": iterations, "patch": list(patch),
            "pooling": [list(level) for level in model.nets[0].pools], "train_seconds": seconds,
            "per_class": summarize(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/anisotropy.json"))
    add_prediction_options(ap)
    args = ap.parse_args()
    tag = prediction_tag(args.combine, args.mirror)
    for seed in args.seeds:
        for arm in ARMS:
            res = run_arm(arm, seed, args.iterations, args.runs, args.combine, args.mirror)
            save_result(args.out, f"{arm}{tag}/seed{seed}/it{args.iterations}", {**res, "prediction": tag})
            dice = [m["dice"] for m in res["per_class"]]
            print(f"{arm}{tag} seed {seed}: Dice {100 * np.mean(dice):.2f}", flush=True)
    legacy = prediction_tag("a", False)  # results saved without a "prediction" were network A's
    results = load_results(args.out)
    for arm in ARMS:
        dice = [100 * np.mean([m["dice"] for m in r["per_class"]]) for r in results.values()
                if r["arm"] == arm and r["iterations"] == args.iterations and r.get("prediction", legacy) == tag]
        if dice:
            print(f"| {arm}{tag} | {len(dice)} | {np.mean(dice):.2f} ± {np.std(dice):.2f} |")


if __name__ == "__main__":
    main()
