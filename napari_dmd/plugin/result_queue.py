"""Result layers shown a layer at a time, only for the images in view (the GUI never stalls for a refresh)."""
from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_warning
from qtpy.QtCore import QObject, QTimer

from ..session import Session
from ._layers import PREDICTION
from .results import edited, find_layer, prediction_name, show_disagreement, show_prediction

INTERVAL_MS = 30  # between two layers: the canvas is drawn in between


class ResultQueue(QObject):
    """Adds or refreshes queued (image, kind) result layers from the session's latest results."""

    def __init__(self, viewer: Any, session: Session) -> None:
        super().__init__()
        self.viewer, self.session = viewer, session
        self.pending: list[tuple[str, str]] = []
        self.warned: set[str] = set()  # predictions already said to hold unmerged edits
        self._timer = QTimer(self, interval=INTERVAL_MS)
        self._timer.timeout.connect(self.show_next)

    def queue(self, image: str) -> None:
        """Queue both result layers of ``image`` if it has results."""
        if image not in self.session.results.latest:
            return
        for kind in (PREDICTION, "disagreement"):
            if (image, kind) not in self.pending:
                self.pending.append((image, kind))
        self._timer.start()

    def show_next(self) -> None:
        """Add or refresh one queued layer; a prediction holding unmerged edits is left alone."""
        if not self.pending:
            self._timer.stop()
            return
        image, kind = self.pending.pop(0)
        results = self.session.results
        if image not in results.latest or image not in self.session.images:
            return
        if kind != PREDICTION:
            show_disagreement(self.viewer, image, results.disagreement[image])
            return
        pred = find_layer(self.viewer, prediction_name(image), PREDICTION)
        if edited(pred):
            if image not in self.warned:
                self.warned.add(image)
                show_warning(f"'{pred.name}' holds unmerged corrections, so it is not refreshed: merge them or "
                             "delete the layer to see the new prediction")
            return
        results.proposals[image] = results.latest[image].copy()  # the user's strokes start from it
        show_prediction(self.viewer, image, results.latest[image].copy(), self.session.class_names)

    def flush(self) -> None:
        """Show every queued layer now (before a merge, a jump to a slice, a test's check)."""
        while self.pending:
            self.show_next()
        self._timer.stop()
