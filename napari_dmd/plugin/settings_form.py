"""The dock's settings form, generated from the settings declared in ``config.py`` (magicgui widgets).

Basic settings (and the dock's own run options) come first, advanced ones in a collapsible
section, then a line saying what Start will do (written by the dock from ``plan.py``). Each
widget's tooltip is the setting's help. ``config()`` builds the ``TrainConfig`` and ``options()`` the
``RunOptions``, whose ``__post_init__`` is the one place where values are checked.
"""
from __future__ import annotations

import math
import typing
from collections.abc import Callable
from dataclasses import Field
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, LineEdit, Widget, create_widget
from qtpy.QtWidgets import QFrame, QLabel, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..config import RunOptions, TrainConfig, declared_settings, default_of, label_of
from ..errors import DataError
from ..plan import describe_plan, make_plan, parse_patch
from ..regime import weaker_dmd

CANNOT_START = "Start cannot run yet"

INT_MAX = 2**31 - 1


def _float_step(default: float) -> float:
    return 10 ** (math.floor(math.log10(default)) - 1) if default > 0 else 0.01


def setting_widget(f: Field, kind: Any, cpu: bool) -> Widget:
    """A magicgui widget for one declared setting of type ``kind``, at its default where training runs (``cpu``)."""
    meta, default = f.metadata, default_of(f, cpu)
    options: dict[str, Any] = {"tooltip": meta["help"]}
    if meta["choices"]:
        return ComboBox(value=default, choices=list(meta["choices"]), label=label_of(f), **options)
    if kind is int:
        options.update(min=int(meta["minimum"] or 0), max=int(meta["maximum"] or INT_MAX))
    elif kind is float:
        options.update(min=float(meta["minimum"] or 0.0), max=float(meta["maximum"] or 1e6),
                       step=_float_step(default))
    elif kind is not str:  # sizes: 'auto' or a list of whole numbers
        return LineEdit(value="auto" if default is None else ",".join(map(str, default)),
                        label=label_of(f), tooltip=meta["help"] + " ('auto' or e.g. 32,48,32)")
    return create_widget(value=default, annotation=kind, label=label_of(f), options=options)


