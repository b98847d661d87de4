"""Names and metadata keys shared by the plugin modules."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..io import Geometry

KEY = "napari_dmd"  # layer.metadata[KEY] = {"role": ..., "source": image layer name}
GEOMETRY = "geometry"  # layer.metadata[GEOMETRY] = Geometry.to_dict()
CLASS_NAMES = "class_names"  # layer.metadata[CLASS_NAMES] = list of names, background first
REVIEWED = "reviewed"  # labels layer.metadata[REVIEWED] = review.Reviewed.to_dict()
PREDICTION, DISAGREEMENT = "prediction", "disagreement"


def class_features(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """A Labels features table naming each class (napari shows it under the cursor)."""
    return {"index": list(range(len(names))), "class": list(names)}


def role(layer: Any) -> str | None:
    """The plugin role of a layer ('prediction', 'disagreement') or None for the user's layers."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(KEY)
    return info.get("role") if isinstance(info, dict) else None


def source(layer: Any) -> str | None:
    """The image layer name a result layer was computed from."""
    info = (getattr(layer, "metadata", None) or {}).get(KEY)
    return info.get("source") if isinstance(info, dict) else None


def layer_geometry(scale: Any, translate: Any, metadata: dict | None) -> Geometry:
    """The geometry to write a layer with: spacing and origin as shown (scale, translate), the
    direction of the source file when the metadata holds one of the same dimension."""
    scale = np.asarray(scale, dtype=float)
    translate = np.asarray(translate if translate is not None else np.zeros_like(scale), dtype=float)
    n = len(scale)
    direction = tuple(np.eye(n).ravel())
    saved = (metadata or {}).get(GEOMETRY)
    if isinstance(saved, dict):
        try:
            geo = Geometry.from_dict(saved)
            if geo.ndim == n:
                direction = geo.direction
        except Exception:  # a damaged dict: fall back to the identity direction
            pass
    return Geometry(spacing=tuple(scale[::-1]), origin=tuple(translate[::-1]), direction=direction)
