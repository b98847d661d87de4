"""The dock's runs (a part of ``DMDWidget``): Start and Predict launch a worker thread (``job_thread.Runner``),
Stop and the dock's closing tell it to end, and its messages are shown as they come (progress, results,
the end of the run). Nothing here waits for the worker.
"""
from __future__ import annotations

from napari.utils.notifications import show_error, show_warning

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
    predict_only,
    train_and_predict,
)
from ..session import reviewed_dice
from ..speed_store import record_speed
from ..workspace_run import WorkspaceJob, predict_on_workspace, train_workspace
from .job_thread import Runner
from .result_layers import slider_number
from .run_panel import IDLE


class RunControl:
    """The worker of the dock's current run and its messages (mixed into ``DMDWidget``)."""

    def start(self) -> None:
        """Check the training data and settings, then train in a worker thread."""
        if self.worker is not None:
            return
        form = self.settings
        before = reviewed_dice(self.session) if form.warm_start.value else None  # the current model's
        try:
            job = self._workspace_job() if self.workspace.ws is not None else \
                self.session.begin_run(form.config, form.options(), form.warm_start.value,
                                       form.run_folder.value.strip() or None)
        except DMDError as exc:
            show_error(str(exc))
            self.run.refused(str(exc))
            return
        self._dice_before = before
        self.settings_box.collapse(animate=False)  # the first screen shows the run and its results
        self.run.begin(job.config.iterations, "Preparing the data and the networks…")
        if not form.weaker.isHidden():  # said again under the status line: the settings fold away now
            self.run.note(form.regime.text())
        for note in [] if isinstance(job, WorkspaceJob) else job.data.notes:  # under the status line, and a warning
            self.run.note(note)
            if not note.startswith("no unlabeled"):
                show_warning(note)
        self._run_plan = None
        self._launch(train_workspace if isinstance(job, WorkspaceJob) else train_and_predict, job)

    def _workspace_job(self) -> WorkspaceJob:
        """A Start on the workspace: the labels in view saved first, then every case trains from its files."""
        ws, form = self.workspace, self.settings
        saved = ws.save_now()
        if saved is not None and saved.error is not None:
            raise DataError(f"not started: the labels of {saved.case} are not saved ({saved.error})")
        if not any(c.label is not None and c.reviewed != 0 and not c.test for c in ws.cases):
            raise DataError("the workspace has no labelled case yet: paint a few slices of a case first")
        names = ws.ws.layout.class_names
        init = self.session.current.path if form.warm_start.value and self.session.current.model is not None \
            else None
        config = form.config(max(2, len(names)), tuple(names), len(ws.cases[0].shape))
        run_dir = ws.ws.new_run()
        self.session.current.begun(run_dir, names)
        return WorkspaceJob(ws.ws.layout.root, config, form.options(), run_dir, init, ws.image_of, len(ws.cases))

    def predict(self) -> None:
        """Predict every ticked image of the model's dimension with the current model."""
        if self.worker is not None:
            return
        current, ws = self.session.current, self.workspace
        if ws.ws is not None and current.model is not None and current.path is not None:  # into the workspace
            self.run.offset = 0
            self.run.begin(len(ws.cases), f"Predicting the {len(ws.cases)} cases of the workspace…")
            self._launch(predict_on_workspace, ws.ws.layout.root, current.model, current.path, len(ws.cases))
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
        self._mode = "train" if func in (train_and_predict, train_workspace) else "predict"
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
        self.workspace.close()
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
            if msg.final and self.workspace.ws is not None:  # written into the workspace: the case in view's shown
                self.workspace.results_written()
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
            if r.name not in self._gone and r.name not in self.workspace.names():  # (a workspace's case left)
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
        cohort = self.workspace.suggestions() if self.worker is None else []
        if cohort:  # a workspace's latest predictions rank every case (one case in view: the index is its number)
            self.next.ranking.show_suggestions(cohort, lambda image, index: str(index))
            self.next.coverage.setText(f"Ranks the {len(self.workspace.results.files)} cases predicted by run "
                                       f"{self.workspace.results.run}.")
            return
        self.next.ranking.show_suggestions(self.session.suggestions(),
                                           lambda image, index: slider_number(self.viewer, image, index))
        self.next.coverage.setText(self.session.ranking_coverage())

    def _on_finished(self, f: Finished) -> None:
        s = self.session
        self.last_finished = f
        s.current.finished(f)
        if self._mode == "train":
            self.settings.warm_start.value = True
            text = self.run.finished(f, s.current.model.model_iterations)
            after = reviewed_dice(s) if self._dice_before is not None else None
            if after is not None:  # what the continued run learnt from the corrections
                text += f" · Dice on your reviewed slices {self._dice_before:.3f} → {after:.3f}"
                self.run.status.setText(text)
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

