"""Result layers in the viewer, and which case is shown (napari layers, no Qt).

For an image layer named X (the case's prefix) the dock shows, just above the image and so under the
user's labels (which stay drawn on top, never replaced):
- "X pred": a Labels layer with the prediction's label map (``inference.predict``) drawn as outlines, so the
  image and the user's labels show through; once the user paints on it, refreshes leave it alone until the
  strokes are merged or the layer deleted, so a correction in progress is never overwritten;
- "X unsure": an Image layer with the disagreement of the two networks (0 = they agree, 1 = sure of
  different classes), hidden until the dock's toggle shows it; transparent where they agree, yellow to
  red where they disagree (translucent blending, so the image and the brush stay visible), its contrast
  from 0 to the map's 99.5th percentile: the values are small (a few tenths at most), so a fixed 0..1
  scale would show almost nothing.
Both carry the image's scale, translate and geometry, so they overlay it and save with its geometry.
One case is shown at a time (``focus``): its image, its labels and its results; the other cases' layers
are hidden.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..jobs import contrast_top
from ._layers import DISAGREEMENT, GEOMETRY, KEY, PREDICTION, class_features, role, source

PREDICTION_OPACITY, PREDICTION_CONTOUR = 0.9, 1  # outlines one pixel thick
# RGBA from agree to disagree: transparent up to 30 % of the contrast limit (where the networks nearly agree the
# image stays untinted), then yellow-orange to red
UNSURE_COLORS = [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [1.0, 0.6, 0.0, 0.5], [1.0, 0.0, 0.0, 0.9]]
UNSURE_CONTROLS = [0.0, 0.3, 0.65, 1.0]
DISAGREEMENT_STYLE = {"blending": "translucent", "opacity": 0.7}


def prediction_name(image: str) -> str:
    return f"{image} pred"


def disagreement_name(image: str) -> str:
    return f"{image} unsure"


def unsure_colormap() -> Any:
    """Transparent where the two networks agree, yellow to red where they disagree."""
    from napari.utils.colormaps import Colormap

    return Colormap(UNSURE_COLORS, controls=UNSURE_CONTROLS, name="dmd unsure")


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
    """Insert a new result layer ``above`` places over its image (below the user's labels), the layer selection
    left as the user had it: napari makes the layer it inserts the only selected one, which is undone before
    anyone is told (the selection's events held), so a result never takes the user's next brush stroke."""
    layers = viewer.layers
    index = layers.index(image_layer) + above if image_layer in layers else len(layers)
    selection = layers.selection
    chosen, active = set(selection), selection.active
    with selection.events.blocker_all():
        layers.insert(min(index, len(layers)), layer)
        if active is not None:
            selection.active = active
        else:
            selection.clear()
            selection.update(chosen)
    return layer


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
    pred = Labels(labels, **kwargs)
    pred.contour = PREDICTION_CONTOUR
    pred = _insert(viewer, pred, image_layer)
    pred.events.paint.connect(lambda _event, layer=pred: set_edited(layer, True))
    return pred


def show_disagreement(viewer: Any, image: str, disagreement: np.ndarray, top: float | None = None,
                      visible: bool = False) -> Any:
    """Add or refresh the disagreement layer of the image layer named ``image``; its contrast is 0..``top``
    (default: the map's 99.5th percentile, ``contrast_top``). A new layer is ``visible`` or hidden; a refreshed
    one keeps its visibility."""
    from napari.layers import Image

    top = contrast_top(disagreement) if top is None else top
    dis = find_layer(viewer, disagreement_name(image), DISAGREEMENT)
    if dis is not None and dis.data.shape == disagreement.shape:
        dis.data = disagreement
        dis.contrast_limits = (0.0, top)
        return dis
    image_layer = find_layer(viewer, image)
    place = _placement(image_layer)
    kwargs = dict(place, name=disagreement_name(image), contrast_limits=(0.0, top), colormap=unsure_colormap(),
                  visible=visible, **DISAGREEMENT_STYLE)
    kwargs["metadata"] = {**place["metadata"], KEY: {"role": DISAGREEMENT, "source": image}}
    above = 2 if find_layer(viewer, prediction_name(image), PREDICTION) is not None else 1
    return _insert(viewer, Image(disagreement, **kwargs), image_layer, above)


def stack(viewer: Any, channels: list[str], over: list[str | None]) -> None:
    """Draw the image layers ``channels`` of one case as one picture: the channels after the first blend
    additively over it, and all of them lie under the case's labels and results (``over``), whatever order
    they were opened in."""
    layers = viewer.layers
    present = [n for n in channels if n in layers]
    for name in present[1:]:
        if layers[name].blending != "additive":
            layers[name].blending = "additive"
    tops = [layers.index(n) for n in over if n is not None and n in layers]
    floor = min(tops, default=len(layers))
    for name in present:
        index = layers.index(name)
        if index > floor:
            layers.move(index, floor)  # just under the lowest of them, which moves up one
            floor += 1


def slider_number(viewer: Any, image: str, index: int) -> str:
    """Slice ``index`` of ``image`` as napari's slider numbers it (its world position: the layer's scale and
    translate, counted from the first slice of all layers); '—' for a 2D image. Every slice number the user
    reads is this one; the array index stays in files."""
    if image not in viewer.layers or viewer.layers[image].ndim < 3:
        return "—"
    layer = viewer.layers[image]
    point = np.zeros(layer.ndim)
    point[0] = index
    world = float(np.asarray(layer.data_to_world(point))[0])
    start, _stop, step = viewer.dims.range[viewer.dims.ndim - layer.ndim]
    return str(int(round((world - start) / step))) if step else str(index)


def go_to(viewer: Any, image: str, index: int | None, pairs: dict[str, str | None] | None = None,
          unsure: bool = False) -> None:
    """Show the case of ``image`` alone (``focus``) and move the viewer to slice ``index`` along the image's
    first axis (None: stay)."""
    image_layer = find_layer(viewer, image)
    focus(viewer, image, pairs, unsure)
    if image_layer is None or index is None or image_layer.ndim < 3:
        return
    axis = viewer.dims.ndim - image_layer.ndim  # the layer's axis 0 in world axes
    world = float(image_layer.translate[0] + index * image_layer.scale[0])
    viewer.dims.set_point(axis, world)


def case_of(viewer: Any, pairs: dict[str, str | None] | None = None) -> dict[str, str]:
    """Layer name -> the image (case) it belongs to, for the user's image and labels layers: ``pairs`` maps each
    image to its labels layer (default: the user's image layers, labels matched by name)."""
    from napari.layers import Image, Labels

    from ..pairing import base_name

    if pairs is None:
        images = [la.name for la in viewer.layers if isinstance(la, Image) and role(la) is None]
        keys = {base_name(n): n for n in images}
        pairs = {n: None for n in images}
        for la in viewer.layers:
            if isinstance(la, Labels) and role(la) is None and base_name(la.name) in keys:
                pairs[keys[base_name(la.name)]] = la.name
    owners = {labels: image for image, labels in pairs.items() if labels}
    owners.update({image: image for image in pairs})
    return owners


def focus(viewer: Any, image: str, pairs: dict[str, str | None] | None = None, unsure: bool = False) -> None:
    """Show the case of ``image``: the image, its labels, its prediction (its disagreement only with ``unsure``);
    hide the other cases' layers and the unpaired labels layers that do not fit its image. Other layers of no
    case (the user's points) are left as they are."""
    from napari.layers import Labels

    owners, shown = case_of(viewer, pairs), find_layer(viewer, image)
    for layer in viewer.layers:
        kind = role(layer)
        case = owners.get(layer.name) if kind is None else source(layer)
        if case is not None:
            layer.visible = case == image and (kind != DISAGREEMENT or unsure)
        elif kind is None and isinstance(layer, Labels) and shown is not None \
                and tuple(layer.data.shape) != tuple(shown.data.shape[:-1] if shown.rgb else shown.data.shape):
            layer.visible = False
