"""Live loss curves: a small QWidget painting the supervised and distillation losses.

Each loss gets its own strip with its own vertical range (the distillation loss is much smaller
than the supervised one), the latest value written beside its name, its range at the right; the
iterations run along the bottom axis. No plotting library needed.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

SERIES = (("error on your labels (loss)", QColor(80, 170, 255)),
          ("disagreement of the two networks (loss)", QColor(255, 150, 60)))
AXIS = 16  # pixels below the strips: the iteration axis


class LossCurves(QWidget):
    """Two strips of loss against iteration; ``add`` a point per step, ``clear`` for a new run."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(130)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.iterations: list[int] = []
        self.values: tuple[list[float], list[float]] = ([], [])
        self.total = 1

    def clear(self, total: int = 1) -> None:
        self.iterations, self.values, self.total = [], ([], []), max(1, total)
        self.update()

    def show_log(self, path: Path) -> None:
        """The curves of a run's ``log.csv`` (a loaded model's run); empty where there is none or it does not read."""
        self.clear()
        try:
            with open(path, newline="") as f:
                rows = [(int(r["iteration"]), float(r["sup_loss"]), float(r["distill_loss"]))
                        for r in csv.DictReader(f)]
        except (OSError, KeyError, TypeError, ValueError):
            return
        for row in rows:
            self.iterations.append(row[0])
            self.values[0].append(row[1])
            self.values[1].append(row[2])
        self.total = max(1, *self.iterations)
        self.update()

    def add(self, iteration: int, supervised: float, distillation: float) -> None:
        self.iterations.append(iteration)
        self.values[0].append(supervised)
        self.values[1].append(distillation)
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        painter.fillRect(0, 0, w, h, QColor(38, 41, 48))
        strip = (h - AXIS) / len(SERIES)
        x0 = float(self.iterations[0]) if self.iterations else 0.0
        span = max(1.0, self.total - x0)
        grey = QColor(160, 164, 172)
        painter.setPen(QPen(grey))
        painter.drawText(4, h - 3, f"iteration {x0:.0f}")
        end = f"{x0 + span:.0f}"
        painter.drawText(w - 6 - painter.fontMetrics().horizontalAdvance(end), h - 3, end)
        middle = "iterations →"
        painter.drawText((w - painter.fontMetrics().horizontalAdvance(middle)) // 2, h - 3, middle)
        for k, (name, color) in enumerate(SERIES):
            top = k * strip
            values = self.values[k]
            painter.setPen(QPen(QColor(70, 74, 84)))
            painter.drawLine(0, int(top + strip - 1), w, int(top + strip - 1))
            label = name if not values else f"{name} {values[-1]:.4g}"
            painter.setPen(QPen(color))
            painter.drawText(6, int(top + 14), label)
            if len(values) < 2:
                continue
            v = np.asarray(values, dtype=float)
            x = np.asarray(self.iterations, dtype=float)
            if len(v) > 2 * w:  # at most two points per pixel
                pick = np.linspace(0, len(v) - 1, 2 * w).astype(int)
                v, x = v[pick], x[pick]
            finite = np.isfinite(v)
            lo, hi = (float(v[finite].min()), float(v[finite].max())) if finite.any() else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1.0
            painter.setPen(QPen(grey))
            painter.drawText(w - 6 - painter.fontMetrics().horizontalAdvance(f"{hi:.3g}"), int(top + 14), f"{hi:.3g}")
            painter.drawText(w - 6 - painter.fontMetrics().horizontalAdvance(f"{lo:.3g}"), int(top + strip - 4),
                             f"{lo:.3g}")
            ys = top + 18 + (1 - (v - lo) / (hi - lo)) * (strip - 24)
            xs = 4 + (x - x0) / span * (w - 8)
            poly = QPolygonF([QPointF(float(a), float(b)) for a, b in zip(xs, ys) if np.isfinite(b)])
            painter.setPen(QPen(color, 1.5))
            painter.drawPolyline(poly)
        painter.end()
