"""npe2 sample data: the 12 bundled hippocampus MRI cases, 3 with expert labels.

Only the first case is visible at first; the dock shows another case when its row is clicked.
"""
from __future__ import annotations

from ..sample_data import CLASS_NAMES, sample_cases
from ._layers import CLASS_NAMES as CLASS_NAMES_KEY
from ._layers import class_features
from .reader import LayerData, as_label_array, layer_data


def hippocampus_sample() -> list[LayerData]:
    """Image layers for all cases and Labels layers ('<case> labels') for the labeled ones."""
    layers: list[LayerData] = []
    for i, (image, label) in enumerate(sample_cases()):
        (data, meta, _), = layer_data(image)
        meta["visible"] = i == 0
        layers.append((data, meta, "image"))
        if label is not None:
            (data, meta, _), = layer_data(label)
            data = as_label_array(data)
            meta.update(name=f"{meta['name'].removesuffix(' labels')} labels", visible=i == 0,
                        features=class_features(CLASS_NAMES))
            meta["metadata"][CLASS_NAMES_KEY] = list(CLASS_NAMES)
            layers.append((data, meta, "labels"))
    return layers
