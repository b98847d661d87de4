"""What Start will do, said before Start: the device and precision 'auto' resolve to, and how long it takes.

The precision is the verdict ``napari_dmd.precision`` has cached for this machine and run shape, if
any (the self-check runs at Start otherwise). The time is measured, never assumed: each finished
run records its seconds per training iteration (predictions left out) and per predicted megavoxel
in ``speed.json`` beside the precision cache, under the machine, network and run shape; a later
plan of the same shape reads it back. No Qt here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..data import choose_patch_size
from ..errors import DataError, DMDError
from ..heads import out_channels
from ..io import write_text
from ..precision import Precision, cache_path, known_precision, machine_name, run_key
from ..runtime import memory_format, resolve_device
from ..session import Session
from .pairing import LayerInfo, image_problem

SPEED_FILE = "speed.json"


def duration(seconds: float) -> str:
    """'m:ss' or 'h:mm:ss'."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass(frozen=True)
class Speed:
    """A finished run's measured speed: seconds to set up, per training iteration (predictions left
    out) and per predicted megavoxel, and the precision the iterations ran in."""

    setup_s: float
    iteration_s: float
    predict_mvoxel_s: float | None = None
    precision: str = ""


@dataclass(frozen=True)
class Plan:
    """A run as it will be set up: device, network and the input of one training step."""

    device: torch.device
    ndim: int
    num_classes: int
    patch: tuple[int, ...]
    batch: int
    precision: str  # as asked for: auto, fp32, bf16, fp16

    @classmethod
    def of_run(cls, config: TrainConfig, device: str, patch: tuple[int, ...]) -> Plan:
        """The plan of a run that has started, with its device and patch as resolved."""
        return cls(torch.device(device), len(patch), config.num_classes, tuple(patch),
                   config.labeled_batch + config.unlabeled_batch, config.precision)

    def speed_key(self) -> str:
        """Where this plan's measured speed is kept: machine, network, run shape, precision asked for."""
        shape = (self.batch, 1, *self.patch)
        parts = run_key(self.device, self.ndim, out_channels(self.num_classes), shape, memory_format(self.ndim))
        return "|".join([*parts, self.precision])


def parse_patch(text: str, ndim: int) -> tuple[int, ...] | None:
    """'auto' (or empty) -> None; '32, 48, 32' or '32x48x32' -> a tuple of ``ndim`` sizes."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    try:
        sizes = tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(",") if v.strip())
    except ValueError:
        raise DataError(f"patch size {text!r}: write 'auto' or {ndim} whole numbers such as "
                        f"{', '.join(['32'] * ndim)}") from None
    if len(sizes) != ndim or min(sizes) < 1:
        raise DataError(f"patch size {text!r}: {ndim} positive sizes are needed for {ndim}D images")
    return sizes


def used_images(session: Session) -> tuple[dict[str, tuple[int, ...]], int]:
    """The shapes of the ticked usable images of the labeled images' dimension, and the number of
    classes their labels show (at least 2)."""
    pairs = session.pairs()
    shapes = {n: layer.shape for n, layer in session.images.items() if session.choices[n].include
              and image_problem(LayerInfo(n, layer.shape, layer.rgb)) is None}
    tops = {n: session.stats[lab].top for n, lab in pairs.items()
            if lab and n in shapes and session.stats[lab].shape == shapes[n]}
    ndim = len(shapes[next(iter(tops))]) if tops else len(next(iter(shapes.values()), ()))
    return {n: shape for n, shape in shapes.items() if len(shape) == ndim}, max([1, *tops.values()]) + 1


def make_plan(session: Session, device: str, precision: str, patch: str, batch: int) -> Plan | None:
    """The plan of a Start with these settings; ``None`` without a usable image, ``DataError`` for
    an unknown device or a bad patch size."""
    shapes, classes = used_images(session)
    if not shapes:
        return None
    ndim = len(next(iter(shapes.values())))
    size = parse_patch(patch, ndim) or choose_patch_size(list(shapes.values()))
    return Plan(resolve_device(device), ndim, classes, tuple(size), batch, precision)


def display_name(device: torch.device) -> str:
    """The machine's name for people (the CPU flags left out)."""
    return machine_name(device).split(" [")[0]


