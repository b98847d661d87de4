"""Hippocampus (../shared/data/hippocampus, 3 classes): DMD vs the supervised pair, per class.

Fixed split of the 195 cases sorted by name: every 5th case (39) is test; of the other 156 the
first 16 (~10%) are labeled and 140 unlabeled. Patch 32x48x32, batch 2+2, sliding-window stride
8/12/8, network A scored, voxel metrics.

    python benchmarks/hippocampus.py --iterations 1000 --seeds 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from protocol import SHARED, Split, run, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "hippocampus")
    ap.add_argument("--labeled", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--lr-step", type=int, default=750)
    ap.add_argument("--lambda-rampup", type=int, default=0, help="ramp lambda up over this many iterations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["dmd", "supervised"], choices=["dmd", "supervised"])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hippocampus.json"))
    args = ap.parse_args()
    names = sorted(p.name for p in (args.data / "images").iterdir())
    pair = lambda n: (args.data / "images" / n, args.data / "labels" / n)  # noqa: E731
    test = [pair(n) for k, n in enumerate(names) if k % 5 == 4]
    train = [n for k, n in enumerate(names) if k % 5 != 4]
    split = Split([pair(n) for n in train[:args.labeled]], [pair(n)[0] for n in train[args.labeled:]], test)
    base = dict(num_classes=3, class_names=("background", "anterior", "posterior"), iterations=args.iterations,
                lr_step=args.lr_step, checkpoint_every=500,
                lambda_rampup=args.lambda_rampup)
    results = run("hippocampus", split, base, args.modes, args.seeds, (32, 48, 32), (8, 12, 8), args.runs,
                  args.out)
    print(table(results))
    print(table(results, largest_component=True))


if __name__ == "__main__":
    main()
