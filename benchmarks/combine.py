"""Labels from network A or from the pair's mean, mirrored or not: finished runs scored again on their test split.

Each run folder (``la_half.py`` or ``hippocampus.py`` writes them under ``benchmarks/runs``) is scored on the
test split of ``--data`` (``protocol.evaluate``: the protocol's stride, the run's patch) once per variant:
``a`` (network A, the paper's), ``mean`` (the mean of both networks' probabilities, ``config.COMBINE``) and
``mean+mirror`` (that, each window also averaged over its in-plane flips). Per run and variant, the mean
metrics per class as predicted and with the largest component, merged into the JSON file ``--out``.

    python benchmarks/combine.py --data la_half --labeled 4 --out benchmarks/results/cpu/combine_la_half.json \
        --runs benchmarks/runs/la_half_dmd_l4_it2000_s0 benchmarks/runs/la_half_supervised_l4_it2000_s0
"""
from __future__ import annotations

import argparse
from pathlib import Path

from napari_dmd.checkpoint import load_model
from napari_dmd.training import CHECKPOINT_NAME

from datasets import DATASETS
from protocol import METRICS, evaluate
from results_file import save_result

VARIANTS = {"a": ("a", False), "mean": ("mean", False), "mean+mirror": ("mean", True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(DATASETS), required=True)
    ap.add_argument("--labeled", type=int, help="labeled cases of the runs' split (default: the protocol's)")
    ap.add_argument("--runs", type=Path, nargs="+", required=True, help="finished run folders")
    ap.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=["a", "mean"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    data = DATASETS[args.data]
    split = data.split(data.root, args.labeled or data.labeled)
    for run_dir in args.runs:
        model = load_model(run_dir / CHECKPOINT_NAME, "cpu")
        for variant in args.variants:
            combine, mirror = VARIANTS[variant]
            res = evaluate(run_dir, split, tuple(model.config.patch_size), data.stride, combine=combine, mirror=mirror)
            entry = {"run": run_dir.name, "variant": variant, "iterations": model.iteration,
                     "per_class": res["per_class"], "largest_component": res["largest_component"]["per_class"],
                     "inference_s_per_volume": res["inference_s_per_volume"]}
            save_result(args.out, f"{run_dir.name}@{variant}", entry)
            for m in res["per_class"]:
                print(f"{run_dir.name} {variant} class {m['class']}: " + " ".join(
                    f"{k} {100 * m[k] if k in ('dice', 'jaccard') else m[k]:.2f}" for k in METRICS), flush=True)


if __name__ == "__main__":
    main()
