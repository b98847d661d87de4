"""The model the dock works with and what it predicted: the run lifecycle's state, without Qt or napari.

A run begins (``begun``: its folder and class names, the last results cleared) and finishes (``finished``: its
model is the current one, with its checkpoint); a saved model can be loaded or the current one saved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .jobs import Finished

RUNS_DIR = Path.home() / "napari-dmd" / "runs"


@dataclass
class ModelResults:
    """What the current model predicted, per image: its latest label map, disagreement map and per-slice
    'label this next' scores, and the proposal the prediction layer was last refreshed with (what the
    user's strokes are made on)."""

    latest: dict[str, np.ndarray] = field(default_factory=dict)
    disagreement: dict[str, np.ndarray] = field(default_factory=dict)
    slice_scores: dict[str, np.ndarray] = field(default_factory=dict)
    proposals: dict[str, np.ndarray] = field(default_factory=dict)
    scored_reviewed: dict[str, frozenset[int]] = field(default_factory=dict)  # reviewed slices when scored

    def tables(self) -> tuple[dict[str, Any], ...]:
        """Every per-image table."""
        return self.latest, self.disagreement, self.slice_scores, self.proposals, self.scored_reviewed

    def clear(self) -> None:
        self.latest.clear()
        self.disagreement.clear()
        self.slice_scores.clear()

    def keep(self, image: str, shape: tuple[int, ...], labels: np.ndarray, disagreement: np.ndarray,
             slice_scores: np.ndarray, reviewed: frozenset[int], rows: tuple[int, int] | None = None) -> None:
        """Keep a new prediction of ``image`` (of spatial ``shape``; ``reviewed``: its slices reviewed now). A
        whole prediction also gives the per-slice 'label this next' scores; a prediction of the slices ``rows``
        only is written into the maps (blank where nothing was predicted yet) and leaves the ranking alone."""
        if rows is None:
            self.latest[image], self.disagreement[image], self.slice_scores[image] = labels, disagreement, slice_scores
            self.scored_reviewed[image] = reviewed
            return
        for table, part in ((self.latest, labels), (self.disagreement, disagreement)):
            if image not in table or table[image].shape != shape or table[image].dtype != part.dtype:
                table[image] = np.zeros(shape, part.dtype)
            table[image][rows[0]:rows[1]] = part


def new_run_dir(base: str | Path | None = None) -> Path:
    """A folder for a new run that no other run uses (a run never overwrites another's model)."""
    root = Path(base).expanduser() if base else RUNS_DIR
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if base and not (root.exists() and any(root.iterdir())):
        return root  # an empty (or new) folder picked by the user
    parent, stem = (root, stamp) if not base else (root.parent, f"{root.name}-{stamp}")
    path, n = parent / stem, 1
    while path.exists():
        n += 1
        path = parent / f"{stem}-{n}"
    return path


class CurrentModel:
    """The current model (``checkpoint.ModelPair``), its checkpoint file, the last run's folder, the class names
    of the results and the results themselves."""

    def __init__(self) -> None:
        self.model: Any = None
        self.path: Path | None = None
        self.run_dir: Path | None = None
        self.class_names: tuple[str, ...] = ()
        self.results = ModelResults()

    def begun(self, run_dir: Path | None, class_names: tuple[str, ...]) -> None:
        """A run or a prediction began: the last model's results are cleared."""
        if run_dir is not None:
            self.run_dir = run_dir
        self.class_names = tuple(class_names)
        self.results.clear()

    def finished(self, finished: Finished) -> None:
        """A run ended: its model is the current one (with its checkpoint, when it wrote one)."""
        self.model = finished.model
        if finished.checkpoint is not None:
            self.path = Path(finished.checkpoint)

    def loaded(self, model: Any, path: Path) -> None:
        """A saved model was loaded: it is the current one."""
        self.model, self.path = model, Path(path)

    def saved(self, path: Path) -> None:
        """The current model was saved to ``path`` (a warm start continues from there)."""
        self.path = Path(path)
