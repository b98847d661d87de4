"""Gaussian against uniform weighting of the sliding windows: the same trained model scored both ways.

For each data set, one DMD run of the standard protocol (``datasets.py``, ``protocol.train``: reused when its
folder holds a finished run of the same settings) is scored on the test split (``protocol.evaluate``, the
protocol's stride) with each of ``config.WEIGHTINGS``: nnU-Net's Gaussian map (sigma 1/8 of the patch) and
uniform weights (every voxel of a window counts the same). Per class, the mean Dice, Jaccard, 95HD and ASD
of each, as JSON. It chose ``config.WEIGHTING``. The labels come from the pair's mean (``--combine a``: network A,
as the committed results were scored).

    python benchmarks/weighting.py --iterations 300 --out benchmarks/results/cpu/weighting.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_dmd.config import WEIGHTINGS, TrainConfig

from datasets import DATASETS
from protocol import add_prediction_options, evaluate, prediction_tag, train
from results_file import save_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/weighting.json"))
    add_prediction_options(ap)
    args = ap.parse_args()
    tag = prediction_tag(args.combine, args.mirror)
    for name in args.data:
        data = DATASETS[name]
        split = data.split()
        cfg = TrainConfig(**{**data.settings, "iterations": args.iterations, "patch_size": data.patch,
                             "num_classes": len(data.class_names), "class_names": data.class_names})
        run_dir = args.runs / f"{name}_dmd_l{len(split.labeled)}_it{cfg.iterations}_s0"
        seconds = train("dmd", split, cfg, run_dir)
        entry = {"iterations": args.iterations, "train_seconds": seconds, "test_cases": len(split.test),
                              **{w: evaluate(run_dir, split, data.patch, data.stride, w, args.combine,
                                             args.mirror)["per_class"] for w in WEIGHTINGS}}
        for kind in WEIGHTINGS:
            for m in entry[kind]:
                print(f"{name}{tag} {kind} class {m['class']}: Dice {100 * m['dice']:.2f} "
                      f"Jaccard {100 * m['jaccard']:.2f} 95HD {m['hd95']:.2f} ASD {m['asd']:.2f}", flush=True)
        save_result(args.out, name + tag, entry)


if __name__ == "__main__":
    main()
