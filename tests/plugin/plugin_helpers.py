"""Helpers shared by the plugin tests: tiny synthetic volumes, quick dock settings, results handed to the dock."""
from __future__ import annotations

import numpy as np

from napari_dmd.jobs import ImageResult
from napari_dmd.ranking import slice_means

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


def inject(widget, name, labels, disagreement=None, iteration=1):
    """The dock receives a result as from a refresh of the worker; returns the disagreement map it got."""
    d = np.random.default_rng(1).random(labels.shape).astype(np.float32) * 0.3 if disagreement is None \
        else disagreement
    widget._show(ImageResult(name, labels, d, slice_means(d), float(d.mean()), iteration))
    widget._fill_ranking()
    widget.results.flush()
    return d
