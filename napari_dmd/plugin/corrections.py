"""Merging corrected predictions into the labels, and undoing it (napari layers and the session, no Qt)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

from ..errors import DMDError
from ..session import Session
from . import label_merge as merging
from ._layers import CLASS_NAMES, GEOMETRY, PREDICTION, class_features, role, source
from .result_layers import find_layer, set_edited


class Corrections:
    """Merges (and undoes merges) of prediction layers into their images' labels; ``store(name)`` writes a
    labels layer's review record back to the layer, ``changed()`` refreshes the views."""

    def __init__(self, viewer: Any, session: Session, store: Callable[[str], None],
                 changed: Callable[[], None]) -> None:
        self.viewer, self.session, self.store, self.changed = viewer, session, store, changed
        self.records: list[merging.MergeRecord] = []

    def merge(self, layer: Any, index: int | None, overwrite: bool) -> merging.MergeRecord | None:
        """Merge slice ``index`` (None: all) of prediction ``layer`` into its image's labels, one undoable step.

        Writes the user's strokes, and the prediction where the labels are not reviewed yet (or
        everywhere with ``overwrite``); the merged region then counts as reviewed. Without a paired
        labels layer, '<image> labels' is made.
        """
        s = self.session
        if layer is None or role(layer) != PREDICTION:
            show_warning("select a '… prediction' layer (after correcting it) to merge it into the labels")
            return None
        image = source(layer)
        target_name, created = s.pairs().get(image), False
        try:
            if target_name is None:
                target_name, created = self._new_labels(image, layer), True
            target = self.viewer.layers[target_name]
            region = merging.region_of(tuple(layer.data.shape), index)
            proposal = s.results.proposals.get(image)
            record = merging.merge(target, layer.data, proposal, s.reviewed[target_name], region, overwrite, created)
        except DMDError as exc:
            show_error(str(exc))
            return None
        if proposal is not None:  # merged strokes are no longer unmerged corrections
            proposal[region] = layer.data[region]
            set_edited(layer, bool((np.asarray(layer.data) != proposal).any()))
        self.store(target_name)
        self.records.append(record)
        self.changed()
        where = "the whole image" if index is None else f"slice {index}"
        show_info(f"merged {record.count} changed voxels of {where} of '{layer.name}' into '{target_name}', "
                  "now reviewed (Undo merge reverts it)")
        return record

    def _new_labels(self, image: str, like: Any) -> str:
        s, image_layer = self.session, find_layer(self.viewer, image) or like
        meta = {GEOMETRY: dict(like.metadata[GEOMETRY])} if GEOMETRY in like.metadata else {}
        if s.class_names:
            meta[CLASS_NAMES] = list(s.class_names)
        layer = self.viewer.add_labels(np.zeros(like.data.shape, dtype=like.data.dtype), name=f"{image} labels",
                                       scale=tuple(image_layer.scale), translate=tuple(image_layer.translate),
                                       metadata=meta,
                                       features=class_features(s.class_names) if s.class_names else None)
        s.pair(image, layer.name)
        return layer.name

    def undo(self) -> None:
        """Revert the last merge: the labels and their review record get back what it replaced."""
        if not self.records:
            return
        record = self.records.pop()
        if record.layer not in self.viewer.layers:
            show_warning(f"labels '{record.layer.name}' were removed: nothing to undo")
            self.changed()
            return
        name = record.layer.name
        merging.undo(record, self.session.reviewed.get(name))
        self.store(name)
        if record.created and not np.asarray(record.layer.data).any():
            self.viewer.layers.remove(record.layer)
        show_info(f"merge into '{name}' undone")
        self.changed()
