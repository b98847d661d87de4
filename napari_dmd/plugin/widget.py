"""The 'DMD training' dock: a view of a ``Session`` with the buttons that act on it.

Label a few slices (they count as reviewed) -> train in a worker thread -> see where the two
networks disagree -> correct a prediction and merge the corrections into the labels -> train again.
One case (an image with its labels and results) is in view at a time: the navigator's Previous/Next, a row
of the table or of the ranking, or a layer selected in the layer list show it and hide the others.

The state and its transitions live in ``napari_dmd.session.Session`` (kept in step with the viewer by
``layer_sync.py``); the runs in ``napari_dmd/jobs.py`` (driven by ``job_thread.py``), the merges in
``corrections.py``, the result layers in ``result_refresh.py``; the views in ``case_nav.py``, ``data_table.py``,
``settings_form.py``, ``ranking_view.py``, ``model_box.py`` and ``curves.py``. Every problem is a napari
notification, never a traceback.
"""
from __future__ import annotations

import weakref

import napari.viewer
import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QGroupBox, QVBoxLayout, QWidget

from ..config import LOG_NAME
from ..errors import DataError, DMDError
from ..jobs import (
    Control,
    Failed,
    Finished,
    ImageResult,
    Predicting,
    Preparing,
    Refreshed,
    Started,
    View,
    predict_only,
    preload,
    train_and_predict,
)
from ..plan import Plan
from ..ranking import Suggestion
from ..session import Session
from ..speed_store import record_speed
from ._layers import DISAGREEMENT, PREDICTION, role, source
from .case_nav import CaseNavigator, show_channels
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
from .result_layers import disagreement_name, find_layer, go_to, prediction_name, slider_number
from .result_refresh import ResultQueue
from .run_panel import IDLE, RunPanel
from .settings_form import CANNOT_START, SettingsForm, folding, scrolling_column
from .volume_table import VolumeBox


