"""Helpers shared by the plugin tests: tiny synthetic volumes and quick dock settings."""
from __future__ import annotations

from synthetic import CUBE as SHAPE  # noqa: F401  (the plugin tests import both from here)
from synthetic import cube_case  # noqa: F401

FAST = {"iterations": 2, "refresh_every": 2, "first_refresh": 0, "minutes": 0, "patch_size": (16, 32, 32),
        "labeled_batch": 1, "unlabeled_batch": 1, "checkpoint_every": 1000, "device": "cpu", "precision": "fp32"}


def fast_settings(widget, run_dir, **overrides) -> None:
    """Tiny, quick training settings in the dock (CPU, fp32, 16×32×32 patches)."""
    widget.settings.set(**dict(FAST, run_folder=str(run_dir), **overrides))


def wait_done(qtbot, widget, timeout_ms: int = 120_000) -> None:
    """Wait until the dock's worker thread has ended, its messages were handled and its layers shown."""
    qtbot.waitUntil(lambda: widget.worker is None and not widget.results.pending, timeout=timeout_ms)
