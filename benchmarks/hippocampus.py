"""Hippocampus (../shared/data/hippocampus, 3 classes): DMD vs the supervised pair, per class.

Fixed split of the 195 cases sorted by name: every 5th case (39) is test; of the other 156 the
first 16 (~10%) are labeled and 140 unlabeled. Patch 32x48x32, batch 2+2, sliding-window stride
8/12/8, the prediction scored (``--combine``), voxel metrics; 1000 iterations, lr x0.1 at 750, constant λ.
Every training setting of ``napari-dmd train`` is an option, its default the protocol's (``datasets.HIPPOCAMPUS``).

    python benchmarks/hippocampus.py --iterations 1000 --seeds 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import HIPPOCAMPUS, add_training_options, settings_of
from protocol import add_prediction_options, run, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HIPPOCAMPUS.root)
    ap.add_argument("--labeled", type=int, default=HIPPOCAMPUS.labeled)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["dmd", "supervised"], choices=["dmd", "supervised"])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/hippocampus.json"))
    add_training_options(ap, HIPPOCAMPUS.defaults, replaced=("seed",))
    add_prediction_options(ap)
    args = ap.parse_args()
    split = HIPPOCAMPUS.split(args.data, args.labeled)
    results = run(HIPPOCAMPUS, split, settings_of(args), args.modes, args.seeds, args.runs, args.out,
                  args.combine, args.mirror)
    print(table(results))
    print(table(results, largest_component=True))


if __name__ == "__main__":
    main()
