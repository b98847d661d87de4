"""Merging corrected predictions into the labels, and undoing it (napari layers and the session, no Qt).

A merge is one step of the labels layer's own undo history (``label_merge``). The dock's 'Undo merge',
Ctrl+Z and Ctrl+Shift+Z on the labels layer all move that history; after each, the review record, the
proposal the strokes are made on and the training table follow the labels (``sync``).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.notifications import show_error, show_warning

from ..errors import DMDError
from ..session import Session
from . import label_merge as merging
from ._layers import CLASS_NAMES, GEOMETRY, PREDICTION, class_features, role, source
from .result_layers import find_layer, set_edited, slider_number


class Corrections:
    """Merges (and undoes merges) of prediction layers into their images' labels; ``store(name)`` writes a
    labels layer's review record back to the layer, ``changed()`` refreshes the views, ``say(line)`` tells what a
    merge or its undo did (the dock's merge line; problems are napari notifications)."""

    def __init__(self, viewer: Any, session: Session, store: Callable[[str], None],
                 changed: Callable[[], None], say: Callable[[str], None]) -> None:
        self.viewer, self.session, self.store, self.changed, self.say = viewer, session, store, changed, say
        self.steps: list[merging.MergeRecord] = []  # every merge (and reversal) whose step napari holds
        self.logs: dict[int, merging.StepLog] = {}  # per user labels layer (by id of the layer itself)
        viewer.layers.events.inserted.connect(self._inserted)
        viewer.layers.events.removed.connect(self._removed)
        for layer in viewer.layers:
            self._follow(layer)

    @property
    def records(self) -> list[merging.MergeRecord]:
        """The merges in effect, oldest first: what 'Undo merge' can revert."""
        return [r for r in self.steps if r.merge and r.in_effect and r.layer in self.viewer.layers]

    def merge(self, layer: Any, index: int | None, overwrite: bool) -> merging.MergeRecord | None:
        """Merge slice ``index`` (None: all) of prediction ``layer`` into its image's labels, one undoable step.

        Writes the user's strokes, and the prediction where the labels are not reviewed yet (or
        everywhere with ``overwrite``); the merged region then counts as reviewed. Without a paired
        labels layer, '<image> labels' is made.
        """
        s = self.session
        if layer is None or role(layer) != PREDICTION:
            show_warning("select a '… pred' layer (after correcting it) to merge it into the labels")
            return None
        image = source(layer)
        target_name, created = s.pairs().get(image), False
        try:
            if target_name is None:
                target_name, created = self._new_labels(image, layer), True
            target = self.viewer.layers[target_name]
            region = merging.region_of(tuple(layer.data.shape), index)
            proposal = s.current.results.proposals.get(image)
            record = merging.merge(target, self._log(target), layer.data, proposal, s.reviewed[target_name], region,
                                   overwrite, created)
        except DMDError as exc:
            show_error(str(exc))
            return None
        record.prediction = layer
        self.steps.append(record)
        self._strokes(record)
        self.store(target_name)
        self.changed()
        where = "the whole image" if index is None else f"slice {slider_number(self.viewer, image, index)}"
        self.say(f"merged {record.count} changed voxels of {where} of '{layer.name}' into '{target_name}', "
                  "now reviewed (Undo merge or Ctrl+Z on the labels reverts it)")
        return record

    def stroke(self, layer: Any, slices: set[int]) -> None:
        """A stroke on a user's labels layer: a new step of its history; the slices it made reviewed (``slices``)
        are unmarked when it is undone and marked again when redone."""
        log = self._log(layer)
        log.stepped()
        if slices and log.last is not None:
            self.steps.append(merging.MergeRecord(_real(layer), None, log.last, frozenset(slices), merge=False))

    def _new_labels(self, image: str, like: Any) -> str:
        s, image_layer = self.session, find_layer(self.viewer, image) or like
        meta = {GEOMETRY: dict(like.metadata[GEOMETRY])} if GEOMETRY in like.metadata else {}
        names = s.current.class_names
        if names:
            meta[CLASS_NAMES] = list(names)
        layer = self.viewer.add_labels(np.zeros(like.data.shape, dtype=like.data.dtype), name=f"{image} labels",
                                       scale=tuple(image_layer.scale), translate=tuple(image_layer.translate),
                                       metadata=meta,
                                       features=class_features(names) if names else None)
        s.pair(image, layer.name)
        return layer.name

    def undo(self) -> None:
        """Revert the last merge in effect: its labels, review record and strokes; the prediction layer merged from
        is selected again. The newest step of the labels is undone as Ctrl+Z would (Ctrl+Shift+Z redoes it); a
        merge followed by other edits is reversed by a new step that leaves those edits alone."""
        records = self.records
        if not records:
            show_warning("no merge to undo")
            self.changed()
            return
        record = records[-1]
        layer, name = record.layer, record.layer.name
        log = self._log(layer)
        if log.last == record.step:
            layer.undo()  # followed by ``sync``
        else:
            reversal = merging.revert(record, log, self.session.reviewed.get(name))
            self.steps.append(reversal)
            self._strokes(reversal)
            self.store(name)
        if record.created and not np.asarray(layer.data).any() and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        if record.prediction is not None and record.prediction in self.viewer.layers:
            self.viewer.layers.selection.active = record.prediction  # its strokes are strokes again: Merge redoes it
        self.say(f"merge into '{name}' undone")
        self.changed()

    def sync(self, layer: Any) -> None:
        """After an undo or redo of ``layer``: each merge step that moved takes its review record and strokes
        along; the layer's statistics are recomputed (napari's undo sends no paint event)."""
        s, log, moved = self.session, self._log(layer), False
        for record in [r for r in self.steps if _real(r.layer) is _real(layer)]:
            state = log.state(record.step)
            if state is None:  # napari let the step go: it stays as it is
                self.steps.remove(record)
            elif state != record.applied:
                merging.follow(record, state, s.reviewed.get(layer.name), self._proposal(record))
                self._strokes(record)
                moved = True
        if layer.name in s.labels:
            s.book.update_stats(layer.name)
            if moved:
                self.store(layer.name)
            self.changed()

    def _proposal(self, record: merging.MergeRecord) -> np.ndarray | None:
        pred = record.prediction
        return None if pred is None else self.session.current.results.proposals.get(source(pred))

    def _strokes(self, record: merging.MergeRecord) -> None:
        """The prediction layer's 'holds unmerged corrections' flag, after a step moved its proposal."""
        pred, proposal = record.prediction, self._proposal(record)
        if pred is not None and proposal is not None and pred in self.viewer.layers \
                and proposal.shape == pred.data.shape:
            set_edited(pred, bool((np.asarray(pred.data) != proposal).any()))

    def _log(self, layer: Any) -> merging.StepLog:
        self._follow(layer)
        return self.logs[id(_real(layer))]

    def _follow(self, layer: Any) -> None:
        """Follow a user's labels layer's history from its start: its strokes are new steps (``stroke``), and its
        undo and redo (Ctrl+Z, Ctrl+Shift+Z: napari calls ``layer.undo()``) move them, then call ``sync``."""
        real = _real(layer)
        if not isinstance(real, Labels) or role(real) is not None or id(real) in self.logs:
            return
        log = self.logs[id(real)] = merging.StepLog()
        real.events.editable.connect(lambda _e: None if real.editable else log.reset())
        me = weakref.ref(self)
        for name, undoing in (("undo", True), ("redo", False)):
            move = getattr(real, name)

            def moved(move=move, undoing=undoing) -> None:
                log.moved(undoing)
                move()
                if me() is not None:
                    me().sync(real)

            setattr(real, name, moved)

    def _inserted(self, event: Any) -> None:
        self._follow(event.value)

    def _removed(self, event: Any) -> None:
        real = _real(event.value)
        if id(real) in self.logs:
            del self.logs[id(real)]
            self.steps = [r for r in self.steps if _real(r.layer) is not real]


def _real(layer: Any) -> Any:
    """The layer itself, not napari's proxy of it (the dock's viewer hands out a new proxy at each look-up)."""
    return getattr(layer, "__wrapped__", layer)
