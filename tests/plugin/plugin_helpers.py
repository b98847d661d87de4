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


def small_workspace(root, cases: int = 3, labelled: int = 1):
    """An MSD-layout workspace of ``cases`` cube cases (2 classes), the first ``labelled`` with label files."""
    import json

    from napari_dmd.io import Geometry, write_image

    geometry = Geometry.from_scale((2.0, 1.0, 1.0))
    for k in range(cases):
        image, label = cube_case(k)
        write_image(root / "imagesTr" / f"case{k}.nii.gz", image, geometry)
        if k < labelled:
            write_image(root / "labelsTr" / f"case{k}.nii.gz", label, geometry)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "labels": {"0": "background", "1": "box"},
                                                   "numTraining": cases, "file_ending": ".nii.gz"}))
    return root


def workspace_dock(make_napari_viewer, root, run_dir, autosave: int = 10):
    """(viewer, widget): an empty viewer whose dock has the workspace in ``root`` open."""
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dmd", "DMD training")
    fast_settings(widget, run_dir, autosave=autosave)
    assert widget.workspace.open(root)
    return viewer, widget
