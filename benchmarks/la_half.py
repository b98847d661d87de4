"""LA at half resolution (../shared/data/la_half): DMD vs the same V-Nets on the labeled scans alone.

Protocol of the data README: the first 8 ids of train.list labeled, the other 72 unlabeled, patch
32x64x64 (z, y, x), batch 2 labeled + 2 unlabeled, sliding window stride 2/9/9, the prediction
(``--combine``: the pair's mean by default, network A with ``a``) scored on the 20 ids of test.list with medpy
voxel metrics, no post-processing, final iteration; the paper's learning-rate schedule (x0.1 every 2500
iterations, so lr 0.01 throughout a 2000-iteration run), constant λ.
Every training setting of ``napari-dmd train`` is an option, its default the protocol's (``datasets.LA_HALF``).

    python benchmarks/la_half.py --iterations 2000 --seeds 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from datasets import LA_HALF, add_training_options, settings_of
from protocol import add_prediction_options, run, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=LA_HALF.root)
    ap.add_argument("--labeled", type=int, default=LA_HALF.labeled)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["dmd", "supervised"], choices=["dmd", "supervised"])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/la_half.json"))
    add_training_options(ap, LA_HALF.defaults, replaced=("seed",))
    add_prediction_options(ap)
    args = ap.parse_args()
    split = LA_HALF.split(args.data, args.labeled)
    results = run(LA_HALF, split, settings_of(args), args.modes, args.seeds, args.runs, args.out,
                  args.combine, args.mirror)
    print(table(results))
    print(table(results, largest_component=True))


if __name__ == "__main__":
    main()
