"""Measured speeds of finished runs, kept on this machine for the next run's time estimate.

Each finished run records its seconds to set up, per training iteration (predictions left out) and
per predicted megavoxel in ``speed.json`` beside the precision cache, under its plan's key (machine,
network, run shape, precision asked for: ``plan.Plan.speed_key``). Nothing is assumed: a plan never
run here has no estimate.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import DMDError
from .io import write_text
from .precision import cache_path

SPEED_FILE = "speed.json"


@dataclass(frozen=True)
class Speed:
    """A finished run's measured speed: seconds to set up, per training iteration (predictions left
    out) and per predicted megavoxel, and the precision the iterations ran in."""

    setup_s: float
    iteration_s: float
    predict_mvoxel_s: float | None = None
    precision: str = ""


def _read() -> dict:
    try:
        table = json.loads((cache_path().parent / SPEED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def measured_speed(key: str) -> Speed | None:
    """The speed recorded under ``key`` by the last finished run on this machine, if any."""
    entry = _read().get(key)
    try:
        return Speed(**entry) if isinstance(entry, dict) else None
    except TypeError:  # an entry of another version
        return None


def record_speed(key: str, speed: Speed) -> None:
    """Keep a finished run's speed under ``key`` for the next run of the same plan (a read-only home is no error)."""
    table = _read()
    table[key] = vars(speed)
    try:
        write_text(cache_path().parent / SPEED_FILE, json.dumps(table, indent=1))
    except DMDError:
        pass
