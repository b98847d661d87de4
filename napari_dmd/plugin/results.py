"""Result layers in the viewer and the 'label this next' ranking (napari layers, no Qt).

For an image layer named X the dock shows:
- "X prediction": a Labels layer with network A's label map (the user's labels are never written);
  once the user paints on it, refreshes leave it alone until it is merged whole or deleted, so a
  correction in progress is never overwritten;
- "X disagreement": an Image layer with the disagreement of the two networks, 0..1, drawn with
  the 'inferno' colormap, additive blending and opacity 0.6 so the MRI stays readable beneath it.
Both carry the image's scale, translate and geometry, so they overlay it and save with its geometry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._layers import DISAGREEMENT, GEOMETRY, KEY, PREDICTION, class_features, role, source

DISAGREEMENT_STYLE = {"colormap": "inferno", "blending": "additive", "opacity": 0.6, "contrast_limits": (0.0, 1.0)}


def prediction_name(image: str) -> str:
    return f"{image} prediction"


def disagreement_name(image: str) -> str:
    return f"{image} disagreement"


def edited(layer: Any) -> bool:
    """Whether the user painted on this prediction layer since it was last merged whole."""
    return bool(layer is not None and (layer.metadata.get(KEY) or {}).get("edited"))


def set_edited(layer: Any, value: bool) -> None:
    """Mark a prediction layer as holding (or no longer holding) unmerged corrections."""
    layer.metadata[KEY] = {**layer.metadata[KEY], "edited": value}


def find_layer(viewer: Any, name: str, kind: str | None = None):
    """The layer called ``name`` (of plugin role ``kind``, or a user layer if None), or None."""
    for layer in viewer.layers:
        if layer.name == name and role(layer) == kind:
            return layer
    return None


def result_layers(viewer: Any, image: str) -> list:
    """The plugin's result layers computed from the image layer named ``image``."""
    return [layer for layer in viewer.layers if role(layer) in (PREDICTION, DISAGREEMENT) and source(layer) == image]


def _placement(image_layer: Any) -> dict[str, Any]:
    meta = {}
    if image_layer is not None and GEOMETRY in image_layer.metadata:
        meta[GEOMETRY] = copy.deepcopy(image_layer.metadata[GEOMETRY])
    if image_layer is None:
        return {"metadata": meta}
    return {"scale": tuple(image_layer.scale), "translate": tuple(image_layer.translate), "metadata": meta}


def show_result(viewer: Any, image: str, labels: np.ndarray, disagreement: np.ndarray,
                class_names: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """Add or refresh the prediction and disagreement layers of the image layer named ``image``.

    Existing result layers of the same image and shape are updated in place (keeping the user's
    colormap and visibility choices), except a prediction the user has edited; a missing one is
    added again.
    """
    image_layer = find_layer(viewer, image)
    place = _placement(image_layer)
    visible = True if image_layer is None else bool(image_layer.visible)
    pred = find_layer(viewer, prediction_name(image), PREDICTION)
    if pred is not None and pred.data.shape == labels.shape:
        if not edited(pred):
            pred.data = labels
    else:
        kwargs = dict(place, name=prediction_name(image), visible=visible)
        kwargs["metadata"] = {**place["metadata"], KEY: {"role": PREDICTION, "source": image}}
        if class_names:
            kwargs["features"] = class_features(class_names)
        pred = viewer.add_labels(labels, **kwargs)
        pred.events.paint.connect(lambda _event, layer=pred: set_edited(layer, True))
    dis = find_layer(viewer, disagreement_name(image), DISAGREEMENT)
    if dis is not None and dis.data.shape == disagreement.shape:
        dis.data = disagreement
    else:
        kwargs = dict(place, name=disagreement_name(image), visible=visible, **DISAGREEMENT_STYLE)
        kwargs["metadata"] = {**place["metadata"], KEY: {"role": DISAGREEMENT, "source": image}}
        dis = viewer.add_image(disagreement, **kwargs)
    return pred, dis


@dataclass(frozen=True)
class RankedSlice:
    """One row of 'label this next': a slice (None for a 2D image) and its mean disagreement."""

    score: float
    image: str
    index: int | None


def rank_slices(scores: dict[str, np.ndarray], ndim: dict[str, int] | None = None, top: int = 50) -> list[RankedSlice]:
    """Slices of all images, most disagreement first (means per slice, so sizes do not matter)."""
    rows = []
    for image, s in scores.items():
        s = np.atleast_1d(np.asarray(s, dtype=float))
        is_2d = (ndim or {}).get(image) == 2
        rows += [RankedSlice(float(v), image, None if is_2d else i) for i, v in enumerate(s)]
    rows.sort(key=lambda r: (-r.score, r.image, r.index or 0))
    return rows[:top]


def go_to(viewer: Any, image: str, index: int | None) -> None:
    """Show the image (and its labels and results), hide the other images' layers, and move the
    viewer to slice ``index`` along the image's first axis."""
    image_layer = find_layer(viewer, image)
    focus(viewer, image)
    if image_layer is None or index is None or image_layer.ndim < 3:
        return
    axis = viewer.dims.ndim - image_layer.ndim  # the layer's axis 0 in world axes
    world = float(image_layer.translate[0] + index * image_layer.scale[0])
    viewer.dims.set_point(axis, world)


def focus(viewer: Any, image: str, others: list[str] | None = None) -> None:
    """Make the layers of ``image`` visible and hide those of the other images in ``others``
    (default: every other image layer). Layers are matched by name: X, X labels, X prediction..."""
    from napari.layers import Image

    from .pairing import base_name

    key = base_name(image)
    names = others if others is not None else [layer.name for layer in viewer.layers
                                               if isinstance(layer, Image) and role(layer) is None]
    other_keys = {base_name(n) for n in names} - {key}
    for layer in viewer.layers:
        owner = source(layer) or layer.name
        k = base_name(owner)
        if k == key:
            layer.visible = True
        elif k in other_keys:
            layer.visible = False
