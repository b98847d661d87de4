"""The 'DMD training' dock: a thin Qt shell over the engine.

Label a few volumes -> train in a worker thread -> see where the two networks disagree ->
correct a prediction and merge it into the labels -> train again from the last model.

The work happens in ``worker.py`` (thread, plain messages), ``pairing.py`` (which layers train),
``results.py`` (result layers, ranking) and ``merge.py`` (undoable merge); this module only wires
widgets to them. Every problem is shown as a napari notification, never as a traceback.
"""
import weakref
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import napari
import napari.viewer
import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ..config import TrainConfig
from ..errors import DataError, DMDError
from . import merge as merging
from ._layers import CLASS_NAMES, GEOMETRY, PREDICTION, class_features, role, source
from .curves import LossCurves
from .pairing import LayerInfo, Row, annotated_summary, default_pairs, image_problem, training_set
from .results import edited, find_layer, go_to, prediction_name, rank_slices, set_edited, show_result
from .worker import (
    Control,
    Failed,
    Finished,
    ImageResult,
    Refreshed,
    Started,
    TrainJob,
    predict_only,
    train_and_predict,
)

NONE = "— none —"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RUNS_DIR = Path.home() / "napari-dmd" / "runs"
SHUTDOWN_TIMEOUT_S = 120.0


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def parse_patch(text: str, ndim: int) -> tuple[int, ...] | None:
    """'auto' (or empty) -> None; '32, 48, 32' or '32x48x32' -> a tuple of ``ndim`` sizes."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return None
    try:
        sizes = tuple(int(v) for v in text.replace("x", ",").replace("×", ",").split(",") if v.strip())
    except ValueError:
        raise DataError(f"patch size {text!r}: write 'auto' or {ndim} whole numbers such as "
                        f"{', '.join(['32'] * ndim)}") from None
    if len(sizes) != ndim or min(sizes) < 1:
        raise DataError(f"patch size {text!r}: {ndim} positive sizes are needed for {ndim}D images")
    return sizes


@dataclass
class _Choice:
    include: bool = True
    labels: str | None = None  # the labels layer picked by the user ('' = none)
    manual: bool = False


class _WindowWatcher(QObject):
    """Event filter on the viewer's main window: stops training when the window closes."""

    def __init__(self, callback) -> None:
        super().__init__()
        self.callback = callback

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            if event.spontaneous():  # the user may still cancel in napari's confirm dialog
                QTimer.singleShot(0, lambda: obj.isVisible() or self.callback())
            else:
                self.callback()
        return False


