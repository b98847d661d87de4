"""The GPU check: one command, one JSON, about 6 minutes on one GPU.

  loops     : it/s of a plain fp32 PyTorch loop and of napari-dmd's step (eager and ``torch.compile``d, fp32 and
              bf16) at la_half's patch 32x64x64 and at the paper's 80x112x112 (z, y, x), batch 2 labeled +
              2 unlabeled, with the compile time (the warm-up steps of a compiled variant less as many timed ones)
  profile   : ``torch.profiler`` of 5 napari-dmd steps: the device's busy share of the wall time, its top
              kernels (top operations by own time on a CPU), host gaps (wall time the device was idle)
  memory    : peak memory of the loops
  inference : seconds per la_half test volume (both networks, the protocol's stride)
  schedule  : in the time left, the paper's schedule on la_half (6000 iterations, 8 labeled + 72 unlabeled, patch
              32x64x64) and its test Dice by benchmarks/la_half.py's protocol (stopped early, with the iteration
              reached, when the time runs out)

The bf16 variants are skipped (and said so) on a device without native bf16, where napari-dmd trains in fp32.
``--device cpu --quick`` runs every part on the CPU at small sizes (the loops at patch 16x16x16, one step,
``torch.compile`` with its eager backend: the capture, not the code generation; 4 iterations on 2 + 2 scans,
patch 16x32x32, 1 test volume at half-patch stride) in under a minute, so the script is known to work before a
GPU is at hand (tests/test_gpu_check.py runs it).

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import time
from pathlib import Path

import numpy as np
import torch

from napari_dmd.compiling import CompiledNets
from napari_dmd.config import TrainConfig
from napari_dmd.inference import predict
from napari_dmd.io import read_image
from napari_dmd.losses import distillation_loss, supervised_loss
from napari_dmd.metrics import evaluate_case
from napari_dmd.precision import Precision, machine_name, native_bf16
from napari_dmd.runtime import resolve_device
from napari_dmd.training import Trainer

from datasets import LA_HALF
from protocol import load
from results_file import save_report

BUDGET_S = 360  # the whole check on one GPU
LOOPS_SHARE = 0.6  # of it, for the loops (compiling included): later variants are skipped (not with --quick)
FULL = {"patches": [(32, 64, 64), (80, 112, 112)], "steps": 20, "warmup": 3, "backend": "inductor",
        "labeled": 8, "unlabeled": 72, "iterations": 6000, "test": None, "stride": LA_HALF.stride,
        "schedule_patch": LA_HALF.patch}
QUICK = {"patches": [(16, 16, 16)], "steps": 1, "warmup": 1, "backend": "eager",
         "labeled": 2, "unlabeled": 2, "iterations": 4, "test": 1, "stride": None, "schedule_patch": (16, 32, 32)}
PROFILED_STEPS = 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trainer_for(lab, unl, patch, device: str, precision: str = "fp32", iterations: int = 1000) -> Trainer:
    return Trainer(lab, unl, TrainConfig(iterations=iterations, patch_size=patch, device=device, precision=precision),
                   ahead=True)


def plain_step(trainer: Trainer):
    """A textbook fp32 loop on the trainer's networks and batches (default memory format, unfused SGD)."""
    cfg, nets = trainer.config, [n.to(memory_format=torch.contiguous_format) for n in trainer.model.nets]
    opt = torch.optim.SGD([p for n in nets for p in n.parameters()], lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)

    def step(i: int) -> None:
        b = trainer._draw(i)
        x, y, m = (torch.from_numpy(b[k]).to(trainer.device) for k in ("image", "label", "mask"))
        za, zb = nets[0](x), nets[1](x)
        loss = (supervised_loss(za[:len(y)], y, m) + supervised_loss(zb[:len(y)], y, m)
                + cfg.lambda_distill * distillation_loss(za, zb, cfg.temperature))
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())

    return step


def dmd_step(trainer: Trainer, dtype: torch.dtype, backend: str | None):
    """napari-dmd's step in ``dtype`` (forced: no self-check), its networks compiled with ``backend`` (None: eager)."""
    trainer.dmd.precision = Precision(dtype, (), "gpu_check")
    if backend is not None:  # as a run with ``--compile on`` (CUDA graphs on CUDA), with the check's backend
        trainer.dmd.running = CompiledNets(trainer.dmd.running.eager, trainer.device, True, backend=backend)
    return lambda i: trainer.step(i, more=True).loss


