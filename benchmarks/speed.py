"""Training speed and peak memory: the napari-dmd loop vs a plain fp32 PyTorch loop, in one run.

Each variant runs in its own process (so peak memory is its own) on the same batches: the same
seeded patch sampler over the same la_half scans, the same two V-Nets, the same DMD loss.
  plain-fp32      : a textbook loop, fp32, default memory format
  napari-dmd fp32 : the Trainer with precision fp32 (channels-last)
  napari-dmd auto : the Trainer as shipped (the precision its self-check chose on this machine)
  napari-dmd bf16, bottleneck fp32 : bf16 autocast with the three bottleneck convolutions in fp32,
                    the path the self-check picks on CPUs whose bf16 bottleneck is wrong (forced here,
                    so it is measured on any machine)
Also inference seconds per la_half volume (patch 32x64x64, stride 2/9/9, both networks).

The step against today's (``--compare`` alone: only this): in one process, on the same data, fp32, blocks of
``--block`` steps of each interleaved for ``--rounds`` rounds (a busy machine slows all alike), median seconds of
the wall clock and of the process's CPU time (with ``--threads 1`` the latter is the step's own work, whatever
else the machine runs):
  today's step   : the step of commit 118c1a4 (benchmarks/step_ops.py ``todays_step``: 5 host reads a step)
  new step       : ``Trainer.step`` with its batch drawn in line, its values read once after it (as ``run`` does)
  batches ahead  : the same with the next batch drawn in a background thread meanwhile
  compiled step  : the new step with its networks ``torch.compile``d (``--compile on``; inductor's default mode on a
                   CPU), its compile time the seconds of its warm-up steps less as many median steps

    python benchmarks/speed.py --iterations 30
    python benchmarks/speed.py --compare --block 2 --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from step_ops import todays_step

from napari_dmd.config import TrainConfig
from napari_dmd.data import PatchSampler
from napari_dmd.inference import predict
from napari_dmd.io import read_image
from napari_dmd.losses import distillation_loss, supervised_loss
from napari_dmd.precision import Precision, machine_name
from napari_dmd.runtime import resolve_device
from napari_dmd.training import Trainer

from datasets import LA_HALF
from protocol import load
from results_file import save_report

PATCH = LA_HALF.patch
WARMUP = 3
BOTTLENECK = ("enc.4.0", "enc.4.3", "enc.4.6")
VARIANTS = ("plain-fp32", "napari-dmd fp32", "napari-dmd auto", "napari-dmd bf16, bottleneck fp32")


def data(n_labeled: int = 4, n_unlabeled: int = 4):
    """The first ``n_labeled`` labeled and ``n_unlabeled`` unlabeled volumes of la_half's standard split."""
    split = LA_HALF.split()
    return load(split.labeled[:n_labeled]), load([(p, None) for p in split.unlabeled[:n_unlabeled]])


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step, iterations: int, device: torch.device) -> float:
    for i in range(WARMUP):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(WARMUP, WARMUP + iterations):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iterations / (time.perf_counter() - t0)


def variant(name: str, iterations: int, device: str) -> dict:
    lab, unl = data()
    precision = {"napari-dmd auto": "auto", "napari-dmd bf16, bottleneck fp32": "bf16"}.get(name, "fp32")
    cfg = TrainConfig(iterations=iterations + WARMUP, patch_size=PATCH, device=device, precision=precision)
    trainer = Trainer(lab, unl, cfg)
    if name == "napari-dmd bf16, bottleneck fp32":
        trainer.dmd.precision = Precision(torch.bfloat16, BOTTLENECK, "forced by the benchmark")
        for net in trainer.model.nets:
            trainer.precision.apply(net)
    if name == "plain-fp32":
        nets = [net.to(memory_format=torch.contiguous_format) for net in trainer.model.nets]
        opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=cfg.lr, momentum=cfg.momentum,
                              weight_decay=cfg.weight_decay)
        sampler = PatchSampler(lab, unl, PATCH, np.random.default_rng(cfg.seed), cfg.foreground_fraction)

        def step(_: int) -> None:
            b = sampler.batch(cfg.labeled_batch, cfg.unlabeled_batch)
            x = torch.from_numpy(b["image"]).to(trainer.device)
            y, m = torch.from_numpy(b["label"]).to(trainer.device), torch.from_numpy(b["mask"]).to(trainer.device)
            za, zb, n = nets[0](x), nets[1](x), cfg.labeled_batch
            loss = (supervised_loss(za[:n], y, m) + supervised_loss(zb[:n], y, m)
                    + cfg.lambda_distill * distillation_loss(za, zb, cfg.temperature))
            opt.zero_grad()
            loss.backward()
            opt.step()
    else:
        def step(i: int) -> None:
            _ = trainer.step(i).loss  # read as the run reads it
    rate = timed(step, iterations, trainer.device)
    return {"variant": name, "its_per_s": rate, "peak_memory_mb": peak_memory_mb(trainer.device),
            "device": str(trainer.device), "skipped": trainer.skipped,
            "precision": trainer.precision.describe() if name != "plain-fp32" else "fp32"}


