"""The plugin's state as plain Python (no Qt, no napari): what the dock shows and trains from.

A ``Session`` holds the images and labels offered for training (arrays by reference, by layer
name), the user's choices (use this image, pair it with those labels), a cached ``LabelStats``
per labels layer (updated by the owner on that layer's own edits, never by scanning every
volume), the ``Reviewed`` record of each labels layer, and the model with the results of the
current run. It owns its transitions (``begin_run`` returns the job to run, ``finish_run`` takes its
``Finished``, ``model_loaded``, ``model_saved``): the dock is a view of it; the tests drive it directly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .channels import Channels, describe
from .config import RANKING_SLAB, RunOptions, TrainConfig
from .errors import DataError
from .jobs import Finished, TrainJob
from .pairing import (
    LayerInfo,
    Row,
    TrainingSet,
    channel_token,
    default_groups,
    default_pairs,
    image_problem,
    layer_channels,
    training_set,
)
from .ranking import Suggestion, suggest
from .review import Reviewed, write_run_record
from .spacing import data_spacing

RUNS_DIR = Path.home() / "napari-dmd" / "runs"


@dataclass
class LabelStats:
    """What the training table says about a labels layer: the largest value of each slice (along
    axis 0; one value for a 2D image), so an edit of a few slices updates only those."""

    shape: tuple[int, ...]
    slice_max: np.ndarray

    @classmethod
    def of(cls, labels: np.ndarray) -> LabelStats:
        a = np.asarray(labels)
        return cls(tuple(a.shape), cls._maxima(a))

    @staticmethod
    def _maxima(a: np.ndarray) -> np.ndarray:
        if a.size == 0:
            return np.zeros(1, np.int64)
        return a.reshape(a.shape[0], -1).max(axis=1).astype(np.int64) if a.ndim == 3 else np.array([a.max()])

    def update(self, labels: np.ndarray, slices: set[int]) -> None:
        """Recompute the given slices of a 3D volume after an edit."""
        idx = sorted(i for i in slices if 0 <= i < len(self.slice_max))
        if idx and len(self.shape) == 3:
            self.slice_max[idx] = self._maxima(np.asarray(labels[idx]))
        else:
            self.slice_max = self._maxima(np.asarray(labels))

    @property
    def top(self) -> int:
        """The largest label value."""
        return int(self.slice_max.max())

    @property
    def labeled_slices(self) -> int:
        """Slices holding a label (1 for a labeled 2D image)."""
        return int((self.slice_max > 0).sum())


@dataclass
class Choice:
    """What the user chose for one image row."""

    include: bool = True
    labels: str | None = None  # the labels layer picked by hand ('' = none)
    manual: bool = False
    channel_of: str | None = None  # the image whose case this one is a channel of, picked by hand ('' = own case)
    grouped: bool = False  # whether channel_of was picked by hand


@dataclass
class Layer:
    """An image or labels layer as the session knows it (data by reference)."""

    name: str
    data: Any
    rgb: bool = False
    class_names: tuple[str, ...] | None = None
    spacing: tuple[float, ...] | None = None  # of an image layer: its scale

    @property
    def info(self) -> LayerInfo:
        return LayerInfo(self.name, tuple(np.shape(self.data)), self.rgb)

    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial shape (a colour image's without its colour axis)."""
        return self.info.spatial


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


def slices_of(atoms: Any, axis: int = 0) -> set[int]:
    """The indices along ``axis`` touched by a napari Labels paint event's history atoms."""
    out: set[int] = set()
    for atom in atoms or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:
            s = key[axis]
            out.update(range(s.start or 0, s.stop))
        elif isinstance(atom, tuple) and atom and len(atom[0]) > axis:
            out.update(int(i) for i in np.unique(np.asarray(atom[0][axis])))
    return out


