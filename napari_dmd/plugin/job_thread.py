"""Drives a run generator (``napari_dmd/jobs.py``) in a thread of its own and hands its messages to the GUI.

The thread always runs the generator to its end, even when the dock or the viewer is gone, so an
aborted run still writes its checkpoint; and it is not a daemon, so the process waits for that
(one training step and a save) before it exits. Nothing here blocks the GUI thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator

from qtpy.QtCore import QObject, Signal


class Runner(QObject):
    """``message`` carries each yielded message to the GUI thread; ``finished`` follows the last one."""

    message = Signal(object)
    finished = Signal()

    def __init__(self, messages: Iterator[object]) -> None:
        super().__init__()
        self._messages = messages
        self._thread = threading.Thread(target=self._drive, name="napari-dmd worker")

    def start(self) -> None:
        self._thread.start()

    def _drive(self) -> None:
        for msg in self._messages:
            self._emit(self.message, msg)
        self._messages = iter(())  # the generator's frame, and what it held, go now
        self._emit(self.finished)

    @staticmethod
    def _emit(signal, *args) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:  # the receiving dock was deleted: keep going, the run must end cleanly
            pass
