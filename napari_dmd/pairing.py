"""Training data from napari layers, as plain functions (no Qt, no viewer).

Each labels layer is paired with the image of the same shape whose name is closest; every other
usable image is unlabeled data. ``training_set`` checks the choice and says clearly what is wrong,
``build_volumes`` turns it into the engine's ``Volume`` objects (run in the worker thread, since
intensity normalisation of a large volume takes a moment).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace

import numpy as np

from .channels import Channels, describe
from .config import default_class_names
from .data import Volume
from .errors import DataError
from .review import Reviewed

_SUFFIX = re.compile(r"([\s_.\-]*(labels?|seg(mentation)?s?|masks?|gt|annotations?|ground[\s_-]?truth))+$")
_COPY = re.compile(r"\s*\[\d+\]$")  # napari's " [1]" suffix for a repeated name
# a channel of a case: nnU-Net's _0000, _0001 ... or an MR/CT/PET modality word, after _ - . or a space
MODALITIES = "t1 t1c t1ce t1gd t1w t2 t2w flair adc dwi hbv pd ct pet dce".split()
_CHANNEL = re.compile(rf"^(?P<stem>.+?)[\s_.\-](?P<token>\d{{4}}|{'|'.join(MODALITIES)})$", re.IGNORECASE)
COLOURS = ("red", "green", "blue", "alpha")  # the channel names of an RGB(A) layer


@dataclass(frozen=True)
class LayerInfo:
    """What pairing needs to know of a layer: its data's shape (a colour layer's with its colour axis last)."""

    name: str
    shape: tuple[int, ...]
    rgb: bool = False

    @property
    def spatial(self) -> tuple[int, ...]:
        """The shape of one channel: a colour layer's without its last axis."""
        return tuple(self.shape[:-1]) if self.rgb else tuple(self.shape)


def image_problem(info: LayerInfo) -> str | None:
    """Why an image layer cannot be used for training, or None."""
    shape = info.spatial
    if info.rgb and info.shape[-1] not in (3, 4):
        return f"colour image of {info.shape[-1]} values per pixel: only RGB and RGBA images can be used"
    if len(shape) not in (2, 3):
        return f"{len(shape)}D image {tuple(info.shape)}: only 2D images and 3D volumes can be used"
    if min(shape) < 2:
        return f"image of shape {tuple(info.shape)} is too small"
    return None


def layer_channels(data: np.ndarray, rgb: bool) -> np.ndarray | Channels:
    """A layer's data as the engine's image: an RGB(A) layer's colours as channels (views), else the data."""
    return Channels.split(data, -1, COLOURS[:np.shape(data)[-1]]) if rgb else data


def channel_token(name: str) -> tuple[str, str] | None:
    """(stem, channel) of a layer name ending in a channel token ('brain_T1' -> ('brain', 'T1'),
    'case_0001' -> ('case', '0001')), or None."""
    match = _CHANNEL.match(name.strip())
    return None if match is None else (match["stem"].lower(), match["token"])


def default_groups(images: list[LayerInfo]) -> dict[str, str]:
    """The image layers that are channels of another one's case, as name -> the case's first layer.

    Layers of the same shape whose names differ only by a channel token are one case; a colour layer,
    an unusable one or a token repeated within the stem (two 'brain_T1' copies) stays its own case."""
    groups: dict[tuple, list[tuple[str, str]]] = {}
    for info in images:
        token = channel_token(info.name)
        if token is not None and not info.rgb and image_problem(info) is None:
            groups.setdefault((token[0], info.spatial), []).append((info.name, token[1].lower()))
    out: dict[str, str] = {}
    for members in groups.values():
        if len(members) > 1 and len({t for _, t in members}) == len(members):
            out.update({name: members[0][0] for name, _ in members[1:]})
    return out


def base_name(name: str) -> str:
    """A layer name without napari's copy suffix and words such as 'labels' or 'seg'."""
    name = _COPY.sub("", name).strip().lower()
    return _SUFFIX.sub("", name) or name


def similarity(image_name: str, labels_name: str) -> float:
    """0..1: how well a labels layer's name matches an image's name."""
    return difflib.SequenceMatcher(None, base_name(image_name), base_name(labels_name)).ratio()


