"""LA benchmark at half resolution: DMD vs the same V-Nets trained on the labeled scans alone.

Protocol (../shared/data/la_half/README): the first 8 ids of train.list labeled, the other 72
unlabeled, patch 32x64x64 (z, y, x), batch 2 labeled + 2 unlabeled, sliding window stride 2/9/9,
network A scored on the 20 ids of test.list, medpy voxel metrics, no post-processing, final
iteration. The supervised baseline is the same pair with lambda = 0 and no unlabeled batch.

    python benchmarks/la_half.py --iterations 2000 --seeds 0 --out benchmarks/results/la_half.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_dmd.checkpoint import load_model
from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.inference import predict
from napari_dmd.io import read_image
from napari_dmd.metrics import evaluate_case
from napari_dmd.training import CHECKPOINT_NAME, Trainer

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "la_half"
PATCH, STRIDE = (32, 64, 64), (2, 9, 9)


def load(ids: list[str], data: Path, labeled: bool) -> list[Volume]:
    """Volumes of ``ids`` (with their labels when ``labeled``)."""
    out = []
    for i in ids:
        image, geom = read_image(data / "imagesTr" / f"{i}.nii.gz")
        label = read_image(data / "labelsTr" / f"{i}.nii.gz")[0] if labeled else None
        out.append(Volume.create(image, label, name=i, spacing=geom.scale))
    return out


def train(mode: str, seed: int, args: argparse.Namespace, run_dir: Path) -> float:
    """Train one run unless its final checkpoint exists; returns training seconds (0 if reused)."""
    ckpt = run_dir / CHECKPOINT_NAME
    if ckpt.exists() and load_model(ckpt, "cpu").iteration == args.iterations:
        return 0.0
    ids = (args.data / "train.list").read_text().split()
    labeled = load(ids[:args.labeled], args.data, True)
    unlabeled = load(ids[args.labeled:], args.data, False) if mode == "dmd" else []
    cfg = TrainConfig(iterations=args.iterations, lr_step=args.lr_step, patch_size=PATCH, seed=seed,
                      lambda_distill=4.0 if mode == "dmd" else 0.0, temperature=args.temperature,
                      unlabeled_batch=2 if mode == "dmd" else 0, checkpoint_every=500)
    t0 = time.perf_counter()
    for p in Trainer(labeled, unlabeled, cfg, run_dir=run_dir).run():
        if p.iteration % 100 == 0:
            print(f"  {mode} seed {seed} it {p.iteration}/{p.total} sup {p.sup_loss:.3f} "
                  f"dis {p.distill_loss:.3f} {p.its_per_s:.2f} it/s eta {p.eta / 60:.0f} min", flush=True)
    return time.perf_counter() - t0


def evaluate(run_dir: Path, args: argparse.Namespace) -> dict:
    """Network A of the run scored on test.list."""
    model = load_model(run_dir / CHECKPOINT_NAME, "auto")
    rows, t0 = [], time.perf_counter()
    for i in (args.data / "test.list").read_text().split():
        image, _ = read_image(args.data / "imagesTr" / f"{i}.nii.gz")
        ref, _ = read_image(args.data / "labelsTr" / f"{i}.nii.gz")
        pred = predict(model, image, PATCH, STRIDE, batch_size=8)
        (row,) = evaluate_case(pred.labels, ref, 2)
        rows.append({"case": i, **row, "disagreement": pred.volume_score})
    seconds = (time.perf_counter() - t0) / len(rows)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("dice", "jaccard", "hd95", "asd", "disagreement")}
    return {"mean": mean, "cases": rows, "inference_s_per_volume": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--labeled", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--lr-step", type=int, default=1500)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--modes", nargs="+", default=["dmd", "supervised"], choices=["dmd", "supervised"])
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/la_half.json"))
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for seed in args.seeds:
        for mode in args.modes:
            run_dir = args.runs / f"la_half_{mode}_l{args.labeled}_it{args.iterations}_s{seed}"
            seconds = train(mode, seed, args, run_dir)
            res = evaluate(run_dir, args)
            res.update(mode=mode, seed=seed, iterations=args.iterations, lr_step=args.lr_step,
                       labeled=args.labeled, train_seconds=seconds)
            results[f"{mode}/seed{seed}"] = res
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
            m = res["mean"]
            print(f"{mode} seed {seed}: Dice {100 * m['dice']:.2f} Jaccard {100 * m['jaccard']:.2f} "
                  f"95HD {m['hd95']:.2f} ASD {m['asd']:.2f} ({seconds / 60:.0f} min training, "
                  f"{res['inference_s_per_volume']:.1f} s/volume inference)", flush=True)


if __name__ == "__main__":
    main()
