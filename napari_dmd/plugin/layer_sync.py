"""Keeps a ``Session`` in step with the viewer's own layers, through each layer's own events.

Only the user's single-scale Image and Labels layers are followed; the plugin's result layers
never are. A labels layer's statistics are recomputed only when that layer is painted or given
new data, and its review record is written back to ``layer.metadata['reviewed']`` so that saving
the layer saves the record beside it (see ``writer.py``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.layers import Image, Labels

from ..errors import DMDError
from ..label_book import slices_of
from ..review import Reviewed
from ..session import Session
from ._layers import CLASS_NAMES, REVIEWED, role


def tracked(layer: Any) -> bool:
    """Whether the session follows this layer (a user's single-scale image or labels)."""
    return isinstance(layer, (Image, Labels)) and role(layer) is None and not layer.multiscale


def stored_record(layer: Any) -> Reviewed | None:
    """The review record a labels layer carries in its metadata (from the reader or a save), if any."""
    saved = layer.metadata.get(REVIEWED)
    try:
        return Reviewed.from_dict(saved) if isinstance(saved, dict) else None
    except DMDError:
        return None


class LayerSync:
    """Follows the viewer's layers; ``changed(name)`` is called after a layer was added, edited or removed
    (``None`` when the set of layers changed), ``shown(name)`` when an image layer becomes visible and
    ``stroked(layer, slices)`` after each stroke on a labels layer (one step of its history) with the slices
    it made reviewed."""

    def __init__(self, viewer: Any, session: Session, changed: Callable[[str | None], None],
                 shown: Callable[[str], None], stroked: Callable[[Any, set[int]], None]) -> None:
        self.viewer, self.session, self.changed, self.shown, self.stroked = viewer, session, changed, shown, stroked
        self._names: dict[int, str] = {}
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self._removed)
        for layer in viewer.layers:
            self._follow(layer)

    def _follow(self, layer: Any) -> None:
        if not tracked(layer):
            return
        self._names[id(layer)] = layer.name
        if isinstance(layer, Labels):
            names = tuple(layer.metadata.get(CLASS_NAMES) or ()) or None
            self.session.add_labels(layer.name, layer.data, names, stored_record(layer))
            self.store(layer.name)
            layer.events.paint.connect(self._painted)
        else:
            self.session.add_image(layer.name, layer.data, bool(layer.rgb), tuple(map(float, layer.scale)))
            layer.events.visible.connect(self._visible)
        layer.events.data.connect(self._data)  # bound methods: napari holds them weakly
        layer.events.name.connect(self._renamed)

    def store(self, name: str) -> None:
        """Write the session's review record of labels layer ``name`` into the layer's metadata."""
        rec = self.session.reviewed.get(name)
        if rec is not None and name in self.viewer.layers:
            self.viewer.layers[name].metadata[REVIEWED] = rec.to_dict()

    def _known(self, layer: Any) -> str | None:
        name = self._names.get(id(layer))
        return name if name is not None and layer in self.viewer.layers else None

    def _painted(self, event: Any) -> None:
        layer = event.source
        name = self._known(layer)
        if name is None:
            return
        new = self.session.book.painted(name, slices_of(event.value) if layer.ndim == 3 else {0})
        self.stroked(layer, new)
        self.store(name)
        self.changed(name)

    def _data(self, event: Any) -> None:
        layer = event.source
        name = self._known(layer)
        if name is not None:
            self.session.replace_data(name, layer.data)
            self.store(name)
            self.changed(name)

    def _visible(self, event: Any) -> None:
        layer = event.source
        name = self._known(layer)
        if name is not None and layer.visible:
            self.shown(name)

    def _renamed(self, event: Any) -> None:
        layer = event.source
        old = self._known(layer)
        if old is not None and old != layer.name:
            self.session.rename(old, layer.name)
            self._names[id(layer)] = layer.name
            self.changed(None)

    def _inserted(self, event: Any) -> None:
        self._follow(event.value)
        if tracked(event.value):
            self.changed(None)

    def _removed(self, event: Any) -> None:
        name = self._names.pop(id(event.value), None)
        if name is not None:
            self.session.remove(name)
            self.changed(None)
