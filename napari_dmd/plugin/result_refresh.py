"""Result layers shown a layer at a time, only for the images in view, the canvas drawn in between:
napari creates a layer on the GUI thread (a few hundred milliseconds on a small CPU), so the
queue never creates two in one go, and updates an existing layer in place (a few milliseconds).
A new result layer leaves the layer selection as the user had it (``result_layers._insert``)."""
from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer

from ..session import Session
from ._layers import PREDICTION
from .result_layers import (
    disagreement_name,
    edited,
    find_layer,
    prediction_name,
    show_disagreement,
    show_prediction,
    stack,
)

INTERVAL_MS = 30  # between two layers: the canvas is drawn in between


class ResultQueue(QObject):
    """Adds or refreshes queued (image, kind) result layers from the session's latest results."""

    def __init__(self, viewer: Any, session: Session) -> None:
        super().__init__()
        self.viewer, self.session = viewer, session
        self.pending: list[tuple[str, str]] = []
        self.warned: set[str] = set()  # predictions already said to hold unmerged edits
        self.tops: dict[str, float | None] = {}  # each image's disagreement contrast, from the worker thread
        self.show_unsure = False  # whether a new disagreement layer is shown (the dock's toggle)
        self._timer = QTimer(self, interval=INTERVAL_MS)
        self._timer.timeout.connect(self.show_next)

    def queue(self, image: str) -> None:
        """Queue both result layers of ``image`` if it has results."""
        if image not in self.session.current.results.latest:
            return
        for kind in (PREDICTION, "disagreement"):
            if (image, kind) not in self.pending:
                self.pending.append((image, kind))
        self._timer.start()

    def show_next(self) -> None:
        """Add or refresh the first queued layer."""
        if not self.pending:
            self._timer.stop()
            return
        self._show(*self.pending.pop(0))

    def show_prediction_now(self, image: str) -> None:
        """Add or refresh the prediction layer of ``image`` now if queued (the disagreement layer follows
        at the next turn of the event loop, so the viewer never waits for two new layers at once)."""
        if (image, PREDICTION) in self.pending:
            self.pending.remove((image, PREDICTION))
            self._show(image, PREDICTION)

    def _show(self, image: str, kind: str) -> None:
        """Add or refresh one layer (a new one is stacked with its case's)."""
        before = set(self.viewer.layers)
        layer = self._add_or_refresh(image, kind)
        if layer is not None and layer not in before:
            self.stack(image)

    def stack(self, case: str) -> None:
        """The channel layers of ``case`` drawn as one picture under its labels and results (``stack``)."""
        if case in self.session.images:
            stack(self.viewer, self.session.grouping.channels_of(case),
                  [self.session.pairs().get(case), prediction_name(case), disagreement_name(case)])

    def select(self, layer: Any) -> None:
        """Make ``layer`` the active layer (the user's choice: a table row, a ranked slice, a case shown)."""
        self.viewer.layers.selection.active = layer

    def _add_or_refresh(self, image: str, kind: str) -> Any:
        """Add or refresh one layer and return it; a prediction holding unmerged edits, or the results of an image
        hidden since they were queued (another case shown), are left alone."""
        results = self.session.current.results
        if image not in results.latest or image not in self.session.images or not self.viewer.layers[image].visible:
            return None
        if kind != PREDICTION:
            return show_disagreement(self.viewer, image, results.disagreement[image], self.tops.get(image),
                                     self.show_unsure)
        pred = find_layer(self.viewer, prediction_name(image), PREDICTION)
        if edited(pred):
            if image not in self.warned:
                self.warned.add(image)
                show_warning(f"'{pred.name}' holds unmerged corrections, so it is not refreshed: merge them or "
                             "delete the layer to see the new prediction")
            return None
        results.proposals[image] = results.latest[image].copy()  # the user's strokes start from it
        return show_prediction(self.viewer, image, results.latest[image].copy(), self.session.current.class_names)

    def flush(self) -> None:
        """Show every queued layer now (before a merge, a jump to a slice, a test's check)."""
        while self.pending:
            self.show_next()
        self._timer.stop()
