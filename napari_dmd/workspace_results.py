"""The results of a workspace's latest prediction run, as ``predict --workspace`` writes them (here or on another
machine): each case's label map and disagreement map in ``.napari-dmd/predictions/<run>/``, and the cohort's
``label_next.csv`` (no Qt). Only the case asked for is read; the ranking is read from its table.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .io import case_name, list_images, read_image
from .ranking import Suggestion

LABEL_NEXT = "label_next.csv"
DISAGREEMENT = "disagreement"


@dataclass
class CohortResults:
    """The predictions of one run (``run``: its folder's name) over the cases of a workspace."""

    folder: Path
    files: dict[str, Path] = field(default_factory=dict)  # case -> its predicted label map
    ranking: list[Suggestion] = field(default_factory=list)  # the cohort's 'label this next', best first

    @property
    def run(self) -> str:
        return self.folder.name

    @property
    def doubt(self) -> dict[str, float]:
        """Each case's highest 'label this next' score."""
        best: dict[str, float] = {}
        for s in self.ranking:
            best[s.image] = max(best.get(s.image, 0.0), s.score)
        return best

    def read(self, case: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The label map and disagreement map predicted for ``case`` (None: not predicted by this run)."""
        path = self.files.get(case)
        if path is None:
            return None
        disagreement = self.folder / DISAGREEMENT / path.name
        labels, _ = read_image(path)
        unsure, _ = read_image(disagreement) if disagreement.is_file() else (np.zeros(labels.shape, np.float32),
                                                                             None)
        return labels, unsure.astype(np.float32, copy=False)


def _ranking(path: Path) -> list[Suggestion]:
    """The rows of a ``label_next.csv`` (cases by name without their file ending)."""
    if not path.is_file():
        return []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return [Suggestion(case_name(row["case"]), 0, int(row["slice"]), float(row["score"]))
                    for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise DataError(f"{path.absolute()} is not a label_next.csv of napari-dmd predict ({exc})") from exc


def latest_results(predictions: Path) -> CohortResults | None:
    """The newest run's results in a workspace's ``predictions`` folder (None: none yet)."""
    runs = sorted((p for p in predictions.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.stat().st_mtime) if predictions.is_dir() else []
    for folder in reversed(runs):
        files = {case_name(p): p for p in list_images(folder) if p.is_file()}
        if files:
            return CohortResults(folder, files, _ranking(folder / LABEL_NEXT))
    return None
