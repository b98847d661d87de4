"""npe2 writers: one Labels or Image layer to .nii.gz/.nii/.nrrd/.mha/.mhd with its geometry.

The geometry comes from what napari shows (layer scale = spacing, translate = origin) and the
direction of the source file kept in ``metadata['geometry']`` by the reader; result layers carry
the geometry of the image they were computed from, so a saved prediction overlays its image.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..io import write_image as _write
from ..review import Reviewed, save_reviewed, sidecar_path
from ._layers import REVIEWED, layer_geometry


def _geometry(data: np.ndarray, meta: dict[str, Any]):
    ndim = np.ndim(data)
    scale = meta.get("scale")
    scale = np.ones(ndim) if scale is None else np.asarray(scale, dtype=float)[-ndim:]
    translate = meta.get("translate")
    translate = np.zeros(ndim) if translate is None else np.asarray(translate, dtype=float)[-ndim:]
    return layer_geometry(scale, translate, meta.get("metadata"))


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer; returns the written path."""
    array = np.asarray(data)
    if array.dtype.kind == "i" and array.size and array.min() >= 0 and array.max() < 256:
        array = array.astype(np.uint8)
    _write(path, array, _geometry(array, meta))
    record = (meta.get("metadata") or {}).get(REVIEWED)
    if isinstance(record, dict):
        save_reviewed(Reviewed.from_dict(record), sidecar_path(path))
    return [path]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (grayscale, 2D or 3D); returns the written path."""
    from ..errors import DataError

    if meta.get("rgb"):
        raise DataError("RGB images cannot be saved as medical images: save a single channel")
    array = np.asarray(data)
    _write(path, array, _geometry(array, meta))
    return [path]