class DMDWidget(QWidget):
    """Dock widget: training data, settings, Start/Stop, progress, ranking, merge, model."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.model = None  # napari_dmd.checkpoint.ModelPair
        self.model_path: Path | None = None
        self.worker = None
        self.control: Control | None = None
        self.run_dir: Path | None = None
        self.merges: list[merging.MergeRecord] = []
        self._choices: dict[str, _Choice] = {}
        self._scores: dict[str, np.ndarray] = {}
        self._ndims: dict[str, int] = {}
        self._in_use: set[str] = set()
        self._missing_warned: set[str] = set()
        self._edit_warned: set[str] = set()
        self._class_names: tuple[str, ...] = ()
        self._watched = None
        self._was_parented = False
        self.last_finished: Finished | None = None
        self._mode: str | None = None
        self._build()
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(150)
        self._refresh_timer.timeout.connect(self.refresh_table)
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_inserted)
        layers.removed.connect(self._on_removed)
        for layer in self.viewer.layers:
            self._watch_layer(layer)
        self.refresh_table()
        self._update_buttons()
        QTimer.singleShot(0, self._watch_window)
        app = QApplication.instance()
        if app is not None:
            me = weakref.ref(self)
            app.aboutToQuit.connect(lambda: me() is not None and me().shutdown())

    # ---------------------------------------------------------------- building the dock
    def _build(self) -> None:
        d = TrainConfig()
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()  # the dock is taller than a small screen: scroll rather than squeeze
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        root.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        outer = QVBoxLayout(body)
        outer.setContentsMargins(4, 4, 4, 4)
        self.setMinimumWidth(420)

        data_box = QGroupBox("Training data")
        v = QVBoxLayout(data_box)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["Use", "Image", "Labels", "Info"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(120)
        self.table.cellClicked.connect(self._on_data_clicked)
        v.addWidget(self.table)
        self.annotated_only = QCheckBox("Annotated slices only")
        self.annotated_only.setChecked(True)
        self.annotated_only.setToolTip("Only slices holding a label count as annotated; the other slices "
                                       "of a labeled volume feed the distillation only. Untick for fully "
                                       "labeled volumes, where empty slices are background.")
        v.addWidget(self.annotated_only)
        self.classes_label = QLabel()
        self.classes_label.setWordWrap(True)
        v.addWidget(self.classes_label)
        outer.addWidget(data_box)

        set_box = QGroupBox("Training (paper defaults)")
        form = QFormLayout(set_box)
        self.iterations = self._spin(1, 10_000_000, d.iterations)
        form.addRow("Iterations", self.iterations)
        self.refresh_every = self._spin(1, 10_000_000, 500)
        self.refresh_every.setToolTip("Predict every image and refresh the result layers this often")
        form.addRow("Refresh results every", self.refresh_every)
        self.warm_start = QCheckBox("Continue from the current model")
        self.warm_start.setToolTip("Warm start both networks from the last trained or loaded model")
        form.addRow(self.warm_start)
        self.advanced = QCollapsible("Advanced")
        adv = QWidget()
        af = QFormLayout(adv)
        af.setContentsMargins(0, 0, 0, 0)
        self.lambda_distill = self._dspin(0, 1000, d.lambda_distill, 3)
        af.addRow("λ (distillation weight)", self.lambda_distill)
        self.lambda_rampup = self._spin(0, 10_000_000, d.lambda_rampup)
        self.lambda_rampup.setToolTip("Ramp λ up from 0 over this many iterations (0: constant λ, as in the "
                                      "paper). Helps when the networks fit the labels slowly.")
        af.addRow("λ ramp-up (iterations)", self.lambda_rampup)
        self.temperature = self._dspin(0.01, 100, d.temperature, 2)
        af.addRow("T (temperature)", self.temperature)
        self.lr = self._dspin(1e-6, 10, d.lr, 6)
        af.addRow("Learning rate", self.lr)
        self.lr_step = self._spin(1, 10_000_000, d.lr_step)
        af.addRow("LR step (iterations)", self.lr_step)
        self.lr_gamma = self._dspin(0.0001, 1, d.lr_gamma, 4)
        af.addRow("LR factor per step", self.lr_gamma)
        self.patch = QLineEdit("auto")
        self.patch.setToolTip("'auto' (from the data) or sizes in array order, e.g. 32,48,32")
        af.addRow("Patch size", self.patch)
        self.labeled_batch = self._spin(1, 256, d.labeled_batch)
        af.addRow("Labeled patches per batch", self.labeled_batch)
        self.unlabeled_batch = self._spin(0, 256, d.unlabeled_batch)
        af.addRow("Unlabeled patches per batch", self.unlabeled_batch)
        self.foreground_fraction = self._dspin(0, 1, d.foreground_fraction, 2)
        self.foreground_fraction.setToolTip("Share of labeled patches centred on a labeled voxel (0: uniform "
                                            "crops, as in the paper). Raise it, e.g. to 0.33, for structures "
                                            "small next to the patch.")
        af.addRow("Foreground-centred share", self.foreground_fraction)
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setEditable(True)
        af.addRow("Device", self.device)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        af.addRow("Precision", self.precision)
        self.checkpoint_every = self._spin(1, 10_000_000, d.checkpoint_every)
        af.addRow("Checkpoint every", self.checkpoint_every)
        self.seed = self._spin(0, 2**31 - 1, d.seed)
        af.addRow("Seed", self.seed)
        self.run_folder = QLineEdit()
        self.run_folder.setPlaceholderText(f"{RUNS_DIR}/<date-time>")
        af.addRow("Run folder", self.run_folder)
        self.advanced.addWidget(adv)
        form.addRow(self.advanced)
        outer.addWidget(set_box)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start training")
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        outer.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.curves = LossCurves()
        outer.addWidget(self.curves)
        self.status = QLabel("Pair a labels layer with its image, then start.")
        self.status.setWordWrap(True)
        outer.addWidget(self.status)

        rank_box = QGroupBox("Label this next (most disagreement first)")
        rv = QVBoxLayout(rank_box)
        self.ranking = QTableWidget(0, 3)
        self.ranking.setHorizontalHeaderLabels(["Disagreement", "Image", "Slice"])
        self.ranking.verticalHeader().setVisible(False)
        self.ranking.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.ranking.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.ranking.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.ranking.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.ranking.setMinimumHeight(140)
        self.ranking.cellClicked.connect(self._on_rank_clicked)
        rv.addWidget(self.ranking)
        outer.addWidget(rank_box)

        merge_box = QGroupBox("Correct and retrain")
        mv = QVBoxLayout(merge_box)
        hint = QLabel("Edit a '… prediction' layer, select it, then merge it into the labels used for training.")
        hint.setWordWrap(True)
        mv.addWidget(hint)
        mh = QHBoxLayout()
        self.merge_scope = QComboBox()
        self.merge_scope.addItems(["current slice", "whole image"])
        self.merge_button = QPushButton("Merge into labels")
        self.merge_button.clicked.connect(lambda: self.merge_prediction())
        self.undo_button = QPushButton("Undo merge")
        self.undo_button.clicked.connect(self.undo_merge)
        mh.addWidget(self.merge_scope)
        mh.addWidget(self.merge_button)
        mh.addWidget(self.undo_button)
        mv.addLayout(mh)
        outer.addWidget(merge_box)

        model_box = QGroupBox("Model")
        mb = QVBoxLayout(model_box)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save…")
        self.save_button.clicked.connect(lambda: self.save_model())
        self.load_button = QPushButton("Load…")
        self.load_button.clicked.connect(lambda: self.load_model())
        self.predict_button = QPushButton("Predict")
        self.predict_button.setToolTip("Predict the ticked images with the current model, without training")
        self.predict_button.clicked.connect(self.predict)
        for b in (self.save_button, self.load_button, self.predict_button):
            row.addWidget(b)
        mb.addLayout(row)
        self.model_label = QLabel("No model yet.")
        self.model_label.setWordWrap(True)
        mb.addWidget(self.model_label)
        outer.addWidget(model_box)
        outer.addStretch(1)

    @staticmethod
    def _spin(lo: int, hi: int, value: int) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setValue(value)
        return s

    @staticmethod
    def _dspin(lo: float, hi: float, value: float, decimals: int) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setDecimals(decimals)
        s.setRange(lo, hi)
        s.setValue(value)
        return s

    # ---------------------------------------------------------------- the training table
    def _image_layers(self) -> list[Image]:
        return [la for la in self.viewer.layers if isinstance(la, Image) and role(la) is None and not la.multiscale]

    def _labels_layers(self) -> list[Labels]:
        return [la for la in self.viewer.layers if isinstance(la, Labels) and role(la) is None and not la.multiscale]

    def _watch_layer(self, layer) -> None:
        layer.events.name.connect(self._schedule_refresh)
        if isinstance(layer, Labels):
            layer.events.paint.connect(self._schedule_refresh)
            layer.events.data.connect(self._schedule_refresh)

    def _schedule_refresh(self, event=None) -> None:
        self._refresh_timer.start()

    def _on_inserted(self, event) -> None:
        self._watch_layer(event.value)
        self._schedule_refresh()

    def _on_removed(self, event) -> None:
        layer = event.value
        if self.worker is not None and layer.name in self._in_use:
            show_warning(f"'{layer.name}' was removed while training: training goes on with the data as it "
                         "was at Start; results of a removed image are not shown")
        if self._scores.pop(layer.name, None) is not None:
            self._fill_ranking()
        self._schedule_refresh()

    def refresh_table(self) -> None:
        """Rebuild the training table from the layers, keeping the user's choices."""
        images, labels = self._image_layers(), self._labels_layers()
        infos = [LayerInfo(la.name, tuple(la.data.shape), bool(la.rgb)) for la in images]
        auto = default_pairs(infos, [LayerInfo(la.name, tuple(la.data.shape)) for la in labels])
        label_names = [la.name for la in labels]
        self.table.blockSignals(True)
        self.table.setRowCount(len(images))
        for r, (layer, info) in enumerate(zip(images, infos)):
            problem = image_problem(info)
            choice = self._choices.setdefault(layer.name, _Choice(include=problem is None))
            if choice.manual and choice.labels and choice.labels not in label_names:
                choice.labels, choice.manual = None, False  # the picked labels layer is gone
            chosen = choice.labels if choice.manual else auto.get(layer.name)
            use = QCheckBox()
            use.setChecked(choice.include)
            use.toggled.connect(partial(self._on_include, layer.name))
            self.table.setCellWidget(r, 0, use)
            self.table.setItem(r, 1, QTableWidgetItem(layer.name))
            combo = QComboBox()
            combo.addItems([NONE] + label_names)
            combo.setCurrentText(chosen or NONE)
            combo.currentTextChanged.connect(partial(self._on_pair, layer.name))
            self.table.setCellWidget(r, 2, combo)
            info_text = problem or self._info(layer, chosen)
            item = QTableWidgetItem(info_text)
            item.setToolTip(info_text)
            self.table.setItem(r, 3, item)
        self.table.blockSignals(False)
        self._update_classes()

    def _info(self, image: Image, labels_name: str | None) -> str:
        shape = "×".join(map(str, image.data.shape))
        if not labels_name:
            return f"{shape} unlabeled"
        lab = self.viewer.layers[labels_name].data
        if tuple(lab.shape) != tuple(image.data.shape):
            return f"{shape}; labels shape {'×'.join(map(str, lab.shape))} differs!"
        return f"{shape}; {annotated_summary(lab)}"

    def _on_include(self, name: str, checked: bool) -> None:
        self._choices.setdefault(name, _Choice()).include = checked

    def _on_pair(self, name: str, text: str) -> None:
        choice = self._choices.setdefault(name, _Choice())
        choice.labels, choice.manual = ("" if text == NONE else text), True
        self._schedule_refresh()

    def _on_data_clicked(self, row: int, column: int) -> None:
        if column == 1 and self.table.item(row, 1) is not None:
            go_to(self.viewer, self.table.item(row, 1).text(), None)

    def pairs(self) -> dict[str, str | None]:
        """Image name -> paired labels layer name (None for unlabeled), as shown in the table."""
        out = {}
        for r in range(self.table.rowCount()):
            text = self.table.cellWidget(r, 2).currentText()
            out[self.table.item(r, 1).text()] = None if text == NONE else text
        return out

    def rows(self) -> list[Row]:
        """The table as ``pairing.Row`` objects (arrays by reference)."""
        rows, pairs = [], self.pairs()
        for r in range(self.table.rowCount()):
            name = self.table.item(r, 1).text()
            image = self.viewer.layers[name]
            labels_name = pairs[name]
            lab = self.viewer.layers[labels_name] if labels_name else None
            names = tuple(lab.metadata.get(CLASS_NAMES) or ()) if lab is not None else None
            rows.append(Row(name, image.data, self.table.cellWidget(r, 0).isChecked(),
                            None if lab is None else lab.data, labels_name, bool(image.rgb), names or None))
        return rows

    def _update_classes(self) -> None:
        try:
            data = training_set(self.rows(), *self._warm_model_info())
            self.classes_label.setText(f"{len(data.labeled)} labeled + {len(data.unlabeled)} unlabeled · "
                                       f"{data.num_classes} classes: {', '.join(data.class_names)}")
        except DMDError as exc:
            self.classes_label.setText(f"Not ready: {exc}")

    def _warm_model_info(self) -> tuple:
        if self.model is not None and self.warm_start.isChecked():
            return self.model.class_names, self.model.ndim
        return None, None

    # ---------------------------------------------------------------- training
    def config(self, num_classes: int, class_names: tuple[str, ...], ndim: int) -> TrainConfig:
        """The settings shown in the dock as a ``TrainConfig`` (``DataError`` if one is invalid)."""
        return TrainConfig(
            num_classes=num_classes, class_names=class_names, iterations=self.iterations.value(),
            lr=self.lr.value(), lr_step=self.lr_step.value(), lr_gamma=self.lr_gamma.value(),
            lambda_distill=self.lambda_distill.value(), lambda_rampup=self.lambda_rampup.value(),
            temperature=self.temperature.value(), patch_size=parse_patch(self.patch.text(), ndim),
            labeled_batch=self.labeled_batch.value(), unlabeled_batch=self.unlabeled_batch.value(),
            foreground_fraction=self.foreground_fraction.value(),
            device=self.device.currentText().strip() or "auto", precision=self.precision.currentText(),
            checkpoint_every=self.checkpoint_every.value(), seed=self.seed.value())

    def start(self) -> None:
        """Check the training data and settings, then train in a worker thread."""
        if self.worker is not None:
            return
        try:
            self.refresh_table()
            data = training_set(self.rows(), *self._warm_model_info())
            config = self.config(data.num_classes, data.class_names, data.ndim)
            init = None
            if self.model is not None and self.warm_start.isChecked():
                init = self.model_path
                if init is None or not Path(init).is_file():
                    raise DataError("the current model has no checkpoint file to continue from: save it first, "
                                    "or untick 'continue from the current model'")
            text = self.run_folder.text().strip()
            self.run_dir = Path(text).expanduser() if text else RUNS_DIR / datetime.now().strftime("%Y%m%d-%H%M%S")
        except DMDError as exc:
            show_error(str(exc))
            return
        for note in data.notes:
            (show_info if note.startswith("no unlabeled") else show_warning)(note)
        self._class_names = data.class_names
        self._in_use = {n for n, _ in data.images} | {r.labels_name for r in self.rows() if r.labels_name}
        self._missing_warned.clear()
        self._edit_warned.clear()
        self._ndims = {n: img.ndim for n, img in data.images}
        self._scores.clear()  # the ranking shows this run's model only
        self.curves.clear(config.iterations)
        self.progress.setRange(0, config.iterations)
        self.progress.setValue(0)
        self.progress.setFormat("preparing…")
        self.status.setText("Preparing the data and the networks…")
        job = TrainJob(data.frozen(), config, self.annotated_only.isChecked(), self.run_dir, init,
                       self.refresh_every.value())
        self._launch(train_and_predict, job)

    def predict(self) -> None:
        """Predict every ticked image of the model's dimension with the current model."""
        if self.worker is not None:
            return
        if self.model is None:
            show_warning("no model yet: train one or load a saved model first")
            return
        images = []
        for row in self.rows():
            problem = image_problem(LayerInfo(row.name, tuple(np.shape(row.image)), row.rgb))
            if not row.include or problem:
                continue
            if np.ndim(row.image) != self.model.ndim:
                show_warning(f"'{row.name}' is {np.ndim(row.image)}D but the model is {self.model.ndim}D: skipped")
                continue
            images.append((row.name, row.image))
        if not images:
            show_warning("no ticked image fits the model: tick the images to predict in the training table")
            return
        self._class_names = self.model.class_names
        self._in_use = {n for n, _ in images}
        self._missing_warned.clear()
        self._edit_warned.clear()
        self._ndims.update({n: np.ndim(i) for n, i in images})
        self._scores.clear()
        self.progress.setRange(0, len(images))
        self.progress.setValue(0)
        self.progress.setFormat("predicting %v/%m")
        self.status.setText(f"Predicting {len(images)} image(s) on {self.model.device}…")
        self._launch(predict_only, self.model, images)

    def _launch(self, func, *args) -> None:
        self.control = Control()
        self._mode = "train" if func is train_and_predict else "predict"
        self.worker = create_worker(func, *args, self.control, _start_thread=False)
        self.worker.yielded.connect(self._on_message)
        self.worker.finished.connect(self._on_worker_finished)
        self._update_buttons()
        self.worker.start()

    def stop(self) -> None:
        """Stop training after the current step (a checkpoint and final predictions follow)."""
        if self.control is None:
            return
        if self._mode == "predict":
            self.control.abort()
        else:
            self.control.stop()
        self.stop_button.setEnabled(False)
        self.status.setText("Stopping after the current step…")

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> bool:
        """Stop the worker without final predictions and wait for its thread (dock or viewer closing).

        The trainer writes its last checkpoint before the thread ends. Returns False on timeout.
        """
        control, worker = self.control, self.worker
        if control is None or worker is None:
            return True
        control.abort()
        done = control.wait(timeout)
        try:
            worker.yielded.disconnect(self._on_message)
        except (TypeError, RuntimeError):
            pass
        return done

    def _on_message(self, msg) -> None:
        if isinstance(msg, Started):
            self.status.setText(f"Training on {msg.device} · patch {'×'.join(map(str, msg.patch))} · "
                                f"{msg.labeled} labeled + {msg.unlabeled} unlabeled image(s)")
        elif isinstance(msg, ImageResult):
            self._show(msg)
        elif isinstance(msg, Refreshed):
            self._fill_ranking()
        elif isinstance(msg, Finished):
            self._on_finished(msg)
        elif isinstance(msg, Failed):
            show_error(msg.message)
            self.status.setText(f"Failed: {msg.message}")
        else:  # napari_dmd.training.Progress
            self._on_progress(msg)

    def _on_progress(self, p) -> None:
        self.progress.setMaximum(p.total)
        self.progress.setValue(p.iteration)
        self.progress.setFormat(f"%v/%m · ETA {_duration(p.eta)}")
        self.curves.add(p.iteration, p.sup_loss, p.distill_loss)
        self.status.setText(f"{p.device} · {p.its_per_s:.2f} it/s · loss {p.loss:.4f} "
                            f"(supervised {p.sup_loss:.4f}, distillation {p.distill_loss:.4f}) · "
                            f"lr {p.lr:g} · elapsed {_duration(p.elapsed)}")

    def _show(self, r: ImageResult) -> None:
        if self._mode == "predict":
            self.progress.setValue(self.progress.value() + 1)
        if find_layer(self.viewer, r.name) is None:
            if r.name not in self._missing_warned:
                self._missing_warned.add(r.name)
                show_warning(f"image '{r.name}' is no longer in the viewer: its prediction is not shown")
            return
        pred = find_layer(self.viewer, prediction_name(r.name), PREDICTION)
        if edited(pred) and r.name not in self._edit_warned:
            self._edit_warned.add(r.name)
            show_warning(f"'{pred.name}' holds your unmerged edits, so it is not refreshed: merge it (whole image) "
                         "or delete it to see the new prediction")
        show_result(self.viewer, r.name, r.labels, r.disagreement, self._class_names)
        self._scores[r.name] = r.slice_scores

    def _fill_ranking(self) -> None:
        ranked = rank_slices(self._scores, self._ndims)
        self.ranking.setRowCount(len(ranked))
        for i, r in enumerate(ranked):
            score = QTableWidgetItem(f"{r.score:.4f}")
            score.setData(Qt.ItemDataRole.UserRole, (r.image, r.index))
            self.ranking.setItem(i, 0, score)
            self.ranking.setItem(i, 1, QTableWidgetItem(r.image))
            self.ranking.setItem(i, 2, QTableWidgetItem("—" if r.index is None else str(r.index)))

    def _on_rank_clicked(self, row: int, column: int) -> None:
        item = self.ranking.item(row, 0)
        if item is None:
            return
        image, index = item.data(Qt.ItemDataRole.UserRole)
        if find_layer(self.viewer, image) is None:
            show_warning(f"image '{image}' is no longer in the viewer")
            return
        go_to(self.viewer, image, index)
        pred = find_layer(self.viewer, prediction_name(image), PREDICTION)
        if pred is not None:
            self.viewer.layers.selection.active = pred

    def _on_finished(self, f: Finished) -> None:
        self.last_finished = f
        self.model = f.model
        if f.checkpoint is not None:
            self.model_path = Path(f.checkpoint)
        if self._mode == "train":
            self.warm_start.setChecked(True)
            how = "stopped" if f.stopped else "finished"
            where = f"; model saved to {self.model_path}" if f.checkpoint else ""
            self.status.setText(f"Training {how} at iteration {f.iteration}{where}")
            if not f.aborted:
                show_info(f"training {how} at iteration {f.iteration}{where}")
        else:
            self.status.setText(f"Predicted with the model of iteration {f.iteration}")
        self._update_model_label()

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._update_buttons()
        if self.progress.format() == "preparing…":
            self.progress.setFormat("idle")

    def _update_buttons(self) -> None:
        busy = self.worker is not None
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.predict_button.setEnabled(not busy)
        self.load_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy and self.model is not None)
        self.table.setEnabled(not busy)
        self.undo_button.setEnabled(bool(self.merges))

    def _update_model_label(self) -> None:
        m = self.model
        if m is None:
            self.model_label.setText("No model yet.")
            return
        where = f" · {self.model_path}" if self.model_path else ""
        self.model_label.setText(f"{m.ndim}D model, {m.num_classes} classes ({', '.join(m.class_names)}), "
                                 f"{m.iteration} iterations, on {m.device}{where}")
        self._update_buttons()

    # ---------------------------------------------------------------- model files
    def save_model(self, path: str | Path | None = None) -> Path | None:
        """Save the current model (both networks, settings, classes) to a .pt file."""
        from ..checkpoint import save_model

        if self.model is None or self.worker is not None:
            show_warning("no model to save yet" if self.model is None else "wait until training has ended")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model", str(self.model_path or "model.pt"),
                                                  "napari-dmd model (*.pt)")
            if not path:
                return None
        path = Path(path)
        try:
            save_model(self.model, path)
        except DMDError as exc:
            show_error(str(exc))
            return None
        self.model_path = path
        self._update_model_label()
        show_info(f"model saved to {path}")
        return path

    def load_model(self, path: str | Path | None = None) -> bool:
        """Load a saved model; it can predict right away and training can continue from it."""
        from ..checkpoint import load_model

        if self.worker is not None:
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load model", "", "napari-dmd model (*.pt);;All files (*)")
            if not path:
                return False
        try:
            model = load_model(Path(path), device=self.device.currentText().strip() or "auto")
        except DMDError as exc:
            show_error(str(exc))
            return False
        except Exception as exc:  # an unexpected file content
            show_error(f"{Path(path).name} does not load as a napari-dmd model ({type(exc).__name__})")
            return False
        self.model, self.model_path = model, Path(path)
        self.warm_start.setChecked(True)
        self._update_model_label()
        self._update_classes()
        show_info(f"loaded {Path(path).name}: {model.ndim}D, classes {', '.join(model.class_names)}")
        return True

    # ---------------------------------------------------------------- merge
    def _current_index(self, layer) -> int | None:
        if layer.ndim < 3:
            return None
        point = np.asarray(self.viewer.dims.point)[-layer.ndim:]
        return int(np.clip(np.round(layer.world_to_data(point)[0]), 0, layer.data.shape[0] - 1))

    def merge_prediction(self, layer=None, whole: bool | None = None) -> merging.MergeRecord | None:
        """Merge the selected (edited) prediction layer into its image's training labels.

        The merge covers the current slice or the whole image (the scope box). Without a paired
        labels layer, a new '<image> labels' layer is made. One undoable step (see merge.py).
        """
        layer = layer or self.viewer.layers.selection.active
        if layer is None or role(layer) != PREDICTION:
            show_warning("select a '… prediction' layer (after editing it) to merge it into the labels")
            return None
        image = source(layer)
        if whole is None:
            whole = self.merge_scope.currentText() == "whole image"
        self.refresh_table()
        target_name = self.pairs().get(image)
        created = False
        try:
            if target_name is None:
                image_layer = find_layer(self.viewer, image)
                meta = {GEOMETRY: dict(layer.metadata.get(GEOMETRY, {}))} if GEOMETRY in layer.metadata else {}
                if self._class_names:
                    meta[CLASS_NAMES] = list(self._class_names)
                target = self.viewer.add_labels(
                    np.zeros(layer.data.shape, dtype=layer.data.dtype), name=f"{image} labels",
                    scale=tuple((image_layer or layer).scale), translate=tuple((image_layer or layer).translate),
                    metadata=meta, features=class_features(self._class_names) if self._class_names else None)
                created = True
                self._choices.setdefault(image, _Choice()).labels = target.name
                self._choices[image].manual = True
            else:
                target = self.viewer.layers[target_name]
            index = None if whole else self._current_index(layer)
            record = merging.merge(target, layer.data, merging.region_of(tuple(layer.data.shape), index), created)
        except DMDError as exc:
            show_error(str(exc))
            return None
        if index is None:
            set_edited(layer, False)  # every correction is in the labels now: refreshes may replace it
        self.merges.append(record)
        self._update_buttons()
        where = "the whole image" if index is None else f"slice {index}"
        show_info(f"merged {record.count} changed voxels of {where} of '{layer.name}' into '{target.name}' "
                  "(Undo merge reverts it)")
        self._schedule_refresh()
        return record

    def undo_merge(self) -> None:
        """Revert the last merge (the labels get back the values it replaced)."""
        if not self.merges:
            return
        record = self.merges.pop()
        self._update_buttons()
        if record.layer not in self.viewer.layers:
            show_warning(f"labels '{record.layer.name}' were removed: nothing to undo")
            return
        merging.undo(record)
        if record.created and not np.asarray(record.layer.data).any():
            self.viewer.layers.remove(record.layer)
        show_info(f"merge into '{record.layer.name}' undone")
        self._schedule_refresh()

    # ---------------------------------------------------------------- closing
    def _watch_window(self) -> None:
        try:
            window = self.window()
        except RuntimeError:  # already deleted
            return
        watched = self._watched() if self._watched is not None else None
        if window is self or window is watched:
            return
        if watched is not None:
            watched.removeEventFilter(self._watcher)
        me = weakref.ref(self)
        self._watcher = _WindowWatcher(lambda: me() is not None and me().shutdown())
        window.installEventFilter(self._watcher)
        self._watched = weakref.ref(window)

    def event(self, e) -> bool:  # noqa: D102
        if e.type() == QEvent.Type.ParentChange:
            if self.parent() is None and self._was_parented:
                self.shutdown()  # the dock was closed
            elif self.parent() is not None:
                self._was_parented = True
                QTimer.singleShot(0, self._watch_window)
        elif e.type() == QEvent.Type.Show:
            self._watch_window()
        return super().event(e)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(event)