def default_pairs(images: list[LayerInfo], labels: list[LayerInfo]) -> dict[str, str | None]:
    """For each image name, the labels layer of the same shape with the closest name (or None).

    Each labels layer goes to at most one image; the best-matching pairs are taken first.
    """
    candidates = sorted(
        ((similarity(i.name, lab.name), -n, -m, i.name, lab.name)
         for n, i in enumerate(images) for m, lab in enumerate(labels)
         if i.spatial == tuple(lab.shape) and image_problem(i) is None),
        reverse=True)
    pairs: dict[str, str | None] = {i.name: None for i in images}
    used: set[str] = set()
    for _, _, _, image, lab in candidates:
        if pairs[image] is None and lab not in used:
            pairs[image] = lab
            used.add(lab)
    return pairs


@dataclass
class Row:
    """One case of the training table (its image: one layer's data, or the ``Channels`` of a colour layer or
    of several layers) with what the user chose for it."""

    name: str
    image: np.ndarray | Channels
    include: bool = True
    labels: np.ndarray | None = None
    labels_name: str | None = None
    class_names: tuple[str, ...] | None = None  # from the labels layer's metadata
    reviewed: Reviewed | None = None  # what of the labels supervises (None: all of it)
    spacing: tuple[float, ...] | None = None  # the image's voxel spacing (its layer's scale)


@dataclass
class TrainingSet:
    """Checked training data (arrays by reference: ``frozen()`` before handing it to a worker)."""

    labeled: list[tuple[str, Channels, np.ndarray]]
    unlabeled: list[tuple[str, Channels]]
    num_classes: int
    class_names: tuple[str, ...]
    ndim: int
    notes: list[str] = field(default_factory=list)  # things to tell the user, training goes on
    reviewed: dict[str, Reviewed] = field(default_factory=dict)  # per labeled image; absent: all reviewed
    spacing: dict[str, tuple[float, ...] | None] = field(default_factory=dict)  # per image

    def frozen(self) -> TrainingSet:
        """The same set with copies of the labels and review records, which the user may change while
        training runs."""
        return replace(self, labeled=[(n, img, lab.copy()) for n, img, lab in self.labeled],
                       reviewed={n: Reviewed.from_dict(r.to_dict()) for n, r in self.reviewed.items()})

    @property
    def images(self) -> list[tuple[str, Channels]]:
        """Every image of the set (labeled first), for prediction."""
        return [(n, i) for n, i, _ in self.labeled] + list(self.unlabeled)


def choose_class_names(num_classes: int, *candidates: tuple[str, ...] | None) -> tuple[str, ...]:
    """The first candidate naming at least ``num_classes`` classes (cut to that), else defaults."""
    for names in candidates:
        if names and len(names) >= num_classes:
            return tuple(names[:num_classes])
    return default_class_names(num_classes)