class SettingsForm(QWidget):
    """Training settings and the dock's run options; ``config()`` makes the ``TrainConfig``."""

    def __init__(self, cpu: bool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        hints = typing.get_type_hints(TrainConfig)
        self.kinds = {f.name: hints[f.name] for f in declared_settings()}
        self.fields = {f.name: setting_widget(f, hints[f.name], cpu) for f in declared_settings()}
        run_hints = typing.get_type_hints(RunOptions)
        self.run_options = {f.name: setting_widget(f, run_hints[f.name], cpu) for f in declared_settings(of=RunOptions)}
        self.warm_start = CheckBox(value=False, text="continue from the current model",
                                   tooltip="warm start both networks from the last trained or loaded model")
        self.run_folder = LineEdit(value="", label="run folder",
                                   tooltip="where the run writes model.pt, config.json and log.csv; default: a new "
                                           "folder under ~/napari-dmd/runs (a run never overwrites another)")
        basic = [w for f, w in zip(declared_settings(), self.fields.values()) if f.metadata["level"] == "basic"]
        advanced = [w for f, w in zip(declared_settings(), self.fields.values()) if f.metadata["level"] != "basic"]
        self.basic = Container(widgets=[*basic, *self.run_options.values(), self.warm_start])
        self.advanced_form = Container(widgets=[*advanced, self.run_folder])
        self.advanced = QCollapsible("Advanced")
        self.advanced.addWidget(self.advanced_form.native)
        self.plan = QLabel(wordWrap=True)
        self.plan.setToolTip("where Start runs, in which precision, and how long these settings take on this "
                             "machine (measured by its last run of the same settings)")
        self.weaker = QWidget()  # where DMD measured below the supervised pair: what was measured, and the pair
        self.regime = QLabel(wordWrap=True)
        pair = QPushButton("Train the supervised pair instead")
        pair.setToolTip("λ 0 and no unlabeled patches: both networks learn from the labels alone (the unlabeled "
                        "images are still predicted)")
        pair.clicked.connect(lambda: self.set(lambda_distill=0.0, unlabeled_batch=0))
        weaker = QVBoxLayout(self.weaker)
        weaker.setContentsMargins(0, 0, 0, 0)
        weaker.addWidget(self.regime)
        weaker.addWidget(pair)
        self.weaker.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.basic.native, self.advanced, self.plan, self.weaker):
            layout.addWidget(w)

    def device(self) -> str:
        """The device setting as typed ('auto' when empty)."""
        return self.fields["device"].value.strip() or "auto"

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a setting or run option changes."""
        for widget in (*self.fields.values(), *self.run_options.values(), self.warm_start):
            widget.changed.connect(lambda *_: callback())

    def summary(self) -> str:
        """The main settings in a few words (the title of the folded section)."""
        run = {name: w.value for name, w in self.run_options.items()}
        first = f" (first {run['first_refresh']})" if run["first_refresh"] else ""
        limit = f" · ≤ {run['minutes']:g} min" if run["minutes"] else ""
        warm = " · continue" if self.warm_start.value else ""
        return f"{self.fields['iterations'].value} it. · refresh {run['refresh_every']}{first}{limit}{warm}"

    def __getitem__(self, name: str) -> Widget:
        """The widget of a declared setting or run option, or of the warm start or run folder."""
        for table in (self.fields, self.run_options):
            if name in table:
                return table[name]
        return getattr(self, name)

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

    def options(self) -> RunOptions:
        """The run options as ``RunOptions`` (``DataError`` naming what is invalid)."""
        return RunOptions(**{name: w.value for name, w in self.run_options.items()})

    def describe_plan(self, session: Any) -> tuple[str, str]:
        """Before Start: the device and precision 'auto' resolve to and the measured time estimate for the
        ``session``'s training data (or ``CANNOT_START``: why not), and the estimated total in a few words
        (' · ≈ 2:00', or '')."""
        shapes, classes = session.training_shapes()
        try:
            plan = make_plan(shapes, classes, self.device(), self["precision"].value, str(self["patch_size"].value),
                             self["labeled_batch"].value + self["unlabeled_batch"].value,
                             session.training_spacing(), session.training_channels(), self["compile"].value)
            options = self.options()
        except DataError as exc:
            return f"{CANNOT_START}: {exc}", ""
        megavoxels = sum(math.prod(shape) for shape in shapes.values()) / 1e6
        return describe_plan(plan, megavoxels, self["iterations"].value, options)

    def show_weaker(self, labeled: int, unlabeled: int, trained_before: int) -> None:
        """Below the plan, where a run of these settings on ``labeled`` and ``unlabeled`` cases (continuing weights
        trained ``trained_before`` iterations) falls where DMD measured below the supervised pair: what was
        measured, and a button that sets the pair up (``regime.weaker_dmd``)."""
        m = weaker_dmd(labeled, unlabeled, trained_before + self["iterations"].value, self["lambda_distill"].value,
                       self["unlabeled_batch"].value)
        self.regime.setText("" if m is None else f"Measured: {m.describe()}.")
        self.weaker.setHidden(m is None)


def folding(form: QWidget) -> QCollapsible:
    """The settings in a box that folds away (its title shows their summary), unfolded at first."""
    box = QCollapsible()
    box.addWidget(form)
    box.layout().setContentsMargins(0, 0, 0, 0)
    box.toggleButton().setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    box.expand(animate=False)
    return box


class StillScroll(QScrollArea):
    """A scroll area that scrolls to the widget taking the focus only when the user moves it (Tab): Qt passes
    the focus on when a focused button is disabled (Start at its own click), which must not scroll the dock."""

    def focusNextPrevChild(self, next: bool) -> bool:  # noqa: N802, A002  (Qt's name)
        leaving = self.focusWidget()
        if leaving is not None and not leaving.isEnabled():  # the focus leaves a widget being disabled
            return QWidget.focusNextPrevChild(self, next)
        return super().focusNextPrevChild(next)


def scrolling_column(dock: QWidget) -> tuple[QScrollArea, QVBoxLayout]:
    """The dock's one scrolling column: the scroll area and the column's layout."""
    root = QVBoxLayout(dock)
    root.setContentsMargins(0, 0, 0, 0)
    scroll = StillScroll(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
    root.addWidget(scroll)
    body = QWidget()
    scroll.setWidget(body)
    column = QVBoxLayout(body)
    column.setSpacing(4)
    dock.setMinimumWidth(540)  # the data table's Info in full
    return scroll, column
