"""Stopping a run when the dock or the viewer closes, without blocking the GUI.

Closing asks the worker to abort (training stops after the current step and writes its
checkpoint; a prediction stops within one batch of windows) and returns at once; the worker's
own thread finishes the job (see ``job_thread.py``), also when the application quits.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QApplication, QWidget


class WindowWatcher(QObject):
    """Event filter on the viewer's main window: calls ``callback`` when the window closes."""

    def __init__(self, callback: Callable[[], None]) -> None:
        super().__init__()
        self.callback = callback

    def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            if event.spontaneous():  # the user may still cancel in napari's confirm dialog
                QTimer.singleShot(0, lambda: obj.isVisible() or self.callback())
            else:
                self.callback()
        return False


class ClosingHooks:
    """Calls ``abort()`` when ``dock`` is closed or removed, its window closes or the application quits."""

    def __init__(self, dock: QWidget, abort: Callable[[], None]) -> None:
        self._dock = weakref.ref(dock)
        self._abort = abort
        self._watched = None
        self._watcher = WindowWatcher(self._abort)
        self.was_parented = False
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._abort)

    def watch_window(self) -> None:
        """Follow the dock's current top-level window (it changes when the dock is docked or floated)."""
        dock = self._dock()
        try:
            window = dock.window() if dock is not None else None
        except RuntimeError:  # already deleted
            return
        watched = self._watched() if self._watched is not None else None
        if window is None or window is dock or window is watched:
            return
        if watched is not None:
            watched.removeEventFilter(self._watcher)
        window.installEventFilter(self._watcher)
        self._watched = weakref.ref(window)

    def dock_event(self, e: QEvent) -> None:
        """Feed the dock's own events: a dock taken out of its parent is closing."""
        dock = self._dock()
        if dock is None:
            return
        if e.type() == QEvent.Type.ParentChange:
            if dock.parent() is None and self.was_parented:
                self._abort()
            elif dock.parent() is not None:
                self.was_parented = True
                QTimer.singleShot(0, self.watch_window)
        elif e.type() == QEvent.Type.Show:
            self.watch_window()
