"""The 'DMD training' dock: a view of a ``Session`` with the buttons that act on it.

Label a few slices (they count as reviewed) -> train in a worker thread -> see where the two
networks disagree -> correct a prediction and merge the corrections into the labels -> train again.
One case (an image with its labels and results) is in view at a time: the navigator's Previous/Next, a row
of the table or of the ranking, or a layer selected in the layer list show it and hide the others.

The state and its transitions live in ``napari_dmd.session.Session`` (kept in step with the viewer by
``layer_sync.py``). The dock is made of three parts: this module (its column, the session's view, the review
and the merge buttons), ``case_view.py`` (the case in view) and ``run_control.py`` (Start, Predict, Stop and the
worker's messages). The runs are in ``napari_dmd/jobs.py`` (driven by ``job_thread.py``), the merges in
``corrections.py``, the result layers in ``result_refresh.py``; the views in ``case_nav.py``, ``data_table.py``,
``settings_form.py``, ``ranking_view.py``, ``model_box.py`` and ``curves.py``. What the dock did is said in its
own lines (the run's status and notes, the merge line, the model's line); a napari notification is for a problem
only, said once, never a traceback.
"""
from __future__ import annotations

import weakref

import napari.viewer
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from ..config import LOG_NAME
from ..errors import DataError, DMDError
from ..jobs import (
    Control,
    Finished,
    preload,
)
from ..plan import Plan
from ..session import Session
from ._layers import PREDICTION, role
from .case_nav import CaseNavigator
from .case_view import CaseView
from .closing import ClosingHooks
from .corrections import Corrections
from .curves import LossCurves
from .data_panel import DataPanel
from .data_table import TrainingTable
from .job_thread import Runner
from .layer_sync import LayerSync
from .model_box import ModelBox
from .ranking_view import NextBox
from .reader_preference import route_saves
from .result_layers import slider_number
from .result_refresh import ResultQueue
from .run_control import RunControl
from .run_panel import RunPanel
from .settings_form import CANNOT_START, SettingsForm, folding, scrolling_column
from .volume_table import VolumeBox
from .workspace_cases import WorkspaceCases


