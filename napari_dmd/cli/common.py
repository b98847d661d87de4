"""What the commands share: signal handling and CSV tables."""
from __future__ import annotations

import csv
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) received outside a training loop."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for SIGINT and SIGTERM inside the block (nothing outside the main thread)."""
    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals stay as they are
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """A CSV table of ``rows`` (columns: ``fields``, else the keys of the first row), written atomically."""
    from ..io import write_text

    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())

