"""npe2 reader: NIfTI, NRRD, MetaImage files and DICOM folders through SimpleITK.

Each file becomes one layer with ``scale`` from the voxel spacing, ``translate`` from the origin
and the full geometry (spacing, origin, direction) in ``metadata['geometry']``; a file of several channels
(colour, vector or 4D) one image layer per channel, named as nnU-Net names channel files (``case_0000``,
``case_0001``, ...), so the dock takes them as the channels of one case. A file opens as
Labels when its voxels are integers with at most ``MAX_LABEL_VALUES`` distinct values and its name
or its folder's name says so ('label' or 'seg' in it); everything else opens as an Image. A labels
file's review record (``<case>.reviewed.json`` beside it) comes along in ``metadata['reviewed']``;
without one the labels count as reviewed whole. A workspace folder (one holding ``dataset.json`` or ``imagesTr/``)
opens in the dock as a workspace instead (``open_in_dock``).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import case_name, is_supported, read_channels
from ..review import load_reviewed, sidecar_path
from ._layers import GEOMETRY, REVIEWED

MAX_LABEL_VALUES = 32
LABEL_WORDS = ("label", "seg")

LayerData = tuple[np.ndarray, dict[str, Any], str]


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader function for ``path`` (a file, a DICOM folder, or a list of them), else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) == 1 and is_workspace(paths[0]):
        return open_in_dock
    if not paths or not all(is_supported(p) for p in paths):
        return None
    return read_layers


def is_workspace(path: str | Path) -> bool:
    """Whether ``path`` is a workspace folder (``dataset.json`` or ``imagesTr/`` in it)."""
    path = Path(path)
    return path.is_dir() and ((path / "dataset.json").is_file() or (path / "imagesTr").is_dir())


def open_in_dock(path: str | list[str]) -> list[tuple[None]]:
    """File → Open of a workspace folder: the dock of the current viewer opens it (no layer is returned: the dock
    adds the case in view)."""
    import napari

    from .demo import dock_widget

    folder = path if isinstance(path, (str, Path)) else path[0]
    viewer = napari.current_viewer()
    if viewer is not None:
        dock_widget(viewer).workspace.open(Path(folder))
    return [(None,)]


def looks_like_labels(path: str | Path, array: np.ndarray) -> bool:
    """'label' or 'seg' in the file or folder name, and at most ``MAX_LABEL_VALUES`` distinct
    non-negative whole numbers (label maps stored as floats count too)."""
    path = Path(path)
    named = any(w in part.lower() for part in (path.name, path.parent.name) for w in LABEL_WORDS)
    if not named or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        return False
    values = np.unique(array)
    return len(values) <= MAX_LABEL_VALUES and values.min(initial=0) >= 0 and bool(np.all(values == np.round(values)))


def as_label_array(array: np.ndarray) -> np.ndarray:
    """Whole-number voxels as the smallest fitting unsigned integer type (uint8 for < 256 classes)."""
    top = int(array.max(initial=0))
    dtype = np.uint8 if top < 256 else np.uint16 if top < 65536 else np.uint32
    return array.astype(dtype) if array.dtype != dtype else array


def layer_data(path: str | Path) -> list[LayerData]:
    """The napari layer-data tuples of the image at ``path``: one, or one per channel (views, not copies)."""
    image, geometry = read_channels(path)
    if image.count > 1:
        return [(array, {"name": f"{case_name(path)}_{c:04d}", "scale": geometry.scale,
                         "translate": geometry.translate, "colormap": "gray", "blending": "additive",
                         "metadata": {GEOMETRY: geometry.to_dict(), "path": str(path)}}, "image")
                for c, array in enumerate(image.arrays)]
    array, name = image.arrays[0], case_name(path)
    kind = "labels" if looks_like_labels(path, array) else "image"
    if kind == "labels":
        array = as_label_array(array)
        if not any(w in name.lower() for w in LABEL_WORDS):
            name = f"{name} labels"
    meta: dict[str, Any] = {
        "name": name,
        "scale": geometry.scale,
        "translate": geometry.translate,
        "metadata": {GEOMETRY: geometry.to_dict(), "path": str(path)},
    }
    if kind == "image":
        meta["colormap"] = "gray"
    elif sidecar_path(path).is_file():
        meta["metadata"][REVIEWED] = load_reviewed(sidecar_path(path), array.shape).to_dict()
    return [(array, meta, kind)]


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layer-data tuples for one path or a list of paths."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [layer for p in paths for layer in layer_data(p)]