class DMDWidget(QWidget):
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
        self.corrections = Corrections(napari_viewer, self.session, self.sync.store, self._after_merge)
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
        self.table = TrainingTable(self._on_include, self._on_pair, self.show_case, self._on_group)
        self.nav = CaseNavigator(self.show_case, self._show_unsure)
        self.data = DataPanel(self.nav, self.table)
        self.settings = SettingsForm(cpu)
        self.settings_box = folding(self.settings)
        self.run = RunPanel(self.start, self.stop, LossCurves())
        self.next = NextBox(self._go, self.mark_slice, self.merge_prediction, lambda: self.corrections.undo())
        self.model_box = ModelBox(self.session, self.settings.device, self.predict,
                                  self._model_loaded)
        curves = QGroupBox("Loss curves")
        QVBoxLayout(curves).addWidget(self.run.curves)
        self.volumes = VolumeBox()
        for w in (self.data, self.settings_box, self.run, self.next, self.volumes, curves, self.model_box):
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
        self.next.show_review(image, self.session.reviewed_for(image) if image else None,
                              lambda index: slider_number(self.viewer, image, index))
        plan, estimate = self.settings.describe_plan(self.session)
        self.settings.plan.setText(plan)
        self.settings_box.setText(f"Settings: {self.settings.summary()}{estimate}")
        self._can_start = not plan.startswith(CANNOT_START)
        if self.run.refusal is not None and self.worker is None and self._can_start:
            try:
                self.session.training_set(self.settings.warm_start.value)
                self.run.resolved()
            except DMDError:
                pass
        self._update_buttons()

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

    # ---------------------------------------------------------------- the case in view
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
        self._update_buttons()
        self.refresh_view()
        self._fill_ranking()

    # ---------------------------------------------------------------- training and prediction
    def start(self) -> None:
        """Check the training data and settings, then train in a worker thread."""
        if self.worker is not None:
            return
        form = self.settings
        try:
            job = self.session.begin_run(form.config, form.options(), form.warm_start.value,
                                         form.run_folder.value.strip() or None)
        except DMDError as exc:
            show_error(str(exc))
            self.run.refused(str(exc))
            return
        for note in job.data.notes:
            (show_info if note.startswith("no unlabeled") else show_warning)(note)
        self.settings_box.collapse(animate=False)  # the first screen shows the run and its results
        self.run.begin(job.config.iterations, "Preparing the data and the networks…")
        self._run_plan = None
        self._launch(train_and_predict, job)

    def predict(self) -> None:
        """Predict every ticked image of the model's dimension with the current model."""
        if self.worker is not None:
            return
        try:
            images = self.session.begin_prediction()
        except DMDError as exc:
            show_warning(str(exc))
            return
        self.run.offset = 0  # a prediction's messages count the model's own iterations
        self.run.begin(len(images), f"Predicting {len(images)} image(s)…")
        self._launch(predict_only, self.session.current.model, images)

    def _launch(self, func, *args) -> None:
        self._gone.clear()
        self.control = Control()
        self._mode = "train" if func is train_and_predict else "predict"
        self.worker = Runner(func(*args, self.control))
        self.worker.message.connect(self._on_message)
        self.worker.finished.connect(self._on_worker_finished)
        self._look()
        self._update_buttons()
        self.worker.start()

    def stop(self) -> None:
        """Stop training after the current step (a checkpoint and final predictions follow)."""
        if self.control is None:
            return
        self.control.abort() if self._mode == "predict" else self.control.stop()
        self.run.stop_button.setEnabled(False)
        self.run.stopping()

    def shutdown(self) -> None:
        """Abort the worker without waiting (dock or viewer closing): its thread writes the checkpoint and ends."""
        if self.control is not None:
            self.control.abort()
        if self.worker is not None:
            try:
                self.worker.message.disconnect(self._on_message)
            except (TypeError, RuntimeError):
                pass

    def _on_message(self, msg) -> None:
        if isinstance(msg, Started):
            self._run_plan = msg.plan
            self.run.started(msg)
        elif isinstance(msg, Preparing):
            self.run.preparing(msg)
        elif isinstance(msg, Predicting):
            self.run.predicting(msg, counting=self._mode == "predict")
        elif isinstance(msg, ImageResult):
            self._show(msg)
        elif isinstance(msg, Refreshed):
            self._fill_ranking()
        elif isinstance(msg, Finished):
            self._on_finished(msg)
        elif isinstance(msg, Failed):
            show_error(msg.message)
            self.run.failed(msg.message)
        else:  # napari_dmd.training.Progress
            self.run.step(msg)
            if msg.note:  # said once by the engine: a switch to fp32
                show_warning(msg.note)

    def _show(self, r: ImageResult) -> None:
        if self._mode == "predict":
            self.run.progress.setValue(self.run.progress.value() + 1)
        if r.name not in self.session.images:
            if r.name not in self._gone:
                self._gone.add(r.name)
                show_warning(f"image '{r.name}' is no longer in the viewer: its prediction is not shown")
            return
        self.session.show_result(r.name, r.labels, r.disagreement, r.slice_scores, r.rows)
        self.results.tops[r.name] = r.contrast
        if r.name == self.nav.case:
            self._show_volumes()
        if self.viewer.layers[r.name].visible:
            self.results.queue(r.name)

    def _fill_ranking(self) -> None:
        self.next.ranking.show_suggestions(self.session.suggestions(),
                                           lambda image, index: slider_number(self.viewer, image, index))
        self.next.coverage.setText(self.session.ranking_coverage())

    def _look(self, *_event) -> None:
        """Tell a running training what the user looks at: its refreshes predict that slab first."""
        if self.control is None or self.worker is None:
            return
        image = self._current_image()
        layer = next((layer for layer in self.viewer.layers if layer.name == image), None)
        index = None if layer is None else self._current_index(layer)
        self.control.look_at(None if index is None else View(image, index))

    def _go(self, s: Suggestion) -> None:
        if s.image not in self.session.images:
            show_warning(f"image '{s.image}' is no longer in the viewer")
            return
        self.show_case(s.image, s.index, select=False)
        self.results.queue(s.image)
        self.results.show_prediction_now(s.image)
        pred = find_layer(self.viewer, prediction_name(s.image), PREDICTION)
        if pred is not None:
            self.results.select(pred)

    def _on_finished(self, f: Finished) -> None:
        s = self.session
        self.last_finished = f
        s.current.finished(f)
        if self._mode == "train":
            self.settings.warm_start.value = True
            text = self.run.finished(f, s.current.model.model_iterations)
            if not f.aborted:
                show_info(text)
            if f.speed is not None and self._run_plan is not None:
                record_speed(self._run_plan.speed_key(), f.speed)
            self.refresh_view()  # the precision verdict and the speed are known now
        else:
            self.run.begin(1, f"Predicted with the model of iteration {f.iteration}", IDLE)
        self.model_box.describe()

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._update_buttons()
        self.run.ended()

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
