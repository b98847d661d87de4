"""Start/Stop, the progress bar and the status line (the loss curves are placed by the dock): the view
of a run's messages."""
from __future__ import annotations

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..jobs import Finished, Predicting, Started
from ..plan import duration
from .curves import LossCurves

IDLE, PREPARING, PREDICTING, FAILED = "idle", "preparing…", "predicting %v/%m", "failed"


class RunPanel(QWidget):
    """Shows a run; ``offset`` is added to iterations so a warm start continues the model's count."""

    def __init__(self, start, stop, curves: LossCurves) -> None:
        super().__init__()
        self.start_button, self.stop_button = QPushButton("Start training"), QPushButton("Stop")
        self.start_button.clicked.connect(lambda: start())
        self.stop_button.clicked.connect(lambda: stop())
        self.progress = QProgressBar(format=IDLE, value=0)
        self.curves = curves
        self.status = QLabel("Paint labels on a few slices of an image (or open labels), then start.", wordWrap=True)
        self.offset = 0
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    def begin(self, steps: int, text: str, fmt: str = PREPARING) -> None:
        """An empty bar of ``steps`` with the format ``fmt``, and ``text`` in the status line."""
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.progress.setFormat(fmt)
        self.status.setText(text)

    def started(self, msg: Started) -> None:
        """The run is set up: the curves continue from the model's count (a new model starts them anew)."""
        self.offset = msg.trained_before
        if (self.curves.iterations[-1] if self.curves.iterations else 0) != self.offset:
            self.curves.clear()
        self.curves.total = self.offset + msg.total
        patch = "×".join(map(str, msg.plan.patch))
        self.status.setText(f"Training on {msg.plan.device} · patch {patch} · {msg.labeled} labeled + "
                            f"{msg.unlabeled} unlabeled image(s) · precision {msg.precision}")

    def predicting(self, msg: Predicting, counting: bool) -> None:
        """'Predicting…' in the status; ``counting``: the bar counts the images (a prediction-only job)."""
        self.status.setText(f"Predicting {msg.count} image(s) with the model of iteration "
                            f"{self.offset + msg.iteration}…")
        if counting:
            self.progress.setFormat(PREDICTING)

    def step(self, p) -> None:
        """A training step (``napari_dmd.training.Progress``)."""
        self.progress.setMaximum(p.total)
        self.progress.setValue(p.iteration)
        self.progress.setFormat(f"%v/%m · ETA {duration(p.eta)}")
        self.curves.add(self.offset + p.iteration, p.sup_loss, p.distill_loss)
        skipped = f" · {p.skipped} non-finite steps skipped" if p.skipped else ""
        note = f" · {p.note}" if p.note else ""
        self.status.setText(f"{p.device} {p.precision} · {p.its_per_s:.2f} it/s · loss {p.loss:.4f} (supervised "
                            f"{p.sup_loss:.4f}, distillation {p.distill_loss:.4f}) · lr {p.lr:g} · elapsed "
                            f"{duration(p.elapsed)}{skipped}{note}")

    def finished(self, f: Finished, model_iterations: int) -> str:
        """The run's end in the status line: the model's count, the precision that ran, the speed.
        Returns the line."""
        how = "stopped" if f.stopped else "finished"
        speed = f" · {f.speed.iteration_s:.2f} s/iteration" if f.speed else ""
        text = f"Training {how} at iteration {model_iterations} · ran in {f.precision}{speed}"
        self.status.setText(text)
        return text

    def failed(self, message: str) -> None:
        """No stale bar after a failure."""
        self.begin(1, f"Failed: {message}", FAILED)

    def ended(self) -> None:
        """The worker's thread has ended: a bar still preparing or counting predictions goes idle."""
        if self.progress.format() in (PREPARING, PREDICTING):
            self.progress.setFormat(IDLE)

    def set_busy(self, busy: bool) -> None:
        self.start_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
