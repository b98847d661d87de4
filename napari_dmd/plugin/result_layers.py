"""Result layers in the viewer (napari layers, no Qt).

For an image layer named X the dock shows:
- "X prediction": a Labels layer with network A's label map (the user's labels are never written),
  at half opacity and placed just above the image, so the user's labels stay drawn on top of it;
  once the user paints on it, refreshes leave it alone until the strokes are merged or the layer
  deleted, so a correction in progress is never overwritten;
- "X disagreement": an Image layer with the disagreement of the two networks (0 = they agree,
  1 = sure of different classes), 'inferno' colormap, additive blending, its contrast set from 0
  to the map's 99.5th percentile: the values are small (a few tenths at most), so a fixed 0..1
  scale would show almost nothing.
Both carry the image's scale, translate and geometry, so they overlay it and save with its geometry.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..jobs import contrast_top
from ._layers import DISAGREEMENT, GEOMETRY, KEY, PREDICTION, class_features, role, source

DISAGREEMENT_STYLE = {"colormap": "inferno", "blending": "additive", "opacity": 0.7}
PREDICTION_OPACITY = 0.5


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


def _placement(image_layer: Any) -> dict[str, Any]:
    meta = {}
    if image_layer is not None and GEOMETRY in image_layer.metadata:
        meta[GEOMETRY] = copy.deepcopy(image_layer.metadata[GEOMETRY])
    if image_layer is None:
        return {"metadata": meta}
    return {"scale": tuple(image_layer.scale), "translate": tuple(image_layer.translate), "metadata": meta}


def _insert(viewer: Any, layer: Any, image_layer: Any, above: int = 1) -> Any:
    """Insert a new result layer ``above`` places over its image (below the user's labels)."""
    index = viewer.layers.index(image_layer) + above if image_layer in viewer.layers else len(viewer.layers)
    viewer.layers.insert(min(index, len(viewer.layers)), layer)
    return layer


def restore_selection(viewer: Any, selected: list, inserted: Any) -> None:
    """Select the layers of ``selected`` again (those still in the viewer) if the selection is still only
    ``inserted``: napari makes a layer it inserts the only selected one, and a refresh during training must
    not move the user's next brush stroke onto a result layer."""
    layers = viewer.layers
    if set(layers.selection) != {inserted}:
        return  # the user chose a layer since
    keep = [la for la in selected if la in layers]
    if len(keep) == 1:
        layers.selection.active = keep[0]
        return
    layers.selection.clear()
    layers.selection.update(keep)


def show_prediction(viewer: Any, image: str, labels: np.ndarray, class_names: tuple[str, ...] = ()) -> Any:
    """Add or refresh the prediction layer of the image layer named ``image``.

    An existing layer of the same shape is updated in place (keeping the user's display choices)
    unless it holds unmerged edits. ``labels`` is shown as given: pass a copy to keep the model's
    proposal intact.
    """
    from napari.layers import Labels

    pred = find_layer(viewer, prediction_name(image), PREDICTION)
    if pred is not None and pred.data.shape == labels.shape:
        if not edited(pred):
            pred.data = labels
        return pred
    image_layer = find_layer(viewer, image)
    place = _placement(image_layer)
    kwargs = dict(place, name=prediction_name(image), opacity=PREDICTION_OPACITY)
    kwargs["metadata"] = {**place["metadata"], KEY: {"role": PREDICTION, "source": image}}
    if class_names:
        kwargs["features"] = class_features(class_names)
    pred = _insert(viewer, Labels(labels, **kwargs), image_layer)
    pred.events.paint.connect(lambda _event, layer=pred: set_edited(layer, True))
    return pred


def show_disagreement(viewer: Any, image: str, disagreement: np.ndarray, top: float | None = None) -> Any:
    """Add or refresh the disagreement layer of the image layer named ``image``; its contrast is 0..``top``
    (default: the map's 99.5th percentile, ``contrast_top``)."""
    from napari.layers import Image

    top = contrast_top(disagreement) if top is None else top
    dis = find_layer(viewer, disagreement_name(image), DISAGREEMENT)
    if dis is not None and dis.data.shape == disagreement.shape:
        dis.data = disagreement
        dis.contrast_limits = (0.0, top)
        return dis
    image_layer = find_layer(viewer, image)
    place = _placement(image_layer)
    kwargs = dict(place, name=disagreement_name(image), contrast_limits=(0.0, top), **DISAGREEMENT_STYLE)
    kwargs["metadata"] = {**place["metadata"], KEY: {"role": DISAGREEMENT, "source": image}}
    above = 2 if find_layer(viewer, prediction_name(image), PREDICTION) is not None else 1
    return _insert(viewer, Image(disagreement, **kwargs), image_layer, above)


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

    from ..pairing import base_name

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
