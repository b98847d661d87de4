"""The benchmarks' data sets, each described once: where it lies, its standard split, patch, stride, classes and
the settings of its protocol; and the benchmarks' training options, generated from the declared settings
(``napari_dmd.config.declared_settings``) as the command line's are.

The layouts are those of ``../shared/data/README.md``: la_half lists its split in ``train.list`` and
``test.list`` (the first 8 ids of train.list labeled, the other 72 unlabeled); hippocampus is split by name,
the cases sorted and every 5th one test (39), of the other 156 the first 16 labeled and 140 unlabeled.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_dmd.cli import add_setting
from napari_dmd.config import declared_settings
from napari_dmd.sample_data import CLASS_NAMES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # beside the project checkout

Pair = tuple[Path, Path]  # (image, label)


@dataclass
class Split:
    """Image paths (and label paths) of one benchmark split."""

    labeled: list[Pair]
    unlabeled: list[Path]
    test: list[Pair]


@dataclass(frozen=True)
class Dataset:
    """One data set of the benchmarks, under ``SHARED / folder``.

    ``patch`` and ``stride`` are the training patch and sliding-window stride (z, y, x); ``labeled`` the
    labeled cases of the standard split; ``settings`` the protocol's values of declared ``TrainConfig``
    settings where they differ from the defaults (the defaults of the benchmarks' options)."""

    name: str
    folder: str
    patch: tuple[int, int, int]
    stride: tuple[int, int, int]
    class_names: tuple[str, ...]
    labeled: int
    settings: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def root(self) -> Path:
        """The data set's folder in the shared data."""
        return SHARED / self.folder

    @property
    def defaults(self) -> dict[str, Any]:
        """The protocol's training settings: its patch and its ``settings`` (for ``add_training_options``)."""
        return {"patch_size": self.patch, **self.settings}

    def train_pairs(self, root: Path | None = None) -> list[Pair]:
        """(image, label) of the training cases, in the order of the split (labeled first)."""
        raise NotImplementedError

    def test_pairs(self, root: Path | None = None) -> list[Pair]:
        """(image, label) of the test cases."""
        raise NotImplementedError

    def split(self, root: Path | None = None, labeled: int | None = None) -> Split:
        """The standard split with the first ``labeled`` (default: the protocol's) training cases labeled."""
        n = self.labeled if labeled is None else labeled
        train = self.train_pairs(root)
        return Split(train[:n], [image for image, _ in train[n:]], self.test_pairs(root))


@dataclass(frozen=True)
class Listed(Dataset):
    """Split by ``train.list`` and ``test.list`` (ids of ``imagesTr/<id>.nii.gz``, ``labelsTr/<id>.nii.gz``)."""

    def _pairs(self, root: Path | None, listing: str) -> list[Pair]:
        root = root or self.root
        return [(root / "imagesTr" / f"{i}.nii.gz", root / "labelsTr" / f"{i}.nii.gz")
                for i in (root / listing).read_text().split()]

    def train_pairs(self, root: Path | None = None) -> list[Pair]:
        return self._pairs(root, "train.list")

    def test_pairs(self, root: Path | None = None) -> list[Pair]:
        return self._pairs(root, "test.list")


@dataclass(frozen=True)
class EveryNth(Dataset):
    """Split by name: ``images/<name>`` and ``labels/<name>`` sorted, every ``test_every``-th case test."""

    test_every: int = 5

    def _pairs(self, root: Path | None, test: bool) -> list[Pair]:
        root = root or self.root
        names = sorted(p.name for p in (root / "images").iterdir())
        return [(root / "images" / n, root / "labels" / n) for k, n in enumerate(names)
                if (k % self.test_every == self.test_every - 1) == test]

    def train_pairs(self, root: Path | None = None) -> list[Pair]:
        return self._pairs(root, test=False)

    def test_pairs(self, root: Path | None = None) -> list[Pair]:
        return self._pairs(root, test=True)


# LA: the paper's schedule (lr x0.1 every 2500, TrainConfig's default) over 2000 iterations, constant λ.
LA_HALF = Listed("la_half", "la_half", patch=(32, 64, 64), stride=(2, 9, 9),
                 class_names=("background", "left atrium"), labeled=8,
                 settings={"iterations": 2000, "lambda_rampup": 0})
HIPPOCAMPUS = EveryNth("hippocampus", "hippocampus", patch=(32, 48, 32), stride=(8, 12, 8),
                       class_names=CLASS_NAMES, labeled=16,
                       settings={"iterations": 1000, "lr_step": 750, "lambda_rampup": 0})
DATASETS = {d.name: d for d in (LA_HALF, HIPPOCAMPUS)}


def add_training_options(parser: argparse.ArgumentParser, overrides: Mapping[str, Any],
                         replaced: Iterable[str] = ()) -> None:
    """One option per declared ``TrainConfig`` setting, as ``napari-dmd train`` has them, the defaults
    replaced by ``overrides`` (a protocol's settings); the settings named in ``replaced`` are left to the
    script's own options (e.g. ``seed`` to a benchmark's ``--seeds``)."""
    unknown = set(overrides) - {f.name for f in declared_settings()}
    if unknown:
        raise ValueError(f"not declared settings: {', '.join(sorted(unknown))}")
    for f in declared_settings():
        if f.name not in replaced:
            add_setting(parser, f)
    parser.set_defaults(given=frozenset(), **overrides)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The values of the declared settings among ``args`` (as ``TrainConfig`` takes them: lists become tuples,
    as ``napari_dmd.cli`` does)."""
    return {f.name: tuple(v) if isinstance(v := getattr(args, f.name), list) else v
            for f in declared_settings() if hasattr(args, f.name)}