def _read(name: str) -> dict:
    try:
        table = json.loads((cache_path().parent / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def expected_precision(plan: Plan) -> Precision | None:
    """The precision the run will compute in when it is known before Start (``precision.known_precision``);
    ``None`` when the self-check decides at Start."""
    return known_precision(plan.precision, plan.device, plan.ndim, out_channels(plan.num_classes),
                           (plan.batch, 1, *plan.patch), memory_format(plan.ndim))


def describe_precision(plan: Plan) -> str:
    """'precision bf16: self-check passed (…) (this machine's cached verdict)', or what Start will check."""
    known = expected_precision(plan)
    if known is not None:
        return f"precision {known.describe()}" + (" (this machine's cached verdict)" if known.cache_key else "")
    asked = "bf16 or fp16" if plan.precision == "auto" else plan.precision
    faster = " and faster" if plan.precision == "auto" else ""
    return (f"precision {plan.precision}: {asked} if this machine computes it correctly{faster}, "
            "else fp32 (checked at Start)")


def measured_speed(plan: Plan) -> Speed | None:
    """The speed recorded by the last finished run of this plan on this machine, if any."""
    entry = _read(SPEED_FILE).get(plan.speed_key())
    try:
        return Speed(**entry) if isinstance(entry, dict) else None
    except TypeError:  # an entry of another version
        return None


def record_speed(plan: Plan, speed: Speed) -> None:
    """Keep a finished run's speed for the next plan of the same shape (a read-only home is no error)."""
    table = _read(SPEED_FILE)
    table[plan.speed_key()] = vars(speed)
    try:
        write_text(cache_path().parent / SPEED_FILE, json.dumps(table, indent=1))
    except DMDError:
        pass


def estimate(speed: Speed | None, iterations: int, first_refresh: int, minutes: float,
             megavoxels: float) -> tuple[str, str]:
    """How long ``iterations`` take and when the first results (at iteration ``first_refresh``) show, and
    the total in a few words (' · ≈ 2:00'; '' when nothing was measured)."""
    if speed is None:
        return "Time: unknown until the first iterations (no run of these settings on this machine yet).", ""
    predict = (speed.predict_mvoxel_s or 0.0) * megavoxels
    total = speed.setup_s + iterations * speed.iteration_s
    text = f"{iterations} iterations ≈ {duration(total)}"
    if minutes and total > 60 * minutes:
        total = 60 * minutes
        text += f" (the {minutes:g}-minute limit ends it near iteration {int(60 * minutes / speed.iteration_s)})"
    first = min(first_refresh, iterations)
    return (f"{text}; first results ≈ {duration(speed.setup_s + first * speed.iteration_s + predict)} after Start "
            f"(iteration {first}). Measured here: {speed.iteration_s:.2f} s/iteration in {speed.precision}.",
            f" · ≈ {duration(total)}")


def describe_plan(plan: Plan | None, session: Session, iterations: int, first_refresh: int,
                  minutes: float) -> tuple[str, str]:
    """Where and in which precision Start runs and how long it takes; and that total in a few words."""
    if plan is None:
        return "Open or tick an image to see where and how fast training runs.", ""
    shapes, _ = used_images(session)
    megavoxels = sum(math.prod(shape) for shape in shapes.values()) / 1e6
    where = f"{plan.device.type.upper()} ({display_name(plan.device)})"
    time, total = estimate(measured_speed(plan), iterations, first_refresh, minutes, megavoxels)
    return f"Start runs on {where} · {describe_precision(plan)}.\n{time}", total