class DMDWidget(CaseView, RunControl, QWidget):
    """Dock widget: training data and review, settings, Start/Stop, progress, ranking, merge, model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        import torch

        preload()
        self.viewer = napari_viewer
        self.session = Session()
        self.worker: Runner | None = None
        self.control: Control | None = None
        self.last_finished: Finished | None = None
        self._mode: str | None = None
        self._gone: set[str] = set()  # images said to be gone while their results came
        self._run_plan: Plan | None = None  # of the last training set up: its speed is recorded under it
        self._dice_before: float | None = None  # of a continued run: the model's Dice on the reviewed slices
        self._slices: dict[str, int] = {}  # the slice each case was left at
        self._added: str | None = None  # the layer being inserted (napari selects it)
        self._can_start = True  # whether the settings and data make a plan
        self.results = ResultQueue(napari_viewer, self.session)
        self._build(cpu=not torch.cuda.is_available())
        self._timer = QTimer(self, singleShot=True, interval=100)
        self._timer.timeout.connect(self.refresh_view)
        self.sync = LayerSync(napari_viewer, self.session, self._schedule, self.results.queue,
                              lambda layer, slices: self.corrections.stroke(layer, slices))
        napari_viewer.layers.events.inserted.connect(self._inserted)
        napari_viewer.layers.selection.events.active.connect(self._follow)
        napari_viewer.layers.selection.events.active.connect(self._schedule)
        napari_viewer.layers.selection.events.active.connect(self._look)
        napari_viewer.layers.selection.events.active.connect(self._update_buttons)
        napari_viewer.dims.events.current_step.connect(self._look)
        self.corrections = Corrections(napari_viewer, self.session, self.sync.store, self._after_merge,
                                       self.next.merged.setText)
        me = weakref.ref(self)
        self.closing = ClosingHooks(self, lambda: me() is not None and me().shutdown())
        shown = [n for n in self.session.images if napari_viewer.layers[n].visible]
        route_saves(napari_viewer)
        if self.session.images:  # the first case shown alone; the selection moves to it unless already there
            first, active = (shown or list(self.session.images))[0], napari_viewer.layers.selection.active
            self.show_case(first, select=active is None or self._case_of(active) != first)
        else:
            self.refresh_view()
        self._update_buttons()

    def _build(self, cpu: bool) -> None:
        """One scrolling column whose first screen holds the data, Start, progress and the ranking:
        the settings fold away at Start (their summary stays in the title), the curves, the merge
        and the model follow below."""
        self.scroll, outer = scrolling_column(self)
        self.workspace = WorkspaceCases(self)
        self.table = TrainingTable(self._on_include, self._on_pair, self.show_case, self._on_group)
        self.nav = CaseNavigator(self._go_case, self._show_unsure)
        self.data = DataPanel(self.nav, self.table, self.workspace.box.open_button)
        self.settings = SettingsForm(cpu)
        self.settings_box = folding(self.settings)
        self.run = RunPanel(self.start, self.stop, LossCurves())
        self.next = NextBox(self._go, self.mark_slice, self.merge_prediction, lambda: self.corrections.undo())
        self.model_box = ModelBox(self.session, self.settings.device, self.predict,
                                  self._model_loaded)
        curves = QGroupBox("Loss curves")
        QVBoxLayout(curves).addWidget(self.run.curves)
        self.volumes = VolumeBox()
        for w in (self.workspace.box, self.data, self.settings_box, self.run, self.next, self.volumes, curves,
                  self.model_box):
            outer.addWidget(w)
        outer.addStretch(1)
        self.settings.on_change(self._schedule)

    # ---------------------------------------------------------------- the session's view
    def refresh_view(self) -> None:
        """Show the session: the case in view, the training data, its review record, what Start will do."""
        cases = self.session.grouping.cases()
        if self.nav.case not in cases and cases:  # the case in view was removed or is a channel of another now
            self.show_case(self.session.grouping.case_of(self.nav.case) or cases[0], select=False)
        image = self._current_image()
        self.data.show_session(self.session)
        if self.workspace.ws is not None:  # the cohort, not the layers in the viewer
            self.nav.show_cases(self.workspace.names())
            self.data.summary.setText(self.workspace.summary())
        self.next.show_review(image, self.session.reviewed_for(image) if image else None,
                              lambda index: slider_number(self.viewer, image, index))
        plan, estimate = self.settings.describe_plan(self.session)
        self.settings.plan.setText(plan)
        model, cohort = self.session.current.model, self.workspace if self.workspace.ws is not None else self.session
        self.settings.show_weaker(*cohort.training_counts(),
                                  model.model_iterations if model is not None and self.settings.warm_start.value else 0)
        self.settings_box.setText(f"Settings: {self.settings.summary()}{estimate}")
        self._can_start = not plan.startswith(CANNOT_START)
        if self.run.refusal is not None and self.worker is None and self._can_start:
            try:
                self.session.training_set(self.settings.warm_start.value)
                self.run.resolved()
            except DMDError:
                pass
        self._update_buttons()

    def _go_case(self, name: str) -> None:
        """Show a case: on a workspace, open it (the case in view saved and released)."""
        if self.workspace.ws is not None:
            self.workspace.go(name)
        else:
            self.show_case(name)

    def show_workspace(self, on: bool) -> None:
        """A workspace opened (its case table replaces the table of layers) or closed."""
        self.table.setVisible(not on)
        self.workspace.box.setVisible(on)
        self.refresh_view()

    def _schedule(self, *_changed) -> None:
        """Refresh the view shortly (many edits in a row refresh it once)."""
        self._timer.start()

    def _on_include(self, name: str, checked: bool) -> None:
        self.session.grouping.choice(name).include = checked
        self._schedule()

    def _on_pair(self, name: str, labels: str | None) -> None:
        self.session.pair(name, labels)
        self._schedule()

    def _on_group(self, name: str, case: str | None) -> None:
        self.session.grouping.group(name, case)
        self._schedule()

    def mark_slice(self, reviewed: bool = True) -> None:
        """Mark (or unmark) the current slice of the selected image's labels as reviewed."""
        image = self._current_image()
        try:
            if image is None:
                raise DataError("select an image, its labels or its prediction first")
            index = self._current_index(self.viewer.layers[image])
            self.session.mark(image, 0 if index is None else index, reviewed)
        except DMDError as exc:
            show_warning(str(exc))
            return
        self.sync.store(self.session.pairs()[image])
        self.refresh_view()
        self._fill_ranking()

    # ---------------------------------------------------------------- merge
    def merge_prediction(self, layer=None, whole: bool | None = None, overwrite: bool | None = None):
        """Merge the selected prediction layer's corrections (current slice or whole image, the scope box)."""
        self.results.flush()
        layer = layer or self.viewer.layers.selection.active
        whole = self.next.merge_scope.currentText() == "whole image" if whole is None else whole
        index = None if whole or layer is None else self._current_index(layer)
        return self.corrections.merge(layer, index, self.next.overwrite.isChecked() if overwrite is None else overwrite)

    def _model_loaded(self) -> None:
        """A loaded model: the next Start continues from it; the settings stay folded (the ranking in view)."""
        self.settings.warm_start.value = True
        self.settings_box.collapse(animate=False)
        self.run.curves.show_log(self.session.current.path.parent / LOG_NAME)  # not the previous run's

    def _after_merge(self) -> None:
        self.workspace.autosave()  # a merge: saved now, in the saving thread
        self._update_buttons()
        self.refresh_view()
        self._fill_ranking()

    # ---------------------------------------------------------------- training and prediction
    def _update_buttons(self, *_event) -> None:
        """Each button enabled only where it can act (Start, Mark, Merge, Undo merge, the model's)."""
        if not hasattr(self, "corrections"):
            return  # (the dock is still being built)
        busy, case = self.worker is not None, self._current_image()
        self.run.set_busy(busy, self._can_start)
        self.table.set_busy(busy)
        self.model_box.set_busy(busy)
        self.next.undo_button.setEnabled(bool(self.corrections.records))
        self.next.enable(case is not None and self.session.reviewed_for(case) is not None,
                         role(self.viewer.layers.selection.active) == PREDICTION)

    # ---------------------------------------------------------------- closing
    def event(self, e) -> bool:  # noqa: D102
        if hasattr(self, "closing"):
            self.closing.dock_event(e)
        return super().event(e)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
