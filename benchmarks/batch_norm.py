"""Batch-norm statistics with one labeled volume: the correction loop's start training, variant by variant.

The start of ``loop.py`` (one training volume labeled whole, the pool's volumes unlabeled, the data's patch,
300 iterations, the dock's defaults otherwise), trained once per variant and seed; the prediction
(``loop.score``) scored on the loop's test volumes (Dice % per foreground class and their mean). Variants:

- ``before``: one batch-norm pass over labeled and unlabeled patches (``batch_norm`` joint), the running
  statistics as training leaves them (the defaults before this benchmark);
- ``before, lambda 0``: the same with λ = 0, the unlabeled patches still in the batch: only batch norm sees them;
- ``joint, settled``: one pass, the running statistics recomputed at the final weights (``settle_statistics``);
- ``split``: labeled and unlabeled patches normalised apart, running statistics from the unlabeled part, as
  training leaves them;
- ``split, settled``: the same, recomputed at the final weights (today's defaults);
- ``supervised``, ``supervised, settled``: the pair on the labeled volume alone (no unlabeled patch).

    python benchmarks/batch_norm.py --data hippocampus --seeds 0
    python benchmarks/batch_norm.py --data hippocampus --seeds 0 --iterations 100 --variants split "split, settled" \
        supervised "supervised, settled"          # a first look early in a run, as the dock's
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_dmd.config import PRECISIONS, TrainConfig
from napari_dmd.precision import machine_name
from napari_dmd.review import Reviewed
from napari_dmd.runtime import resolve_device
from napari_dmd.training import Trainer

from datasets import DATASETS
from loop import DEFAULTS, load_setup, score, volumes
from results_file import load_results, save_result

# variant: (batch_norm, lambda, unlabeled patches, settled)
VARIANTS = {
    "before": ("joint", None, True, False),
    "before, lambda 0": ("joint", 0.0, True, False),
    "joint, settled": ("joint", None, True, True),
    "split": ("split", None, True, False),
    "split, settled": ("split", None, True, True),
    "supervised": ("joint", 0.0, False, False),
    "supervised, settled": ("joint", 0.0, False, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(DEFAULTS), default="hippocampus")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--precision", choices=PRECISIONS, default="auto")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/batch_norm.json"))
    args = ap.parse_args()
    defaults = DEFAULTS[args.data]
    setup = load_setup(args.data, DATASETS[args.data].root, args.pool, defaults["test"])
    for seed in args.seeds:
        for name in args.variants:
            norm, lam, with_unlabeled, settled = VARIANTS[name]
            base = TrainConfig(num_classes=len(setup.class_names), class_names=setup.class_names,
                               patch_size=defaults["patch"], precision=args.precision, iterations=args.iterations,
                               checkpoint_every=args.iterations, seed=seed, batch_norm=norm)
            cfg = replace(base, lambda_distill=base.lambda_distill if lam is None else lam,
                          unlabeled_batch=base.unlabeled_batch if with_unlabeled else 0)
            labeled, unlabeled = volumes(setup, {c.name: Reviewed(c.image.shape, 0) for c in setup.pool}, "dmd")
            t0 = time.perf_counter()
            trainer = Trainer(labeled, unlabeled if with_unlabeled else [], cfg)
            if not settled:
                trainer.settle_statistics = lambda iteration: None
            for _ in trainer.run():
                pass
            seconds = time.perf_counter() - t0
            metrics = score(trainer.model, setup)
            dice = [100 * c["dice"] for c in metrics["per_class"]]
            save_result(args.out, f"{name}/it{args.iterations}/seed{seed}", {
                "variant": name, "seed": seed, "iterations": args.iterations, "dice": 100 * metrics["dice"],
                "dice_per_class": dice,
                "hd95": metrics["hd95"], "train_seconds": seconds, "patch": list(trainer.patch),
                "precision": trainer.precision.describe(), "machine": machine_name(resolve_device()),
                "data": args.data, "start": setup.start.name, "pool": len(setup.pool), "test": len(setup.test)})
            print(f"{args.data} seed {seed} {name}: Dice {100 * metrics['dice']:.1f} "
                  f"({' / '.join(f'{d:.1f}' for d in dice)}), {seconds:.0f} s", flush=True)
    results = load_results(args.out)
    print("| variant | seeds | Dice % (mean of classes) | per class |\n|---|---|---|---|")
    for name in VARIANTS:
        rows = [r for r in results.values() if r["variant"] == name and r["data"] == args.data
                and r["iterations"] == args.iterations]
        if rows:
            per = np.mean([r["dice_per_class"] for r in rows], axis=0)
            print(f"| {name} | {len(rows)} | {np.mean([r['dice'] for r in rows]):.1f} | "
                  f"{' / '.join(f'{d:.1f}' for d in per)} |")


if __name__ == "__main__":
    main()
