"""Prediction at clinical size: seconds, stitching overhead and peak memory of ``predict`` on one CT-like volume.

A seeded int16 volume (air, a body of soft tissue, a few bright ellipsoids, noise; generated here, nothing
read or written but ``--out``) is predicted with an untrained pair of the default networks. Reported as JSON:
  predict_s            ``predict`` on the whole volume
  forward_s            the same windows' forward passes alone (both networks, same batch, same precision)
  stitching_overhead   predict_s / forward_s (goal <= 1.3)
  *_cpu_s              the same in this process's CPU seconds (all threads): on a CPU shared with other
                       work, steadier than the wall-clock seconds
  peak_rss_delta_bytes the process's peak resident memory during ``predict`` above what it held before
                       (VmHWM reset through /proc/self/clear_refs, else a sampling thread)
  rss_ratio            peak_rss_delta_bytes / the volume's float32 size (goal <= 3)
  forward_rss_delta_bytes  the same for the forward passes alone: the networks' activations, which
                       predict needs too (on a GPU they are device memory, ``cuda_peak_bytes``)

    python benchmarks/predict_scale.py --shape 200 512 512 --precision auto --out predict_scale.json
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_dmd.checkpoint import ModelPair
from napari_dmd.config import PRECISIONS, PREDICT_BATCH, TrainConfig
from napari_dmd.heads import out_channels
from napari_dmd.inference import default_stride, predict, window_starts
from napari_dmd.precision import Precision, choose_precision
from napari_dmd.runtime import memory_format, resolve_device
from napari_dmd.spacing import choose_patch

from results_file import save_report


def ct_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """int16 in Hounsfield-like units: air -1000, an elliptic body of 40, six ellipsoids of 200..1200, noise 20,
    made slice by slice (no float copy of the whole volume)."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    yy, xx = np.ogrid[:height, :width]
    body = ((yy - height / 2) / (0.42 * height)) ** 2 + ((xx - width / 2) / (0.45 * width)) ** 2 <= 1
    blobs = [(rng.uniform(0.2, 0.8, 3) * shape, rng.uniform(0.05, 0.15, 3) * shape, rng.uniform(200, 1200))
             for _ in range(6)]
    out = np.empty(shape, np.int16)
    for k in range(depth):
        plane = np.where(body, 40.0, -1000.0)
        for centre, radii, value in blobs:
            dz = (k - centre[0]) / radii[0]
            if abs(dz) < 1:
                plane[((yy - centre[1]) / radii[1]) ** 2 + ((xx - centre[2]) / radii[2]) ** 2 <= 1 - dz * dz] = value
        out[k] = np.clip(plane + rng.normal(0, 20, plane.shape), -1024, 3071)
    return out


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_delta(run: Callable[[], None]) -> tuple[int, str]:
    """Bytes the process's resident memory rose to above its level before ``run``, and how it was measured."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # memory freed before, but kept by malloc, is not counted as held
    except OSError:
        pass
    before = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        run()
        return 1024 * (_status_kb("VmHWM") - before), "VmHWM"
    except OSError:
        pass
    peak, done = [before], threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _status_kb("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return 1024 * (max(peak[0], _status_kb("VmRSS")) - before), "sampled VmRSS"


def timed(run: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``run`` (the device synchronised at the end)."""
    t0, c0 = time.perf_counter(), time.process_time()
    run()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def forward_passes(model: ModelPair, windows: int, patch: tuple[int, ...], batch_size: int,
                   precision: Precision) -> None:
    """Both networks' forward passes over ``windows`` windows in batches of ``batch_size``."""
    fmt = memory_format(model.ndim)
    x = torch.randn((batch_size, 1, *patch), generator=torch.Generator().manual_seed(0))
    x = x.to(model.device).contiguous(memory_format=fmt)
    with torch.inference_mode(), precision.autocast(model.device):
        for start in range(0, windows, batch_size):
            for net in model.nets:
                net(x[:min(batch_size, windows - start)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[200, 512, 512], metavar=("Z", "Y", "X"))
    ap.add_argument("--patch", type=int, nargs=3, default=None, help="default: napari-dmd's choice for the shape")
    ap.add_argument("--precision", choices=PRECISIONS, default="auto")
    ap.add_argument("--batch-size", type=int, default=PREDICT_BATCH)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--predict-only", action="store_true", help="leave out the forward passes alone (half the time)")
    args = ap.parse_args()

    shape = tuple(args.shape)
    patch = tuple(args.patch) if args.patch else choose_patch([shape])
    device = resolve_device(args.device)
    image = ct_volume(shape, args.seed)
    model = ModelPair.create(TrainConfig(num_classes=2, patch_size=patch, precision=args.precision, seed=args.seed),
                             3, device)
    fmt = memory_format(3)
    precision = choose_precision(args.precision, device, 3, out_channels(2), (args.batch_size, 1, *patch), fmt)
    for net in model.nets:
        precision.apply(net)
        net.eval()
    stride = default_stride(patch)
    windows = math.prod(len(window_starts(s, p, t)) for s, p, t in zip(shape, patch, stride))
    forward_passes(model, args.batch_size, patch, args.batch_size, precision)  # warm-up: kernels, allocator

    seconds: list[tuple[float, float]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss, method = peak_rss_delta(
        lambda: seconds.append(timed(lambda: predict(model, image, patch, batch_size=args.batch_size), device)))
    report = {"shape": list(shape), "patch": list(patch), "stride": list(stride), "batch_size": args.batch_size,
              "windows": windows, "device": str(device), "precision": precision.describe()}
    if device.type == "cuda":
        report["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(device)
    (predict_s, predict_cpu_s), = seconds
    float32_bytes = 4 * image.size
    report.update(predict_s=round(predict_s, 2), predict_cpu_s=round(predict_cpu_s, 2), peak_rss_delta_bytes=rss,
                  rss_method=method, float32_bytes=float32_bytes, rss_ratio=round(rss / float32_bytes, 3))
    if not args.predict_only:
        forward: list[tuple[float, float]] = []
        forward_rss, _ = peak_rss_delta(lambda: forward.append(
            timed(lambda: forward_passes(model, windows, patch, args.batch_size, precision), device)))
        (forward_s, forward_cpu_s), = forward
        report.update(forward_s=round(forward_s, 2), stitching_overhead=round(predict_s / forward_s, 3),
                      forward_cpu_s=round(forward_cpu_s, 2), forward_rss_delta_bytes=forward_rss,
                      stitching_overhead_cpu=round(predict_cpu_s / forward_cpu_s, 3))
    text = json.dumps(report)
    print(text)
    if args.out:
        save_report(args.out, report)


if __name__ == "__main__":
    main()
