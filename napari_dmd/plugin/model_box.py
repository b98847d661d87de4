"""The dock's 'Model' box: save and load the model pair, predict with it, and say what it is."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from napari.utils.notifications import show_error, show_warning
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..errors import DMDError
from ..plan import file_size
from ..session import Session


class ModelBox(QGroupBox):
    """Save…, Load…, Predict and a line describing the session's model."""

    def __init__(self, session: Session, device: Callable[[], str], predict: Callable[[], None],
                 loaded: Callable[[], None]) -> None:
        super().__init__("Model")
        self.session, self._device, self._loaded = session, device, loaded
        self.save_button, self.load_button = QPushButton("Save…"), QPushButton("Load…")
        self.predict_button = QPushButton("Predict")
        self.predict_button.setToolTip("predict the ticked images with the current model")
        self.save_button.clicked.connect(lambda: self.save())
        self.load_button.clicked.connect(lambda: self.load())
        self.predict_button.clicked.connect(lambda: predict())
        self.label = QLabel("No model yet.", wordWrap=True)
        self.predict_button.setEnabled(False)  # until a model is trained or loaded
        row = QHBoxLayout()
        for b in (self.save_button, self.load_button, self.predict_button):
            row.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.label)

    def set_busy(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)
        self.predict_button.setEnabled(not busy and self.session.current.model is not None)
        self.save_button.setEnabled(not busy and self.session.current.model is not None)

    def describe(self) -> None:
        m, path = self.session.current.model, self.session.current.path
        where = f" · {path} ({file_size(Path(path))})" if path else ""
        self.label.setText("No model yet." if m is None else
                           f"{m.ndim}D model, {m.num_classes} classes ({', '.join(m.class_names)}), "
                           f"{m.model_iterations} iterations, on {m.device}{where}")
        self.save_button.setEnabled(self.load_button.isEnabled() and m is not None)
        self.predict_button.setEnabled(self.load_button.isEnabled() and m is not None)

    def save(self, path: str | Path | None = None) -> Path | None:
        """Save the current model (both networks, settings, classes) to a .pt file."""
        from ..checkpoint import save_model

        s = self.session
        if s.current.model is None or not self.load_button.isEnabled():
            show_warning("no model to save yet" if s.current.model is None else "wait until training has ended")
            return None
        path = path or QFileDialog.getSaveFileName(self, "Save model", str(s.current.path or "model.pt"),
                                                   "napari-dmd model (*.pt)")[0]
        if not path:
            return None
        try:
            save_model(s.current.model, Path(path))
        except DMDError as exc:
            show_error(str(exc))
            return None
        s.current.saved(Path(path))
        self.describe()  # (its line names where the model was saved)
        return s.current.path

    def load(self, path: str | Path | None = None) -> bool:
        """Load a saved model; it can predict right away and training can continue from it."""
        from ..checkpoint import load_model

        if not self.load_button.isEnabled():
            return False
        path = path or QFileDialog.getOpenFileName(self, "Load model", "", "napari-dmd model (*.pt);;All files (*)")[0]
        if not path:
            return False
        try:
            model = load_model(Path(path), device=self._device())
        except DMDError as exc:
            show_error(str(exc))
            return False
        except Exception as exc:  # an unexpected file content
            show_error(f"{Path(path).name} does not load as a napari-dmd model ({type(exc).__name__})")
            return False
        self.session.current.loaded(model, Path(path))
        self.describe()
        self._loaded()  # (the model's line says what was loaded)
        return True
