"""The run plan: device, network and the input of one training step, built once per run.

A ``Plan`` is the key of everything measured about a run on this machine: the precision verdict
(``napari_dmd.precision``), the measured speed (``speed_store``). Before Start it tells the dock what
Start will do (device, the precision 'auto' resolves to, how long it takes); the run builds its own
plan when it is set up and carries it in its ``Started`` message. No Qt here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .compiling import wants_compile
from .config import RunOptions, TrainConfig
from .errors import DataError
from .heads import out_channels
from .precision import Precision, choose_precision, known_precision, machine_name, run_key
from .runtime import memory_format, resolve_device
from .spacing import choose_patch, describe, is_isotropic, pooling
from .speed_store import Speed, measured_speed


@dataclass(frozen=True)
class Plan:
    """A run as it will be set up: device, network and the input of one step (``batch`` windows or patches)."""

    device: torch.device
    ndim: int
    num_classes: int
    patch: tuple[int, ...]
    batch: int
    precision: str  # as asked for: auto, fp32, bf16, fp16
    spacing: tuple[float, ...] | None = None  # the data's, which sets the pooling per axis
    channels: int = 1  # input channels of the networks
    compiled: bool = False  # the networks compiled for training (``compiling.wants_compile``)

    @classmethod
    def of_config(cls, config: TrainConfig, device: torch.device, patch: tuple[int, ...],
                  batch: int | None = None, training: bool = True) -> Plan:
        """The plan of a run of ``config`` on ``device`` with ``patch`` (a step of ``batch`` inputs, default the
        config's labeled + unlabeled patches); ``training=False``: of a prediction (never compiled)."""
        device = torch.device(device)
        batch = batch if batch is not None else config.labeled_batch + config.unlabeled_batch
        return cls(device, len(patch), config.num_classes, tuple(patch), batch, config.precision, config.spacing,
                   len(config.channels), training and wants_compile(config.compile, device))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one step's input: (batch, channels, *patch)."""
        return (self.batch, self.channels, *self.patch)

    def _key_args(self) -> tuple:
        return (self.device, self.ndim, out_channels(self.num_classes), self.input_shape, memory_format(self.ndim),
                self.spacing, self.compiled)

    def known_precision(self) -> Precision | None:
        """The precision the run computes in when known without a self-check (``precision.known_precision``)."""
        return known_precision(self.precision, *self._key_args())

    def choose_precision(self) -> Precision:
        """The precision the run computes in, self-checked on this machine when not known yet."""
        return choose_precision(self.precision, *self._key_args())

    def speed_key(self) -> str:
        """Where this plan's measured speed is kept: machine, network, run shape, precision asked for."""
        return "|".join([*run_key(*self._key_args()), self.precision])


def duration(seconds: float) -> str:
    """'m:ss' or 'h:mm:ss'."""
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def file_size(path: Path) -> str:
    """'151 MB', '820 kB' (decimal units, as file managers say), or 'size unknown'."""
    try:
        size = path.stat().st_size
    except OSError:
        return "size unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


SELF_CHECK_S = {"cpu": (20, 60), "cuda": (5, 20)}  # how long the precision self-check takes, about (seconds)


def preparing_text(config: TrainConfig, shapes: list[tuple[int, ...]], spacing: tuple[float, ...] | None) -> str:
    """What a run does before its first iteration (on images of ``shapes`` and ``spacing``): set up, and once per
    machine and network the precision self-check, with how long it takes."""
    setting_up = "Setting up the networks…"
    try:
        config = replace(config, spacing=config.spacing or spacing)
        patch = config.patch_size or choose_patch(shapes, config.spacing)
        plan = Plan.of_config(config, resolve_device(config.device), tuple(patch))
        if plan.known_precision() is not None:
            return setting_up
    except (DataError, RuntimeError, ValueError):  # the Trainer says what is wrong, in one line
        return setting_up
    lo, hi = SELF_CHECK_S.get(plan.device.type, SELF_CHECK_S["cpu"])
    asked = "bf16 or fp16" if plan.precision == "auto" else plan.precision
    return (f"Checking once whether this machine computes {asked} correctly: about {lo}-{hi} s, then the verdict "
            "is kept for later runs of these settings…")


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


def make_plan(shapes: dict[str, tuple[int, ...]], num_classes: int, device: str, precision: str, patch: str,
              batch: int, spacing: tuple[float, ...] | None = None, channels: int = 1,
              compile: str = "auto") -> Plan | None:
    """The plan of a Start on images of ``shapes``, ``spacing`` and ``channels`` with these settings; ``None``
    without an image, ``DataError`` for an unknown device or a bad patch size."""
    if not shapes:
        return None
    ndim = len(next(iter(shapes.values())))
    size = parse_patch(patch, ndim) or choose_patch(list(shapes.values()), spacing)
    device = resolve_device(device)
    return Plan(device, ndim, num_classes, tuple(size), batch, precision, spacing, channels,
                wants_compile(compile, device))


def display_name(device: torch.device) -> str:
    """The machine's name for people (the CPU flags left out)."""
    return machine_name(device).split(" [")[0]


def describe_precision(plan: Plan) -> str:
    """'precision bf16: self-check passed (…) (this machine's cached verdict)', or what Start will check."""
    known = plan.known_precision()
    if known is not None:
        return f"precision {known.describe()}" + (" (this machine's cached verdict)" if known.cache_key else "")
    asked = "bf16 or fp16" if plan.precision == "auto" else plan.precision
    faster = " and faster" if plan.precision == "auto" else ""
    return (f"precision {plan.precision}: {asked} if this machine computes it correctly{faster}, "
            "else fp32 (checked at Start)")


def estimate(speed: Speed | None, iterations: int, options: RunOptions, megavoxels: float) -> tuple[str, str]:
    """How long ``iterations`` take and when the first results show, and the total in a few words
    (' · ≈ 2:00'; '' when nothing was measured)."""
    if speed is None:
        return "Time: unknown until the first iterations (no run of these settings on this machine yet).", ""
    predict = (speed.predict_mvoxel_s or 0.0) * megavoxels
    total = speed.setup_s + iterations * speed.iteration_s
    text = f"{iterations} iterations ≈ {duration(total)}"
    limit = options.seconds
    if limit and total > limit:
        total = limit
        text += f" (the {options.minutes:g}-minute limit ends it near iteration {int(limit / speed.iteration_s)})"
    first = min(options.first_refresh or options.refresh_every, iterations)
    return (f"{text}; first results ≈ {duration(speed.setup_s + first * speed.iteration_s + predict)} after Start "
            f"(iteration {first}). Measured here: {speed.iteration_s:.2f} s/iteration in {speed.precision}.",
            f" · ≈ {duration(total)}")


def describe_plan(plan: Plan | None, megavoxels: float, iterations: int, options: RunOptions) -> tuple[str, str]:
    """Where and in which precision Start runs and how long it takes (``megavoxels`` predicted at a refresh);
    and that total in a few words."""
    if plan is None:
        return "Open or tick an image to see where and how fast training runs.", ""
    where = f"{plan.device.type.upper()} ({display_name(plan.device)})"
    time, total = estimate(measured_speed(plan.speed_key()), iterations, options, megavoxels)
    pools = pooling(plan.spacing, plan.ndim) if plan.spacing and len(plan.spacing) == plan.ndim else None
    shape = "" if pools is None or is_isotropic(pools) else \
        f"\nPatch {'×'.join(map(str, plan.patch))}, {describe(plan.spacing, pools)} (thick slices)."
    return f"Start runs on {where} · {describe_precision(plan)}.{shape}\n{time}", total
