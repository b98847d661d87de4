"""The plugin's state as plain Python (no Qt, no napari): what the dock shows and trains from.

A ``Session`` is made of three parts, each holding its own state: the image layers and the cases they
group into (``cases.CaseGrouping``), the labels layers with their statistics and review records
(``label_book.LabelBook``), and the current model with its results (``current_model.CurrentModel``). The
session pairs cases with labels and owns the transitions that span the parts (a layer added, renamed or
removed, a Start, a prediction, a result kept): the dock is a view of it; the tests drive it directly.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .cases import CaseGrouping, Choice, Layer
from .channels import Channels, describe
from .config import RANKING_SLAB, RunOptions, TrainConfig
from .current_model import CurrentModel, new_run_dir
from .errors import DataError
from .jobs import TrainJob
from .label_book import LabelBook, LabelStats, review_summary
from .metrics import dice
from .pairing import LayerInfo, Row, TrainingSet, default_pairs, image_problem, training_set
from .ranking import Suggestion, suggest
from .review import Reviewed, write_run_record
from .spacing import data_spacing


class Session:
    """Cases, labels and their pairing, review records, the model and the current run's results."""

    def __init__(self) -> None:
        self.grouping = CaseGrouping()
        self.book = LabelBook()
        self.current = CurrentModel()

    @property
    def images(self) -> dict[str, Layer]:
        return self.grouping.images

    @property
    def choices(self) -> dict[str, Choice]:
        return self.grouping.choices

    @property
    def labels(self) -> dict[str, Layer]:
        return self.book.layers

    @property
    def stats(self) -> dict[str, LabelStats]:
        return self.book.stats

    @property
    def reviewed(self) -> dict[str, Reviewed]:
        return self.book.reviewed

    # ------------------------------------------------------------ layers
    def add_image(self, name: str, data: Any, rgb: bool = False, spacing: tuple[float, ...] | None = None) -> None:
        """An image layer; ``spacing`` (its scale, array order) sets the networks' pooling per axis."""
        self.grouping.add(Layer(name, data, rgb, spacing=spacing))

    def add_labels(self, name: str, data: Any, class_names: tuple[str, ...] | None = None,
                   reviewed: Reviewed | None = None) -> None:
        """A labels layer (``LabelBook.add``)."""
        self.book.add(name, data, class_names, reviewed)

    def replace_data(self, name: str, data: Any) -> None:
        """The layer got a new array (``layer.data = ...``); a labels record of another shape restarts."""
        if name in self.images:
            self.images[name].data = data
        if name in self.labels:
            self.book.replace(name, data)

    def remove(self, name: str) -> None:
        self.images.pop(name, None)
        self.choices.pop(name, None)
        for table in (*self.book.tables(), *self.current.results.tables()):
            table.pop(name, None)

    def rename(self, old: str, new: str) -> None:
        self.grouping.rename(old, new)
        for table in (*self.book.tables(), *self.current.results.tables()):
            if old in table:
                table[new] = table.pop(old)
        if new in self.labels:
            self.labels[new].name = new

    # ------------------------------------------------------------ pairing
    def pairs(self) -> dict[str, str | None]:
        """Case name -> its labels layer name (the user's pick, else the best match), or None."""
        cases = self.grouping.cases()
        auto = default_pairs([self.images[n].info for n in cases],
                             [LayerInfo(n, self.stats[n].shape) for n in self.labels])
        out = {}
        for name in cases:
            choice = self.grouping.choice(name)
            if choice.manual and choice.labels and choice.labels not in self.labels:
                choice.labels, choice.manual = None, False  # the picked labels layer is gone
            out[name] = (choice.labels or None) if choice.manual else auto.get(name)
        return out

    def pair(self, image: str, labels: str | None) -> None:
        """The user's pick for ``image`` (None: no labels)."""
        choice = self.grouping.choice(image)
        choice.labels, choice.manual = labels or "", True

    def reviewed_for(self, image: str) -> Reviewed | None:
        """The review record of the labels paired with ``image`` (None when unlabeled)."""
        labels = self.pairs().get(image)
        return self.reviewed.get(labels) if labels else None

    def rows(self) -> list[Row]:
        """The cases as ``pairing.Row`` objects (arrays by reference)."""
        rows = []
        for name, labels in self.pairs().items():
            img, lab = self.images[name], self.labels.get(labels) if labels else None
            rows.append(Row(name, self.grouping.case_image(name), self.choices[name].include,
                            None if lab is None else lab.data, labels, None if lab is None else lab.class_names,
                            None if lab is None else self.reviewed.get(labels), img.spacing))
        return rows

    def training_spacing(self) -> tuple[float, ...] | None:
        """The median voxel spacing of the images a Start would train on (None where one has none)."""
        return data_spacing([self.images[n].spacing for n in self.training_shapes()[0]])

    def training_channels(self) -> int:
        """The input channels of a Start: the first case's it would train on (1 without any)."""
        first = next(iter(self.training_shapes()[0]), None)
        return 1 if first is None else Channels.of(self.grouping.case_image(first)).count

    def training_shapes(self) -> tuple[dict[str, tuple[int, ...]], int]:
        """The shapes of the ticked usable images of the labeled images' dimension, and the number of
        classes their labels show (at least 2): what a Start would train on, from the cached statistics."""
        shapes, tops = self._training_images()
        return shapes, max([1, *tops.values()]) + 1

    def training_counts(self) -> tuple[int, int]:
        """How many labeled and unlabeled cases a Start would train on (from the cached statistics)."""
        shapes, tops = self._training_images()
        return sum(n in shapes for n in tops), sum(n not in tops for n in shapes)

    def _training_images(self) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
        """``training_shapes``' images; the top label of every ticked usable image with labels of its shape."""
        pairs = self.pairs()
        shapes = {n: self.images[n].shape for n in pairs if self.choices[n].include
                  and image_problem(self.images[n].info) is None}
        tops = {n: self.stats[lab].top for n, lab in pairs.items()
                if lab and n in shapes and self.stats[lab].shape == shapes[n]}
        ndim = len(shapes[next(iter(tops))]) if tops else len(next(iter(shapes.values()), ()))
        return {n: shape for n, shape in shapes.items() if len(shape) == ndim}, tops

    def training_set(self, warm: bool = False) -> TrainingSet:
        """The checked training data (``DataError`` saying what is wrong)."""
        model = self.current.model if warm else None
        if model is None:
            return training_set(self.rows())
        return training_set(self.rows(), model.class_names, model.ndim, model.channels)

    def mark(self, image: str, index: int, reviewed: bool = True) -> Reviewed:
        """Mark (or unmark) slice ``index`` of the labels paired with ``image``."""
        rec = self.reviewed_for(image)
        if rec is None:
            raise DataError(f"'{image}' has no labels layer: paint or merge labels first")
        (rec.mark if reviewed else rec.unmark)(index)
        return rec

    # ------------------------------------------------------------ runs and results
    def begin_run(self, config_of: Callable[[int, tuple[str, ...], int], TrainConfig], options: RunOptions,
                  warm: bool = False, folder: str | None = None) -> TrainJob:
        """The job of a Start: the checked training data (``DataError`` saying what is wrong), its config
        (``config_of(num_classes, class_names, ndim)``), a new run folder holding the review records, and for
        a warm start the current model's checkpoint. The results of the last model are cleared."""
        warm = warm and self.current.model is not None
        data = self.training_set(warm)
        config = config_of(data.num_classes, data.class_names, data.ndim)
        init = self.current.path if warm else None
        if warm and (init is None or not Path(init).is_file()):
            raise DataError("the current model has no checkpoint file to continue from: save it first, "
                            "or untick 'continue from the current model'")
        run_dir = new_run_dir(folder)
        write_run_record(run_dir, data.reviewed)
        self.current.begun(run_dir, data.class_names)
        return TrainJob(data.frozen(), config, options, run_dir, init)

    def begin_prediction(self) -> list[tuple[str, Channels]]:
        """The ticked cases of the current model's dimension and channel count, to predict with it (``DataError``
        without a model or such a case). The results of the last run are cleared."""
        model = self.current.model
        if model is None:
            raise DataError("no model yet: train one or load a saved model first")
        ticked = [(n, Channels.of(self.grouping.case_image(n))) for n in self.grouping.cases()
                  if self.choices[n].include and image_problem(self.images[n].info) is None]
        dimension = [(n, image) for n, image in ticked if image.ndim == model.ndim]
        images = [(n, image) for n, image in dimension if image.count == len(model.channels)]
        if dimension and not images:
            raise DataError(f"the model takes {describe(model.channels)}; no ticked {model.ndim}D case has "
                            f"{len(model.channels)}: group the channel layers of a case in the training table, "
                            "or load a model of this data")
        if not images:
            raise DataError("no ticked image fits the model: tick the images to predict in the training table")
        self.current.begun(None, model.class_names)
        return images

    def show_result(self, image: str, labels: Any, disagreement: Any, slice_scores: Any,
                    rows: tuple[int, int] | None = None) -> None:
        """Keep a new prediction of ``image`` (``ModelResults.keep``; the layers show it when it is in view)."""
        rec = self.reviewed_for(image)
        self.current.results.keep(image, self.images[image].shape, labels, disagreement, slice_scores,
                                  frozenset() if rec is None else rec.marked(), rows)

    def ranking_coverage(self) -> str:
        """Which cases 'label this next' ranks: those predicted whole by the current model."""
        cases = self.grouping.cases()
        ranked = sum(n in self.current.results.slice_scores for n in cases)
        if ranked == len(cases):
            return f"Ranks all {ranked} image(s)." if ranked else ""
        return (f"Ranks the {ranked} of {len(cases)} images predicted whole; during training on large images "
                "only the slices in view are refreshed, every image is predicted whole at the end of the run.")

    def suggestions(self, count: int = 10) -> list[Suggestion]:
        """'Label this next': unreviewed slabs of the images with results, spread across images."""
        results = self.current.results
        scores = {n: v for n, v in results.slice_scores.items() if n in self.images}
        reviewed = {n: self.reviewed_for(n) for n in scores}
        recent = {n: rec.marked() - results.scored_reviewed.get(n, frozenset())
                  for n, rec in reviewed.items() if rec is not None}
        return suggest(scores, reviewed, count=count, slab=RANKING_SLAB, recent=recent)