def training_set(rows: list[Row], model_class_names: tuple[str, ...] | None = None,
                 model_ndim: int | None = None, model_channels: tuple[str, ...] | None = None) -> TrainingSet:
    """Check the chosen rows; ``DataError`` with a message naming the layer for anything wrong.

    ``model_class_names``/``model_ndim``/``model_channels`` describe the model a warm start continues from:
    the class count is at least the model's, its dimension and its channels' count must be the data's.
    """
    notes: list[str] = []
    labeled, unlabeled = [], []
    reviewed: dict[str, Reviewed] = {}
    for row in rows:
        image = Channels.of(row.image)
        problem = image_problem(LayerInfo(row.name, image.shape))
        if not row.include:
            if problem:
                notes.append(f"'{row.name}' is not used ({problem})")
            continue
        if problem:
            raise DataError(f"'{row.name}' cannot be used: {problem}")
        if row.labels is not None:
            lab = np.asarray(row.labels)
            if lab.shape != image.shape:
                raise DataError(f"labels '{row.labels_name}' have shape {lab.shape} but image '{row.name}' has "
                                f"shape {image.shape}: pair them with an image of the same shape")
            if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
                raise DataError(f"labels '{row.labels_name}' hold {lab.dtype} values, not whole numbers")
            if lab.size and lab.min() < 0:
                raise DataError(f"labels '{row.labels_name}' hold negative values")
            rec = row.reviewed
            if rec is not None and not rec.whole and not rec.slices:
                empty = " (they are empty, all 0)" if not lab.any() else ""
                raise DataError(f"no slice of labels '{row.labels_name}' is marked reviewed{empty}: mark the "
                                "slices you checked (or paint on them), or set the labels of "
                                f"'{row.name}' to none")
            if rec is not None and not rec.whole:
                reviewed[row.name] = rec
            labeled.append((row.name, image, lab, row.class_names))
        else:
            unlabeled.append((row.name, image))
    if not labeled:
        raise DataError("no image has labels: paint labels on a few slices of an image and pair that "
                        "labels layer with it in the training table")
    if not any(shows_structure(lab, reviewed.get(name)) for name, _, lab, _ in labeled):
        named = ", ".join(f"'{row.labels_name}'" for row in rows if row.include and row.labels is not None)
        raise DataError(f"labels {named}: all background (empty) on every reviewed slice. A reviewed background "
                        "slice teaches 'nothing here', but some labeled image must show the structure: paint it "
                        "on a few slices of one of them")
    ndims = {img.ndim for _, img, _, _ in labeled}
    if len(ndims) > 1:
        raise DataError("the labeled images are a mix of 2D images and 3D volumes: train on one kind at a time")
    ndim = ndims.pop()
    if model_ndim is not None and model_ndim != ndim:
        raise DataError(f"the current model is for {model_ndim}D images but the labeled images are {ndim}D: "
                        "untick 'continue from the current model' to train a new one")
    for name, img in list(unlabeled):
        if img.ndim != ndim:
            notes.append(f"'{name}' is not used: it is {img.ndim}D, the labeled images are {ndim}D")
            unlabeled.remove((name, img))
    check_channels([(n, img) for n, img, _, _ in labeled] + unlabeled, model_channels)
    if not unlabeled:
        notes.append("no unlabeled image: training on the labeled images only (the two networks still "
                     "distil on them); open more images of the same kind to use unlabeled data")
    top = max(int(lab.max()) for _, _, lab, _ in labeled)
    num_classes = max(2, top + 1, len(model_class_names or ()))
    layer_names = next((n for *_, n in labeled if n and len(n) >= num_classes), None)
    names = choose_class_names(num_classes, layer_names, model_class_names)
    spacing = {row.name: row.spacing for row in rows if row.include}
    return TrainingSet([(n, i, lab) for n, i, lab, _ in labeled], unlabeled, num_classes, names, ndim, notes,
                       reviewed, spacing)


def check_channels(images: list[tuple[str, Channels]], model_channels: tuple[str, ...] | None = None) -> None:
    """``DataError`` naming the first case whose channel count is not the first case's (or the model's)."""
    if not images:
        return
    first, want = (("the current model", model_channels) if model_channels is not None
                   else (f"'{images[0][0]}'", images[0][1].names))
    for name, img in images:
        if img.count != len(want):
            advice = ("untick 'continue from the current model' to train a new one" if model_channels is not None
                      else "group its channel layers into one case (or untick it) in the training table")
            raise DataError(f"'{name}' has {describe(img.names)} but {first} takes "
                            f"{describe(want)}: {advice}")


def shows_structure(labels: np.ndarray, rec: Reviewed | None) -> bool:
    """Whether a reviewed voxel of ``labels`` (all of them without a record) is foreground, as the engine asks
    of the training set as a whole (``training.check_volumes``): reviewed background beside it is supervision."""
    if rec is None or rec.whole:
        return bool(np.asarray(labels).any())
    if len(rec.shape) < 3:
        return False
    index: list = [slice(None)] * labels.ndim
    index[rec.axis] = sorted(rec.slices)
    return bool(np.asarray(labels[tuple(index)]).any())


def build_volumes(data: TrainingSet) -> tuple[list[Volume], list[Volume]]:
    """Engine volumes; the reviewed voxels of each labeled image supervise (all of a complete one)."""
    labeled = []
    for name, img, lab in data.labeled:
        rec = data.reviewed.get(name)
        labeled.append(Volume.create(img, lab, None if rec is None else rec.mask(), name=name,
                                     spacing=data.spacing.get(name)))
    unlabeled = [Volume.create(img, name=name, spacing=data.spacing.get(name)) for name, img in data.unlabeled]
    return labeled, unlabeled
