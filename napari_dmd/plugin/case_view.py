"""The dock's case in view (a part of ``DMDWidget``): which case is shown alone, at which slice, following the
layer the user selects, and what a running training is told the user looks at.

Its state (``_slices``: the slice each case was left at; ``_added``: the layer napari is inserting) and that of
the navigator are set up by the dock; the dock's other parts call ``show_case`` and ``_current_image``.
"""
from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer

from ..jobs import View
from ..ranking import Suggestion
from ._layers import DISAGREEMENT, PREDICTION, source
from .case_nav import show_channels
from .result_layers import disagreement_name, find_layer, go_to, prediction_name


class CaseView:
    """The case in view of the dock (mixed into ``DMDWidget``, whose viewer, session and views it uses)."""

    def show_case(self, image: str, index: int | None = None, select: bool = True) -> None:
        """Show the case of ``image`` alone (its image, labels and prediction; its disagreement when toggled
        on) at slice ``index`` (None: where it was left, else its middle slice; the same case stays where it
        is), and with ``select`` select its labels (else the image) for the brush. A channel layer of a case
        shows that case."""
        image = self.session.grouping.case_of(image)
        if image is None or image not in self.viewer.layers:
            return
        old, layer = self._current_image(), self.viewer.layers[image]
        if old is not None and old != image:
            left = self._current_index(self.viewer.layers[old])
            if left is not None:
                self._slices[old] = left
            if index is None and layer.ndim >= 3:
                index = self._slices.get(image, layer.data.shape[0] // 2)
        self.nav.case = image
        pairs = self.session.pairs()
        go_to(self.viewer, image, index, pairs, self.nav.unsure)
        show_channels(self.viewer, self.session.grouping.members(), image, self.nav.hidden)
        self.results.stack(image)
        if select:
            self.results.select(self.viewer.layers[pairs[image]] if pairs.get(image) else layer)
        self._look()
        self.refresh_view()
        self._show_volumes()

    def _show_volumes(self) -> None:
        """The structure volumes of the case in view: its last whole prediction and its labels."""
        case, results = self._current_image(), self.session.current.results
        if case is None:
            return
        labels = self.session.pairs().get(case)
        whole = results.latest.get(case) if case in results.slice_scores else None
        current = self.session.current
        names = current.model.class_names if current.model is not None else current.class_names
        self.volumes.show_case(self.viewer.layers[case], self.viewer.layers[labels] if labels else None, whole,
                               tuple(names))

    def _case_of(self, layer) -> str | None:
        """The case a layer belongs to: its own or the one it is a channel of, the case its labels are paired
        with, or its source's."""
        name = source(layer) or layer.name
        if name in self.session.images:
            return self.session.grouping.case_of(name)
        return next((img for img, lab in self.session.pairs().items() if lab == name), None)

    def _inserted(self, event) -> None:
        """Remember the layer napari inserts (and selects) until the next turn of the event loop (by name: the
        event holds a proxy of it)."""
        self._added = event.value.name
        QTimer.singleShot(0, lambda: setattr(self, "_added", None))

    def _follow(self, *_event) -> None:
        """The case of the layer selected is the case in view; a layer just added hidden (a sample's other
        cases) stays hidden, one added visible (File → Open) is shown alone."""
        layer = self.viewer.layers.selection.active
        if layer is None:  # (napari clears the selection before it selects a layer it inserts)
            return
        case = self._case_of(layer)
        if case is None or case == self.nav.case or (layer.name == self._added and not layer.visible and self.nav.case):
            return
        self.show_case(case, select=False)

    def _show_unsure(self, on: bool) -> None:
        """Show or hide the disagreement layer of the case in view (new ones follow the toggle)."""
        self.results.show_unsure = on
        case = self._current_image()
        layer = None if case is None else find_layer(self.viewer, disagreement_name(case), DISAGREEMENT)
        if layer is not None:
            layer.visible = on

    def _current_image(self) -> str | None:
        """The case in view (None when there is no image)."""
        case = self.nav.case
        return case if case in self.session.images and case in self.viewer.layers else None

    def _current_index(self, layer) -> int | None:
        if layer.ndim < 3:
            return None
        point = np.asarray(self.viewer.dims.point)[-layer.ndim:]
        return int(np.clip(np.round(layer.world_to_data(point)[0]), 0, layer.data.shape[0] - 1))

    def _look(self, *_event) -> None:
        """Tell a running training what the user looks at: its refreshes predict that slab first."""
        if self.control is None or self.worker is None:
            return
        image = self._current_image()
        layer = next((layer for layer in self.viewer.layers if layer.name == image), None)
        index = None if layer is None else self._current_index(layer)
        self.control.look_at(None if index is None else View(image, index))

    def _go(self, s: Suggestion) -> None:
        if self.workspace.ws is not None and s.image in self.workspace.names() and not self.workspace.go(s.image):
            return
        if s.image not in self.session.images:
            show_warning(f"image '{s.image}' is no longer in the viewer")
            return
        self.show_case(s.image, s.index, select=False)
        self.results.queue(s.image)
        self.results.show_prediction_now(s.image)
        pred = find_layer(self.viewer, prediction_name(s.image), PREDICTION)
        if pred is not None:
            self.results.select(pred)