def compare(device: str, block: int, rounds: int) -> dict:
    """Median seconds per step of today's step, the new one, and the new one with batches made ahead (see the
    module's docstring), and the ratios of the first to the others (above 1: the new one is faster)."""
    lab, unl = data()
    total = WARMUP + block * rounds
    names = ("today's step", "new step", "batches ahead", "compiled step")
    trainers = {name: Trainer(lab, unl, TrainConfig(iterations=total, patch_size=PATCH, device=device,
                                                    precision="fp32", compile="on" if "compiled" in name else "off"),
                              ahead=name == "batches ahead") for name in names}
    steps = {"today's step": todays_step(trainers["today's step"]),
             **{name: (lambda t: lambda i: t.step(i, more=True).loss)(trainers[name]) for name in names[1:]}}
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    warmup_s = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        for i in range(WARMUP):
            step(i)
        warmup_s[name] = time.perf_counter() - t0
    for r in range(rounds):
        for name, step in steps.items():
            for i in range(block):
                t0, c0 = time.perf_counter(), time.process_time()
                step(WARMUP + r * block + i)
                if trainers[name].device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    for t in trainers.values():
        t.batches.close()
    median = {name: float(np.median(v)) for name, v in times.items()}
    median_cpu = {name: float(np.median(v)) for name, v in cpu.items()}
    return {"steps_each": block * rounds, "median_s": median, "median_cpu_s": median_cpu,
            "cpu_today_over_new": median_cpu["today's step"] / median_cpu["new step"],
            "cpu_eager_over_compiled": median_cpu["new step"] / median_cpu["compiled step"],
            "load_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "today_over_new": median["today's step"] / median["new step"],
            "today_over_ahead": median["today's step"] / median["batches ahead"],
            "inline_over_ahead": median["new step"] / median["batches ahead"],
            "eager_over_compiled": median["new step"] / median["compiled step"],
            "compile_s": warmup_s["compiled step"] - WARMUP * median["compiled step"],
            "networks": trainers["compiled step"].dmd.running.describe()}


def inference_seconds(device: str, volumes: int = 3) -> float:
    lab, unl = data(1, 0)
    model = Trainer(lab, [], TrainConfig(iterations=1, patch_size=PATCH, device=device)).model
    images = [image for image, _ in LA_HALF.test_pairs()[:volumes]]
    t0 = time.perf_counter()
    for path in images:
        predict(model, read_image(path)[0], PATCH, LA_HALF.stride, batch_size=8)
    return (time.perf_counter() - t0) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--compare", action="store_true", help="only the step against today's (see above)")
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="PyTorch's CPU threads (0: its default)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(variant(args.variant, args.iterations, args.device)))
        return
    machine = {"torch": torch.__version__, "threads": torch.get_num_threads(),
               "machine": machine_name(resolve_device(args.device))}
    against_today = compare(args.device, args.block, args.rounds)
    print(json.dumps(against_today), flush=True)
    if args.compare:
        save_report(args.out.with_name("step_vs_today.json"), {**against_today, "patch": PATCH, **machine,
                                                                "batch": "2 labeled + 2 unlabeled"})
        return
    rows = []
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--variant", name, "--iterations", str(args.iterations),
                              "--device", args.device], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    base = rows[0]["its_per_s"]
    for r in rows:
        r["speedup_vs_plain_fp32"] = r["its_per_s"] / base
    result = {"iterations": args.iterations, "batch": "2 labeled + 2 unlabeled", "patch": PATCH, "variants": rows,
              "inference_s_per_volume": inference_seconds(args.device), "step_vs_today": against_today, **machine}
    save_report(args.out, result)
    print(f"machine: {result['machine']}")
    print("| loop | precision | it/s | × plain fp32 | peak memory (MB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['precision']} | {r['its_per_s']:.3f} | {r['speedup_vs_plain_fp32']:.2f} | "
              f"{r['peak_memory_mb']:.0f} |")
    print(f"inference: {result['inference_s_per_volume']:.1f} s per la_half volume")


if __name__ == "__main__":
    main()
