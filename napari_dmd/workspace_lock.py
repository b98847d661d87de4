"""One writer of a workspace at a time: an advisory lock on ``.napari-dmd/lock`` naming the process that holds it.

A second napari-dmd (another napari, another process) finds the lock held and opens the workspace read-only,
told which process holds it and since when; a disk that refuses the lock file opens it read-only too, saying so.
The lock is released when its holder closes the workspace or ends (even by ``kill -9``: the kernel drops it).
"""
from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path

from .errors import DataError

LOCK = "lock"


class WorkspaceLock:
    """The lock of the workspace whose hidden folder is ``state``; ``refused``: why it was not taken (None: held)."""

    def __init__(self, state: Path):
        from .io import write_failure

        self.path = Path(state) / LOCK
        self.refused: str | None = None
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self.refused = write_failure(self.path, exc).replace("cannot write", "cannot hold", 1)
            return
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no advisory locks
            pass
        except BlockingIOError:
            os.close(fd)
            self.refused = f"{self.holder()} holds {self.path.parent.parent.absolute()}: opened read-only"
            return
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": datetime.now().isoformat(timespec="seconds")}).encode())
        self._fd = fd

    def holder(self) -> str:
        """Who holds the lock, as its file says ('another napari-dmd' where it says nothing)."""
        try:
            who = json.loads(self.path.read_text(encoding="utf-8"))
            return f"another napari-dmd (process {who['pid']} on {who['host']}, since {who['since']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another napari-dmd"

    def release(self) -> None:
        """Let another writer take the workspace."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def check_state_writable(state: Path, command: str) -> None:
    """``DataError`` where ``command`` cannot write the workspace's hidden folder ``state`` (a read-only disk)."""
    from .io import write_failure

    probe = Path(state) / f".probe-{os.getpid()}"
    try:
        probe.parent.mkdir(exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"{command} writes into the workspace, and {write_failure(probe.parent.absolute(), exc)}") \
            from exc
