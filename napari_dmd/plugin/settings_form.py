"""The dock's settings form, generated from the settings declared in ``config.py`` (magicgui widgets).

Basic settings (and the dock's own run options) come first, advanced ones in a collapsible
section, then a line saying what Start will do (written by the dock from ``preview.py``). Each
widget's tooltip is the setting's help. ``config()`` builds the ``TrainConfig``, whose
``__post_init__`` is the one place where values are checked.
"""
from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import Field
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, SpinBox, Widget, create_widget
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..config import TrainConfig, declared_settings, label_of
from .preview import parse_patch

INT_MAX = 2**31 - 1
GPU_REFRESH, CPU_REFRESH, CPU_FIRST_REFRESH, CPU_MINUTES = 500, 100, 50, 10


def _float_step(default: float) -> float:
    return 10 ** (math.floor(math.log10(default)) - 1) if default > 0 else 0.01


def setting_widget(f: Field, kind: Any) -> Widget:
    """A magicgui widget for one declared setting of type ``kind``."""
    meta = f.metadata
    options: dict[str, Any] = {"tooltip": meta["help"]}
    if meta["choices"]:
        return ComboBox(value=f.default, choices=list(meta["choices"]), label=label_of(f), **options)
    if kind is int:
        options.update(min=int(meta["minimum"] or 0), max=int(meta["maximum"] or INT_MAX))
    elif kind is float:
        options.update(min=float(meta["minimum"] or 0.0), max=float(meta["maximum"] or 1e6),
                       step=_float_step(f.default))
    elif kind is not str:  # sizes: 'auto' or a list of whole numbers
        return LineEdit(value="auto" if f.default is None else ",".join(map(str, f.default)),
                        label=label_of(f), tooltip=meta["help"] + " ('auto' or e.g. 32,48,32)")
    return create_widget(value=f.default, annotation=kind, label=label_of(f), options=options)


class SettingsForm(QWidget):
    """Training settings and the dock's run options; ``config()`` makes the ``TrainConfig``."""

    def __init__(self, cpu: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        hints = typing.get_type_hints(TrainConfig)
        self.kinds = {f.name: hints[f.name] for f in declared_settings()}
        self.fields = {f.name: setting_widget(f, hints[f.name]) for f in declared_settings()}
        self.refresh_every = SpinBox(value=CPU_REFRESH if cpu else GPU_REFRESH, min=1, max=INT_MAX,
                                     label="refresh results every",
                                     tooltip="predict every image and refresh the result layers this often "
                                             "(iterations)")
        self.first_refresh = SpinBox(value=CPU_FIRST_REFRESH if cpu else 0, min=0, max=INT_MAX,
                                     label="first refresh at",
                                     tooltip="an earlier first look at the results (iteration; 0: none)")
        self.minutes = SpinBox(value=CPU_MINUTES if cpu else 0, min=0, max=100_000, label="stop after (minutes)",
                               tooltip="end training after this much time, whatever the iterations (0: no limit)")
        self.warm_start = CheckBox(value=False, text="continue from the current model",
                                   tooltip="warm start both networks from the last trained or loaded model")
        self.run_folder = LineEdit(value="", label="run folder",
                                   tooltip="where the run writes model.pt, config.json and log.csv; default: a new "
                                           "folder under ~/napari-dmd/runs (a run never overwrites another)")
        basic = [w for f, w in zip(declared_settings(), self.fields.values()) if f.metadata["level"] == "basic"]
        advanced = [w for f, w in zip(declared_settings(), self.fields.values()) if f.metadata["level"] != "basic"]
        self.basic = Container(widgets=[*basic, self.refresh_every, self.first_refresh, self.minutes,
                                        self.warm_start])
        self.advanced_form = Container(widgets=[*advanced, self.run_folder])
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(self.advanced_form.native)
        self.plan = QLabel(wordWrap=True)
        self.plan.setToolTip("where Start runs, in which precision, and how long these settings take on this "
                             "machine (measured by its last run of the same settings)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.basic.native, self.advanced, self.plan):
            layout.addWidget(w)

    def device(self) -> str:
        """The device setting as typed ('auto' when empty)."""
        return self.fields["device"].value.strip() or "auto"

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a setting or run option changes."""
        for widget in (*self.fields.values(), self.refresh_every, self.first_refresh, self.minutes, self.warm_start):
            widget.changed.connect(lambda *_: callback())

    def summary(self) -> str:
        """The main settings in a few words (the title of the folded section)."""
        first = f" (first {self.first_refresh.value})" if self.first_refresh.value else ""
        limit = f" · ≤ {self.minutes.value} min" if self.minutes.value else ""
        warm = " · continue" if self.warm_start.value else ""
        return f"{self.fields['iterations'].value} it. · refresh {self.refresh_every.value}{first}{limit}{warm}"

    def __getitem__(self, name: str) -> Widget:
        """The widget of a declared setting or of a run option."""
        return self.fields[name] if name in self.fields else getattr(self, name)

    def set(self, **values: Any) -> None:
        """Set widgets by name (tests, the demo): settings take their own type, a patch its text."""
        for name, value in values.items():
            widget = self[name]
            widget.value = ",".join(map(str, value)) if isinstance(value, tuple) else value

    def config(self, num_classes: int, class_names: tuple[str, ...], ndim: int) -> TrainConfig:
        """The form as a ``TrainConfig`` (``DataError`` naming what is invalid)."""
        values = {}
        for name, widget in self.fields.items():
            value, kind = widget.value, self.kinds[name]
            if kind not in (int, float, str):
                value = parse_patch(str(value), ndim)
            elif kind is str:
                value = value.strip() or str(TrainConfig.__dataclass_fields__[name].default)
            values[name] = value
        return TrainConfig(num_classes=num_classes, class_names=class_names, **values)
