"""Helpers shared by the plugin tests: tiny synthetic volumes and quick dock settings."""
from __future__ import annotations

import numpy as np

SHAPE = (16, 32, 32)
FAST = {"iterations": 2, "refresh_every": 2, "first_refresh": 0, "minutes": 0, "patch_size": (16, 32, 32),
        "labeled_batch": 1, "unlabeled_batch": 1, "checkpoint_every": 1000, "device": "cpu", "precision": "fp32"}


def cube_case(seed: int, shape=SHAPE, classes: int = 2):
    """(image float32, labels uint8): bright box(es) on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    lo = [int(rng.integers(1, max(2, s // 2 - 2))) for s in shape]
    label[tuple(slice(a, a + max(2, s // 3)) for a, s in zip(lo, shape))] = 1
    if classes == 3:
        label[tuple(slice(a + s // 3, a + s // 3 + max(2, s // 5)) for a, s in zip(lo, shape))] = 2
    image = rng.normal(0, 0.3, shape) + 2.0 * (label == 1) + 1.0 * (label == 2)
    return image.astype(np.float32), label


def fast_settings(widget, run_dir, **overrides) -> None:
    """Tiny, quick training settings in the dock (CPU, fp32, 16×32×32 patches)."""
    widget.settings.set(**dict(FAST, run_folder=str(run_dir), **overrides))


def wait_done(qtbot, widget, timeout_ms: int = 120_000) -> None:
    """Wait until the dock's worker thread has ended, its messages were handled and its layers shown."""
    qtbot.waitUntil(lambda: widget.worker is None and not widget.results.pending, timeout=timeout_ms)