def timed(step, warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the ``warmup`` first steps, it/s of the ``steps`` after them)."""
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    sync(device)
    t1 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    sync(device)
    return t1 - t0, steps / (time.perf_counter() - t1)


def loops(lab, unl, setup: dict, device: torch.device, deadline: float) -> list[dict]:
    """The loops' rows; a variant not started by ``deadline`` (perf_counter) is skipped and says so."""
    rows = []
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for patch in setup["patches"]:
        variants = [("plain fp32", None, None)] + [(f"napari-dmd {name} {'compiled' if b else 'eager'}", d, b)
                                                    for b in (None, setup["backend"]) for name, d in dtypes.items()]
        for name, dtype, backend in variants:
            skip = "this device has no native bf16" if dtype is torch.bfloat16 and not native_bf16(device) else \
                "the check's time for the loops ran out" if time.perf_counter() > deadline and dtype is not None else ""
            if skip:  # emulated bf16: napari-dmd runs fp32 there
                rows.append({"patch": patch, "variant": name, "skipped": skip})
                print(json.dumps(rows[-1]), flush=True)
                continue
            trainer = trainer_for(lab, unl, patch, str(device))
            step = plain_step(trainer) if dtype is None else dmd_step(trainer, dtype, backend)
            try:
                first_s, rate = timed(step, setup["warmup"], setup["steps"], device)
                row = {"patch": patch, "variant": name, "its_per_s": rate}
                if backend is not None:
                    row.update(compile_s=first_s - setup["warmup"] / rate, networks=trainer.dmd.running.describe())
            except Exception as exc:  # a capture that fails: measured and reported, the other variants go on
                row = {"patch": patch, "variant": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            finally:
                trainer.batches.close()
            rows.append(row)
            print(json.dumps(row), flush=True)
        plain = next(r["its_per_s"] for r in rows if r["patch"] == patch and r["variant"] == "plain fp32")
        for r in rows:
            if r["patch"] == patch and "its_per_s" in r:
                r["vs_plain_fp32"] = r["its_per_s"] / plain
    return rows


def profile(lab, unl, patch, device: torch.device) -> dict:
    """Busy share, top kernels and host gaps of ``PROFILED_STEPS`` eager fp32 steps."""
    trainer = trainer_for(lab, unl, patch, str(device))
    step = dmd_step(trainer, torch.float32, None)
    step(0)
    step(1)
    sync(device)
    cuda = device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for i in range(2, 2 + PROFILED_STEPS):
            step(i)
        sync(device)
    wall_us = (time.perf_counter() - t0) * 1e6
    trainer.batches.close()
    events = prof.key_averages()
    own = "self_device_time_total" if cuda else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, own), reverse=True)[:10]
    out = {"steps": PROFILED_STEPS, "patch": patch, "wall_s": wall_us / 1e6,
           "top": [{"name": e.key, "calls": e.count, "self_ms": getattr(e, own) / 1e3} for e in top]}
    if cuda:
        busy = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
        out.update(device_busy_share=busy / wall_us, host_gaps_s=(wall_us - busy) / 1e6)
    else:
        out.update(device_busy_share=None, host_gaps_s=None, note="CPU: no separate device; top by own CPU time")
    return out


def inference(lab, setup: dict, device: torch.device) -> dict:
    model = trainer_for(lab[:1], [], LA_HALF.patch, str(device), iterations=1).model
    cases = LA_HALF.test_pairs()[:setup["test"] or 3]
    stride = setup["stride"] or tuple(p // 2 for p in LA_HALF.patch)
    t0 = time.perf_counter()
    for image_path, _ in cases:
        predict(model, read_image(image_path)[0], LA_HALF.patch, stride, batch_size=8)
    sync(device)
    return {"s_per_volume": (time.perf_counter() - t0) / len(cases), "volumes": len(cases), "stride": stride}


def schedule(setup: dict, device: torch.device, deadline: float, run_dir: Path) -> dict:
    """The paper's schedule on la_half until ``deadline`` (perf_counter), then the test Dice of what it reached."""
    split = LA_HALF.split(labeled=setup["labeled"])
    lab, unl = load(split.labeled), load([(p, None) for p in split.unlabeled[:setup["unlabeled"]]])
    cfg = TrainConfig(**{**LA_HALF.defaults, "iterations": setup["iterations"], "device": str(device),
                         "checkpoint_every": setup["iterations"], "patch_size": setup["schedule_patch"]})
    trainer = Trainer(lab, unl, cfg, run_dir=run_dir)
    t0, reached = time.perf_counter(), 0
    for p in trainer.run():
        reached = p.iteration
        if time.perf_counter() > deadline:
            trainer.stop()
    train_s = time.perf_counter() - t0
    cases = split.test[:setup["test"]] if setup["test"] else split.test
    stride = setup["stride"] or tuple(q // 2 for q in cfg.patch_size)
    dice = []
    for image_path, label_path in cases:
        pred = predict(trainer.model, read_image(image_path)[0], cfg.patch_size, stride, batch_size=8)
        dice.append(evaluate_case(pred.labels, read_image(label_path)[0], 2)[0]["dice"])
    return {"iterations": setup["iterations"], "reached": reached, "train_s": train_s, "labeled": len(lab),
            "unlabeled": len(unl), "test_volumes": len(cases), "stride": stride, "dice": 100 * float(np.mean(dice))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="every part at small sizes (a CPU: under 3 minutes)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs/gpu_check"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = ap.parse_args()
    start = time.perf_counter()
    device = resolve_device(args.device)
    setup = QUICK if args.quick else FULL
    split = LA_HALF.split()
    lab, unl = load(split.labeled[:2]), load([(p, None) for p in split.unlabeled[:2]])
    result = {"machine": machine_name(device), "device": str(device), "torch": torch.__version__, "quick": args.quick,
              "batch": "2 labeled + 2 unlabeled",
              "loops": loops(lab, unl, setup, device, math.inf if args.quick else start + LOOPS_SHARE * args.budget)}
    result["peak_memory_mb"] = peak_memory_mb(device)
    result["profile"] = profile(lab, unl, setup["patches"][0], device)
    result["inference"] = inference(lab, setup, device)
    result["schedule"] = schedule(setup, device, start + args.budget - 30, args.runs)
    result["seconds"] = time.perf_counter() - start
    save_report(args.out, result)
    print(json.dumps({k: result[k] for k in ("peak_memory_mb", "inference", "schedule", "seconds")}))


if __name__ == "__main__":
    main()