def row_info(session: Session, image: str, labels: str | None) -> str:
    """The table's Info text of one row: the case it is a channel of, or its channels, what is labeled and
    reviewed, or why it is not usable."""
    layer = session.images[image]
    problem = image_problem(layer.info)
    if problem:
        return problem
    case = session.grouping.case_of(image)
    if case != image:
        return f"channel of {case}"
    channels = Channels.of(session.grouping.case_image(image))
    prefix = f"{channels.count} channels ({', '.join(channels.names)}) · " if channels.count > 1 else ""
    if not labels:
        return f"{prefix}unlabeled"
    st = session.stats[labels]
    if st.shape != layer.shape:
        return f"labels are {'×'.join(map(str, st.shape))}, the image {'×'.join(map(str, layer.shape))}"
    return prefix + review_summary(session.reviewed[labels], st)


def unpaired_reasons(session: Session) -> dict[str, str]:
    """Labels layers no image can take, and why (shown in the table, never silently dropped)."""
    shapes = {session.images[n].shape for n in session.grouping.cases()}
    used = {v for v in session.pairs().values() if v}
    return {n: f"no image of shape {'×'.join(map(str, st.shape))}" for n, st in session.stats.items()
            if n not in used and st.shape not in shapes}


def reviewed_dice(session: Session) -> float | None:
    """The current model's mean Dice against the user's labels on the reviewed slices, over the cases predicted
    whole (each case the mean over the classes present in either); None without such a case. After a continued
    run, it says how the prediction changed where the user reviewed (whether a correction was learnt)."""
    results, scores = session.current.results, []
    for case, labels in session.pairs().items():
        rec, pred = session.reviewed.get(labels or ""), results.latest.get(case)
        if rec is None or pred is None or case not in results.slice_scores or not rec.marked() \
                or tuple(pred.shape) != rec.shape:
            continue
        mask = rec.mask()
        p, r = np.asarray(pred)[mask], np.asarray(session.labels[labels].data)[mask]
        classes = [c for c in np.union1d(np.unique(p), np.unique(r)) if c > 0]
        scores.append(float(np.mean([dice(p == c, r == c) for c in classes])) if classes else 1.0)
    return float(np.mean(scores)) if scores else None
