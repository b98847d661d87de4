"""One process against two on la_half: the same global batch must give the same loss curve.

Trains with the command line, as a user would: ``python -m napari_dmd train`` with a batch of 2 labeled
+ 2 unlabeled patches, and ``torchrun --nproc_per_node 2 -m napari_dmd train`` with the same global batch
(1 + 1 per process), same seed, fp32 (to compare like with like), patch 32x64x64, the first 8 ids of
train.list labeled and the other 72 unlabeled. The patches differ (each process draws its own), so the
curves agree within the noise of the patches, not step by step. Both runs go at once, one thread per
process, so a benchmark cut short (Ctrl-C: both write a checkpoint) leaves two curves of about equal
length. Writes both curves and the mean loss per block of iterations; with ``--report`` it only
summarises the logs already there.

    python benchmarks/distributed.py --iterations 200
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from datasets import LA_HALF
from results_file import save_report

RUNS = {"1 process x (2+2)": [], "2 processes x (1+1)": ["-m", "torch.distributed.run", "--standalone",
                                                          "--nproc_per_node", "2"]}


def folders(data: Path, work: Path, labeled: int) -> tuple[Path, Path]:
    """Links to the training images (test.list left out) and to the labels of the first ``labeled`` ids."""
    split = LA_HALF.split(data, labeled)
    images, labels = work / "images", work / "labels"
    for folder, chosen in ((images, [p for p, _ in split.labeled] + split.unlabeled),
                           (labels, [q for _, q in split.labeled])):
        folder.mkdir(parents=True, exist_ok=True)
        for path in chosen:
            link = folder / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
    return images, labels


def curve(run: Path) -> dict[str, list[float]]:
    """Columns of a run's log.csv (empty lists before its first step)."""
    path = run / "log.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    return {k: [float(r[k]) for r in rows] for k in ("iteration", "loss", "sup_loss", "distill_loss", "seconds")}


def blocks(curves: dict[str, dict], size: int) -> list[dict]:
    """Mean loss of each run per block of ``size`` iterations, with the standard error of the difference."""
    out = []
    n = min(len(c["loss"]) for c in curves.values())
    for start in range(0, n - n % size, size):
        row: dict = {"iterations": f"{start + 1}-{start + size}"}
        parts = [np.array(c["loss"][start:start + size]) for c in curves.values()]
        for name, part in zip(curves, parts):
            row[name] = float(part.mean())
        row["difference"] = float(parts[1].mean() - parts[0].mean())
        row["se_difference"] = float(np.sqrt(sum(p.var(ddof=1) / len(p) for p in parts)))
        out.append(row)
    return out


def table(rows: list[dict], names: list[str]) -> str:
    """Markdown table of ``blocks``."""
    lines = [f"| iterations | {' | '.join(names)} | difference (± s.e.) |", "|---" * (len(names) + 2) + "|"]
    for r in rows:
        lines.append(f"| {r['iterations']} | {' | '.join(f'{r[n]:.3f}' for n in names)} | "
                     f"{r['difference']:+.3f} ± {r['se_difference']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=LA_HALF.root)
    ap.add_argument("--labeled", type=int, default=LA_HALF.labeled)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--block", type=int, default=20, help="iterations per row of the table")
    ap.add_argument("--work", type=Path, default=Path("benchmarks/runs/distributed"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed.json"))
    ap.add_argument("--report", action="store_true", help="only summarise the logs in --work")
    args = ap.parse_args()
    images, labels = folders(args.data, args.work, args.labeled)
    dirs = {name: args.work / f"run{k}" for k, name in enumerate(RUNS)}
    procs = []
    for name, launcher in RUNS.items():
        if args.report:
            break
        if (dirs[name] / "model.pt").exists():
            raise SystemExit(f"{dirs[name]} holds a run: remove it to run again, or use --report")
        cmd = [sys.executable, *launcher, "-m", "napari_dmd", "train", "--images", str(images), "--labels",
               str(labels), "--out", str(dirs[name]), "--iterations", str(args.iterations), "--patch",
               *map(str, LA_HALF.patch), "--labeled-batch", "2", "--unlabeled-batch", "2", "--precision", "fp32",
               "--seed", str(args.seed), "--checkpoint-every", str(args.iterations),
               "--lambda-rampup", str(LA_HALF.settings["lambda_rampup"])]  # as measured
        print(f"{name}: {' '.join(cmd)}", flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:  # stop both (each writes its checkpoint), then summarise what they did
        for proc in procs:
            os.killpg(proc.pid, signal.SIGINT)
        for proc in procs:
            proc.wait()
    curves = {name: curve(d) for name, d in dirs.items()}
    rows = blocks(curves, args.block)
    result = {
        "protocol": {"data": "la_half", "labeled": args.labeled, "unlabeled": "the other ids of train.list",
                     "iterations": args.iterations, "patch": list(LA_HALF.patch),
                     "global_batch": "2 labeled + 2 unlabeled",
                     "precision": "fp32", "seed": args.seed, "machine": f"{platform.processor() or platform.machine()}"
                     f", {os.cpu_count()} CPUs"},
        "seconds": {name: (c["seconds"][-1] if c["seconds"] else None) for name, c in curves.items()},
        "iterations_done": {name: len(c["loss"]) for name, c in curves.items()},
        "blocks": rows,
        "curves": curves,
    }
    save_report(args.out, result)
    print(table(rows, list(RUNS)))
    print(f"seconds: {result['seconds']}; written to {args.out}")


if __name__ == "__main__":
    main()
