"""Start/Stop, the progress bar and the status line (the loss curves are placed by the dock): the view
of a run's messages.

The bar counts the model's own iterations (a warm start continues from the model's count), its time left
never passes the run's minute limit, and it says no time left once a stop was asked."""
from __future__ import annotations

import re
from pathlib import Path

from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from ..jobs import Finished, Predicting, Preparing, Started
from ..plan import duration, file_size
from .curves import LossCurves

IDLE, PREPARING, PREDICTING, FAILED = "idle", "preparing…", "predicting %v/%m", "failed"
HINT = "Paint labels on a few slices of an image (or open labels), then start."


def precision_words(described: str) -> str:
    """'bf16', 'bf16 (a few layers in fp32)', 'fp32' or 'fp32 (continued in fp32 from iteration N)' from
    ``Precision.describe()`` (the layer names and the self-check's details stay in the run's config.json)."""
    head = described.split(":")[0]
    name = head.split(" except")[0].strip()
    words = f"{name} (a few layers in fp32)" if " except" in head else name
    switched = re.search(r"continued in fp32 from iteration \d+", described)
    return f"{words} ({switched.group(0)})" if switched else words


class RunPanel(QWidget):
    """Shows a run; ``offset`` is added to iterations so a warm start continues the model's count."""

    def __init__(self, start, stop, curves: LossCurves) -> None:
        super().__init__()
        self.start_button, self.stop_button = QPushButton("Start training"), QPushButton("Stop")
        self.start_button.clicked.connect(lambda: start())
        self.stop_button.clicked.connect(lambda: stop())
        self.progress = QProgressBar(format=IDLE, value=0)
        self.curves = curves
        self.status = QLabel(HINT, wordWrap=True)
        self.notes = QLabel(wordWrap=True, visible=False)  # the run's notes (kept while its status changes)
        self.refusal: str | None = None  # the reason Start was refused, while the status line says it
        self.offset = 0
        self.limit: float | None = None  # the run's time limit in seconds
        self._stopping = False
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.notes)

    def begin(self, steps: int, text: str, fmt: str = PREPARING) -> None:
        """An empty bar of ``steps`` with the format ``fmt``, and ``text`` in the status line."""
        self.progress.setRange(0, steps)
        self.progress.setValue(0)
        self.progress.setFormat(fmt)
        self.status.setText(text)
        self._stopping = False
        self.refusal = None
        self.notes.clear()
        self.notes.hide()

    def note(self, text: str) -> None:
        """A note of the run (e.g. no unlabeled image) under its status line, until the next run."""
        self.notes.setText(f"{self.notes.text()}\n{text}".strip())
        self.notes.show()

    def refused(self, message: str) -> None:
        """Start was refused: the reason, in full, in the status line."""
        self.begin(1, f"Cannot start: {message}", IDLE)
        self.refusal = self.status.text()

    def preparing(self, msg: Preparing) -> None:
        """What the run does before its first iteration, and how long it takes."""
        self.status.setText(msg.text)

    def started(self, msg: Started) -> None:
        """The run is set up: the bar and the curves continue from the model's count (a new model starts them
        anew)."""
        self.offset, self.limit = msg.trained_before, msg.limit
        self.progress.setRange(0, self.offset + msg.total)  # (Qt's %m is the count of steps, not the maximum)
        self.progress.setValue(self.offset + msg.start)
        if (self.curves.iterations[-1] if self.curves.iterations else 0) != self.offset:
            self.curves.clear()
        self.curves.total = self.offset + msg.total
        patch = "×".join(map(str, msg.plan.patch))
        self.status.setText(f"Training on {msg.plan.device} · patch {patch} · {msg.labeled} labeled + "
                            f"{msg.unlabeled} unlabeled image(s) · precision {precision_words(msg.precision)}")

    def predicting(self, msg: Predicting, counting: bool) -> None:
        """'Predicting…' in the status; ``counting``: the bar counts the images (a prediction-only job)."""
        self.status.setText(f"Predicting {msg.count} image(s) with the model of iteration "
                            f"{self.offset + msg.iteration}…")
        if counting:
            self.progress.setFormat(PREDICTING)

    def step(self, p) -> None:
        """A training step (``napari_dmd.training.Progress``): the model's iteration, the time left (within the
        minute limit), the two losses in words."""
        self.progress.setRange(0, self.offset + p.total)
        self.progress.setValue(self.offset + p.iteration)
        self.progress.setFormat("%v/%m · stopping…" if self._stopping else f"%v/%m · {self.time_left(p)}")
        self.curves.add(self.offset + p.iteration, p.sup_loss, p.distill_loss)
        skipped = f" · {p.skipped} steps skipped (not finite)" if p.skipped else ""
        note = f" · {p.note}" if p.note else ""
        self.status.setText(f"{p.device} {p.precision} · {p.its_per_s:.2f} iterations/s · error on your labels "
                            f"{p.sup_loss:.4f} · disagreement of the two networks {p.distill_loss:.4f} · "
                            f"running {duration(p.elapsed)}{skipped}{note}")

    def time_left(self, p) -> str:
        """'4:10 left', or '4:10 left (minute limit)' when the limit ends the run first."""
        if self.limit is not None and self.limit - p.elapsed < p.eta:
            return f"{duration(self.limit - p.elapsed)} left (time limit)"
        return f"{duration(p.eta)} left"

    def stopping(self) -> None:
        """A stop was asked: no time left is told any more."""
        self._stopping = True
        self.progress.setFormat("%v/%m · stopping…")
        self.status.setText("Stopping after the current step…")

    def finished(self, f: Finished, model_iterations: int) -> str:
        """The run's end in the bar and the status line: the model's count, the precision that ran, the speed,
        where the model was written and its size. Returns the line."""
        how = "stopped" if f.stopped else "finished"
        self._stopping = False
        self.progress.setFormat(f"%v/%m · {how}")
        speed = f" · {f.speed.iteration_s:.2f} s/iteration" if f.speed else ""
        saved = f" · model saved to {f.checkpoint} ({file_size(Path(f.checkpoint))})" if f.checkpoint else ""
        text = f"Training {how} at iteration {model_iterations} · ran in {precision_words(f.precision)}{speed}{saved}"
        self.status.setText(text)
        return text

    def failed(self, message: str) -> None:
        """No stale bar after a failure."""
        self.begin(1, f"Failed: {message}", FAILED)

    def ended(self) -> None:
        """The worker's thread has ended: a bar still preparing or counting predictions goes idle."""
        if self.progress.format() in (PREPARING, PREDICTING):
            self.progress.setFormat(IDLE)

    def resolved(self) -> None:
        """The cause of a refusal is gone: the status line no longer says it."""
        if self.refusal is not None and self.status.text() == self.refusal:
            self.status.setText(HINT)
        self.refusal = None

    def set_busy(self, busy: bool, can_start: bool = True) -> None:
        """Start only where it can run (``can_start``) and no run is going; Stop only during a run."""
        self.start_button.setEnabled(not busy and can_start)
        self.stop_button.setEnabled(busy)
