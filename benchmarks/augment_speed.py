"""What the low-label options cost the training step: its time with each option (and all together) against
the step with one batch-norm pass, in one process on the same data, the variants' steps interleaved in blocks so a
shared machine's load falls on all alike.

Variants: ``joint`` (one batch-norm pass over labeled and unlabeled patches, the baseline of the ratios; what
today's ``auto`` runs on these 4 labeled images), ``off`` (the labeled and unlabeled parts normalised apart,
``batch_norm`` split, what ``auto`` runs with one labeled image; the options below are on top of it), ``intensity``
(augment_intensity), ``spatial`` (augment_spatial), ``mixing`` (mix_probability 1), ``reviewed``
(labeled_sampling), ``all`` (every option together). Data: the first 4 labeled and 4 unlabeled la_half scans,
patch 32x64x64, batch 2 + 2 (the speed benchmark's). Reported: median seconds per step, its ratio to ``joint``
(the goal: at most 1.10), the milliseconds of sampling a batch alone, and for ``joint`` and ``off`` the seconds of
``Trainer.settle_statistics`` (what every checkpoint and every refresh of the dock adds), median of ``--rounds`` calls,
also in steps of that variant.

    python benchmarks/augment_speed.py --steps 5 --rounds 4
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_dmd.config import PRECISIONS, TrainConfig
from napari_dmd.precision import machine_name
from napari_dmd.training import Trainer

from results_file import save_report
from speed import PATCH, WARMUP, data

ON = {"augment_intensity": 0.3, "augment_spatial": 0.2, "mix_probability": 1.0, "labeled_sampling": "reviewed"}
SPLIT = {"batch_norm": "split"}
VARIANTS = {"joint": {"batch_norm": "joint"}, "off": SPLIT,
            "intensity": {**SPLIT, "augment_intensity": ON["augment_intensity"]},
            "spatial": {**SPLIT, "augment_spatial": ON["augment_spatial"]}, "mixing": {**SPLIT, "mix_probability": 1.0},
            "reviewed": {**SPLIT, "labeled_sampling": "reviewed"}, "all": {**SPLIT, **ON}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="steps of a variant per block")
    ap.add_argument("--rounds", type=int, default=4, help="blocks per variant (interleaved)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto")
    ap.add_argument("--threads", type=int, help="CPU threads of torch (default torch's)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/augment_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lab, unl = data()
    total = WARMUP + args.steps * args.rounds
    trainers = {name: Trainer(lab, unl, TrainConfig(iterations=total, patch_size=PATCH, device=args.device,
                                                    precision=args.precision, **opts))
                for name, opts in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for t in trainers.values():
        for i in range(WARMUP):
            t.step(i)
    for r in range(args.rounds):
        for name, t in trainers.items():
            for i in range(args.steps):
                t0 = time.perf_counter()
                t.step(WARMUP + r * args.steps + i)
                if t.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    batch_ms = {}  # the sampler's part alone (what the augmentations add), steadier than a step on a busy machine
    for name, t in trainers.items():
        t0 = time.perf_counter()
        for _ in range(20):
            t.sampler.batch(t.labeled_batch, t.unlabeled_batch)
        batch_ms[name] = (time.perf_counter() - t0) / 20 * 1000
    settle_s = {}
    for name in ("joint", "off"):
        calls = []
        for r in range(args.rounds):
            t0 = time.perf_counter()
            trainers[name].settle_statistics(total + r)
            if trainers[name].device.type == "cuda":
                torch.cuda.synchronize()
            calls.append(time.perf_counter() - t0)
        settle_s[name] = float(np.median(calls))
    base = float(np.median(times["joint"]))
    rows = [{"variant": name, "options": VARIANTS[name], "median_s_per_step": float(np.median(ts)),
             "ratio_to_joint": float(np.median(ts)) / base, "steps": len(ts), "batch_ms": batch_ms[name],
             **({"settle_s": settle_s[name], "settle_in_steps": settle_s[name] / float(np.median(ts))}
                if name in settle_s else {})}
            for name, ts in times.items()]
    device = trainers["off"].device
    result = {"patch": PATCH, "batch": "2 labeled + 2 unlabeled", "precision": trainers["off"].precision.describe(),
              "threads": torch.get_num_threads(), "machine": machine_name(device), "variants": rows}
    save_report(args.out, result)
    print(f"machine: {result['machine']}, precision {result['precision']}, {result['threads']} threads")
    print("| variant | s/step (median) | × joint | sampling a batch (ms) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['median_s_per_step']:.3f} | {r['ratio_to_joint']:.3f} | {r['batch_ms']:.1f} |")
    for r in rows:
        if "settle_s" in r:
            print(f"settling the statistics ({r['variant']}): {r['settle_s']:.2f} s = {r['settle_in_steps']:.1f} steps")


if __name__ == "__main__":
    main()