class Session:
    """Images, labels, pairing, review records, the model and the current run's results."""

    def __init__(self) -> None:
        self.images: dict[str, Layer] = {}
        self.labels: dict[str, Layer] = {}
        self.stats: dict[str, LabelStats] = {}
        self.reviewed: dict[str, Reviewed] = {}
        self.choices: dict[str, Choice] = {}
        self.model = None  # napari_dmd.checkpoint.ModelPair
        self.model_path: Path | None = None
        self.run_dir: Path | None = None
        self.results = ModelResults()
        self.class_names: tuple[str, ...] = ()

    # ------------------------------------------------------------ layers
    def add_image(self, name: str, data: Any, rgb: bool = False, spacing: tuple[float, ...] | None = None) -> None:
        """An image layer; ``spacing`` (its scale, array order) sets the networks' pooling per axis."""
        self.images[name] = Layer(name, data, rgb, spacing=spacing)
        self.choices.setdefault(name, Choice(include=image_problem(self.images[name].info) is None))

    def add_labels(self, name: str, data: Any, class_names: tuple[str, ...] | None = None,
                   reviewed: Reviewed | None = None) -> None:
        """A labels layer; without a record, non-empty labels count as reviewed whole (a complete
        label volume), empty ones as not reviewed at all (the user paints and marks slices)."""
        self.labels[name] = Layer(name, data, class_names=class_names or None)
        self.update_stats(name)
        if reviewed is None or reviewed.shape != self.stats[name].shape:
            shape = self.stats[name].shape
            reviewed = Reviewed.complete(shape) if self.stats[name].top else Reviewed(shape)
        self.reviewed[name] = reviewed

    def update_stats(self, name: str) -> LabelStats | None:
        """Recompute the cached statistics of one labels layer (after its own edit)."""
        layer = self.labels.get(name)
        if layer is None:
            return None
        self.stats[name] = LabelStats.of(layer.data)
        return self.stats[name]

    def replace_data(self, name: str, data: Any) -> None:
        """The layer got a new array (``layer.data = ...``); a labels record of another shape restarts."""
        if name in self.images:
            self.images[name].data = data
        if name in self.labels:
            self.labels[name].data = data
            self.update_stats(name)
            rec = self.reviewed.get(name)
            if rec is None or rec.shape != self.stats[name].shape:
                self.reviewed[name] = Reviewed(self.stats[name].shape)

    def painted(self, name: str, slices: set[int]) -> None:
        """The user painted these slices of a labels layer: they are reviewed now."""
        rec = self.reviewed.get(name)
        if rec is not None:
            for i in slices:
                if 0 <= i < rec.shape[rec.axis]:
                    rec.mark(i)
        if name in self.stats:
            self.stats[name].update(self.labels[name].data, slices)

    def remove(self, name: str) -> None:
        self.images.pop(name, None)
        self.choices.pop(name, None)
        self.labels.pop(name, None)
        self.stats.pop(name, None)
        self.reviewed.pop(name, None)
        for table in self.results.tables():
            table.pop(name, None)

    def rename(self, old: str, new: str) -> None:
        for table in (self.images, self.labels, self.stats, self.reviewed, self.choices, *self.results.tables()):
            if old in table:
                table[new] = table.pop(old)
        for layer in (self.images.get(new), self.labels.get(new)):
            if layer is not None:
                layer.name = new
        for choice in self.choices.values():
            if choice.labels == old:
                choice.labels = new
            if choice.channel_of == old:
                choice.channel_of = new

    # ------------------------------------------------------------ cases (image layers grouped as channels)
    def members(self) -> dict[str, str]:
        """Image layers that are channels of another layer's case -> that case (its first layer): the user's
        pick, else the default grouping by name (``pairing.default_groups``). A layer picked as a case by the
        user stays its own case unless picked into another; a pick that no longer fits is ignored."""
        auto = default_groups([lay.info for lay in self.images.values()])
        targets = {c.channel_of for c in self.choices.values() if c.grouped and c.channel_of}
        picked: dict[str, str | None] = {}
        for name in self.images:
            choice = self.choices.setdefault(name, Choice())
            if choice.grouped and choice.channel_of and choice.channel_of not in self.images:
                choice.channel_of, choice.grouped = None, False  # the picked case is gone
            picked[name] = (choice.channel_of or None) if choice.grouped else \
                (None if name in targets else auto.get(name))
        out = {}
        for name, target in picked.items():
            seen = {name}
            while target is not None and target not in seen and picked.get(target) is not None:
                seen.add(target)  # a channel of a channel: of that one's case
                target = picked[target]
            if target is not None and target not in seen and self._fits(name, target):
                out[name] = target
        return out

    def _fits(self, image: str, case: str) -> bool:
        """Whether ``image`` may be a channel of ``case``: two usable single-channel layers of one shape."""
        a, b = self.images[image], self.images[case]
        return image != case and not (a.rgb or b.rgb) and a.shape == b.shape \
            and image_problem(a.info) is None and image_problem(b.info) is None

    def groupable(self, image: str) -> list[str]:
        """The other images ``image`` may be a channel of: usable single-channel layers of its shape."""
        return [n for n in self.images if self._fits(image, n)]

    def group(self, image: str, case: str | None) -> None:
        """The user's pick: ``image`` is a channel of ``case``'s case (None: its own case)."""
        choice = self.choices.setdefault(image, Choice())
        choice.channel_of, choice.grouped = case or "", True

    def cases(self) -> list[str]:
        """The cases (rows that train), each named after its first layer, in the viewer's order."""
        members = self.members()
        return [n for n in self.images if n not in members]

    def case_of(self, image: str | None) -> str | None:
        """The case an image layer belongs to (itself, or the case it is a channel of); None for no image."""
        if image not in self.images:
            return None
        return self.members().get(image, image)

    def channels_of(self, case: str) -> list[str]:
        """The image layers of a case, its own first."""
        return [case, *(n for n, c in self.members().items() if c == case)]

    def case_image(self, case: str) -> np.ndarray | Channels:
        """The image a case trains on: its layer's data, a colour layer's channels, or the ``Channels`` of its
        layers (data by reference) named by their channel tokens (else by the layers' names)."""
        layers = self.channels_of(case)
        if len(layers) == 1:
            return layer_channels(self.images[case].data, self.images[case].rgb)
        tokens = [channel_token(n) for n in layers]
        names = [t[1] for t in tokens] if all(tokens) and len({t[1].lower() for t in tokens}) == len(layers) \
            else layers
        return Channels([self.images[n].data for n in layers], names)

    # ------------------------------------------------------------ pairing
    def pairs(self) -> dict[str, str | None]:
        """Case name -> its labels layer name (the user's pick, else the best match), or None."""
        cases = self.cases()
        auto = default_pairs([self.images[n].info for n in cases],
                             [LayerInfo(n, self.stats[n].shape) for n in self.labels])
        out = {}
        for name in cases:
            choice = self.choices.setdefault(name, Choice())
            if choice.manual and choice.labels and choice.labels not in self.labels:
                choice.labels, choice.manual = None, False  # the picked labels layer is gone
            out[name] = (choice.labels or None) if choice.manual else auto.get(name)
        return out

    def pair(self, image: str, labels: str | None) -> None:
        """The user's pick for ``image`` (None: no labels)."""
        choice = self.choices.setdefault(image, Choice())
        choice.labels, choice.manual = labels or "", True

    def include(self, image: str, value: bool) -> None:
        self.choices.setdefault(image, Choice()).include = value

    def reviewed_for(self, image: str) -> Reviewed | None:
        """The review record of the labels paired with ``image`` (None when unlabeled)."""
        labels = self.pairs().get(image)
        return self.reviewed.get(labels) if labels else None

    def info(self, image: str, labels: str | None) -> str:
        """The table's Info text of one row: the case it is a channel of, or its channels, what is labeled and
        reviewed, or why it is not usable."""
        layer = self.images[image]
        problem = image_problem(layer.info)
        if problem:
            return problem
        case = self.case_of(image)
        if case != image:
            return f"channel of {case}"
        channels = Channels.of(self.case_image(image))
        prefix = f"{channels.count} channels ({', '.join(channels.names)}) · " if channels.count > 1 else ""
        if not labels:
            return f"{prefix}unlabeled"
        st = self.stats[labels]
        if st.shape != layer.shape:
            return f"labels are {'×'.join(map(str, st.shape))}, the image {'×'.join(map(str, layer.shape))}"
        return prefix + review_summary(self.reviewed[labels], st)

    def unpaired_reasons(self) -> dict[str, str]:
        """Labels layers no image can take, and why (shown in the table, never silently dropped)."""
        shapes = {self.images[n].shape for n in self.cases()}
        used = {v for v in self.pairs().values() if v}
        return {n: f"no image of shape {'×'.join(map(str, st.shape))}" for n, st in self.stats.items()
                if n not in used and st.shape not in shapes}

    def rows(self) -> list[Row]:
        """The cases as ``pairing.Row`` objects (arrays by reference)."""
        rows = []
        for name, labels in self.pairs().items():
            img, lab = self.images[name], self.labels.get(labels) if labels else None
            rows.append(Row(name, self.case_image(name), self.choices[name].include,
                            None if lab is None else lab.data, labels, None if lab is None else lab.class_names,
                            None if lab is None else self.reviewed.get(labels), img.spacing))
        return rows

    def training_spacing(self) -> tuple[float, ...] | None:
        """The median voxel spacing of the images a Start would train on (None where one has none)."""
        return data_spacing([self.images[n].spacing for n in self.training_shapes()[0]])

    def training_channels(self) -> int:
        """The input channels of a Start: the first case's it would train on (1 without any)."""
        first = next(iter(self.training_shapes()[0]), None)
        return 1 if first is None else Channels.of(self.case_image(first)).count

    def training_shapes(self) -> tuple[dict[str, tuple[int, ...]], int]:
        """The shapes of the ticked usable images of the labeled images' dimension, and the number of
        classes their labels show (at least 2): what a Start would train on, from the cached statistics."""
        pairs = self.pairs()
        shapes = {n: self.images[n].shape for n in pairs if self.choices[n].include
                  and image_problem(self.images[n].info) is None}
        tops = {n: self.stats[lab].top for n, lab in pairs.items()
                if lab and n in shapes and self.stats[lab].shape == shapes[n]}
        ndim = len(shapes[next(iter(tops))]) if tops else len(next(iter(shapes.values()), ()))
        return {n: shape for n, shape in shapes.items() if len(shape) == ndim}, max([1, *tops.values()]) + 1

    def training_set(self, warm: bool = False) -> TrainingSet:
        """The checked training data (``DataError`` saying what is wrong)."""
        model = self.model if warm else None
        if model is None:
            return training_set(self.rows())
        return training_set(self.rows(), model.class_names, model.ndim, model.channels)

    # ------------------------------------------------------------ review
    def mark(self, image: str, index: int, reviewed: bool = True) -> Reviewed:
        """Mark (or unmark) slice ``index`` of the labels paired with ``image``."""
        rec = self.reviewed_for(image)
        if rec is None:
            raise DataError(f"'{image}' has no labels layer: paint or merge labels first")
        (rec.mark if reviewed else rec.unmark)(index)
        return rec

    # ------------------------------------------------------------ runs and results
    def new_run_dir(self, base: str | Path | None = None) -> Path:
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

    def begin_run(self, config_of: Callable[[int, tuple[str, ...], int], TrainConfig], options: RunOptions,
                  warm: bool = False, folder: str | None = None) -> TrainJob:
        """The job of a Start: the checked training data (``DataError`` saying what is wrong), its config
        (``config_of(num_classes, class_names, ndim)``), a new run folder holding the review records, and for
        a warm start the current model's checkpoint. The results of the last model are cleared."""
        warm = warm and self.model is not None
        data = self.training_set(warm)
        config = config_of(data.num_classes, data.class_names, data.ndim)
        init = self.model_path if warm else None
        if warm and (init is None or not Path(init).is_file()):
            raise DataError("the current model has no checkpoint file to continue from: save it first, "
                            "or untick 'continue from the current model'")
        run_dir = self.new_run_dir(folder)
        write_run_record(run_dir, data.reviewed)
        self.run_dir, self.class_names = run_dir, data.class_names
        self.results.clear()
        return TrainJob(data.frozen(), config, options, run_dir, init)

    def begin_prediction(self) -> list[tuple[str, Channels]]:
        """The ticked cases of the current model's dimension and channel count, to predict with it (``DataError``
        without a model or such a case). The results of the last run are cleared."""
        if self.model is None:
            raise DataError("no model yet: train one or load a saved model first")
        ticked = [(n, Channels.of(self.case_image(n))) for n in self.cases()
                  if self.choices[n].include and image_problem(self.images[n].info) is None]
        dimension = [(n, image) for n, image in ticked if image.ndim == self.model.ndim]
        images = [(n, image) for n, image in dimension if image.count == len(self.model.channels)]
        if dimension and not images:
            raise DataError(f"the model takes {describe(self.model.channels)}; no ticked "
                            f"{self.model.ndim}D case has {len(self.model.channels)}: group the channel layers of "
                            "a case in the training table, or load a model of this data")
        if not images:
            raise DataError("no ticked image fits the model: tick the images to predict in the training table")
        self.class_names = self.model.class_names
        self.results.clear()
        return images

    def finish_run(self, finished: Finished) -> None:
        """A run ended: its model is the current one (with its checkpoint, when it wrote one)."""
        self.model = finished.model
        if finished.checkpoint is not None:
            self.model_path = Path(finished.checkpoint)

    def model_loaded(self, model: Any, path: Path) -> None:
        """A saved model was loaded: it is the current one."""
        self.model, self.model_path = model, Path(path)

    def model_saved(self, path: Path) -> None:
        """The current model was saved to ``path`` (a warm start continues from there)."""
        self.model_path = Path(path)

    def show_result(self, image: str, labels: np.ndarray, disagreement: np.ndarray, slice_scores: np.ndarray,
                    rows: tuple[int, int] | None = None) -> None:
        """Keep a new prediction of ``image`` (the layers show it when the image is in view). A whole prediction
        also gives the image's per-slice 'label this next' scores; a prediction of the slices ``rows`` only is
        written into the image's maps (blank where nothing was predicted yet) and leaves the ranking alone."""
        r = self.results
        if rows is None:
            r.latest[image], r.disagreement[image], r.slice_scores[image] = labels, disagreement, slice_scores
            rec = self.reviewed_for(image)
            r.scored_reviewed[image] = frozenset() if rec is None else rec.marked()
            return
        shape = self.images[image].shape
        for table, part in ((r.latest, labels), (r.disagreement, disagreement)):
            if image not in table or table[image].shape != shape or table[image].dtype != part.dtype:
                table[image] = np.zeros(shape, part.dtype)
            table[image][rows[0]:rows[1]] = part

    def ranking_coverage(self) -> str:
        """Which cases 'label this next' ranks: those predicted whole by the current model."""
        cases = self.cases()
        ranked = sum(n in self.results.slice_scores for n in cases)
        if ranked == len(cases):
            return f"Ranks all {ranked} image(s)." if ranked else ""
        return (f"Ranks the {ranked} of {len(cases)} images predicted whole; during training on large images "
                "only the slices in view are refreshed, every image is predicted whole at the end of the run.")

    def suggestions(self, count: int = 10) -> list[Suggestion]:
        """'Label this next': unreviewed slabs of the images with results, spread across images."""
        scores = {n: v for n, v in self.results.slice_scores.items() if n in self.images}
        reviewed = {n: self.reviewed_for(n) for n in scores}
        recent = {n: rec.marked() - self.results.scored_reviewed.get(n, frozenset())
                  for n, rec in reviewed.items() if rec is not None}
        return suggest(scores, reviewed, count=count, slab=RANKING_SLAB, recent=recent)


def review_summary(rec: Reviewed, stats: LabelStats) -> str:
    """'35/35 reviewed, 25 labeled' (slices), '2/35 reviewed, all background', 'not reviewed' ..."""
    if len(stats.shape) < 3:
        return "reviewed" if rec.whole else "not reviewed"
    n = stats.shape[rec.axis]
    labeled = f", {stats.labeled_slices} labeled" if stats.top else ", all background"
    done = n if rec.whole else len(rec.slices)
    return f"{done}/{n} reviewed{labeled}"
