"""LA at half resolution (../shared/data/la_half): DMD vs the same V-Nets on the labeled scans alone.

Protocol of the data README: the first 8 ids of train.list labeled, the other 72 unlabeled, patch
32x64x64 (z, y, x), batch 2 labeled + 2 unlabeled, sliding window stride 2/9/9, network A scored on
the 20 ids of test.list with medpy voxel metrics, no post-processing, final iteration; the paper's
learning-rate schedule (x0.1 every 2500 iterations, so lr 0.01 throughout a 2000-iteration run).

    python benchmarks/la_half.py --iterations 2000 --seeds 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_dmd.config import TrainConfig

from protocol import SHARED, Split, run, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "la_half")
    ap.add_argument("--labeled", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--lr-step", type=int, default=TrainConfig.lr_step,
                    help="lr x0.1 every this many iterations (paper: 2500, so constant over 2000)")
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--lambda-rampup", type=int, default=0, help="ramp lambda up over this many iterations")
    ap.add_argument("--foreground-fraction", type=float, default=TrainConfig.foreground_fraction,
                    help="share of labeled crops centred on a foreground voxel")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["dmd", "supervised"], choices=["dmd", "supervised"])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/la_half.json"))
    args = ap.parse_args()
    ids = (args.data / "train.list").read_text().split()
    pair = lambda i: (args.data / "imagesTr" / f"{i}.nii.gz", args.data / "labelsTr" / f"{i}.nii.gz")  # noqa: E731
    split = Split([pair(i) for i in ids[:args.labeled]], [pair(i)[0] for i in ids[args.labeled:]],
                  [pair(i) for i in (args.data / "test.list").read_text().split()])
    base = dict(iterations=args.iterations, lr_step=args.lr_step, temperature=args.temperature, checkpoint_every=500,
                lambda_rampup=args.lambda_rampup, foreground_fraction=args.foreground_fraction)
    results = run("la_half", split, base, args.modes, args.seeds, (32, 64, 64), (2, 9, 9), args.runs, args.out)
    print(table(results))
    print(table(results, largest_component=True))


if __name__ == "__main__":
    main()
