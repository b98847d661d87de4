"""Progress on the command line: a bar on a terminal, plain lines where there is none (a scheduler, nohup, a
pipe), so a long run always says how far it is."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm import tqdm as _tqdm

LINE_STEP = 0.1  # without a terminal: a line at every tenth of a prediction's windows


def bar(*args, **kwargs) -> _tqdm:
    """A progress bar on a terminal, nothing when stderr is a file or a pipe."""
    return _tqdm(*args, disable=None, **kwargs)


def windows(name: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A prediction's progress callback ``(done, total)`` for the image ``name``, and a function ending it: a bar
    of its windows on a terminal, else a line at every tenth (with the seconds so far)."""
    if sys.stderr.isatty():
        inner = _tqdm(desc=name, unit="window", leave=False)

        def update(done: int, total: int) -> None:
            inner.total = total
            inner.update(done - inner.n)

        return update, inner.close
    t0, shown = time.perf_counter(), [0.0]

    def line(done: int, total: int) -> None:
        share = done / max(total, 1)
        if share >= shown[0] + LINE_STEP or done == total:
            shown[0] = share
            print(f"{name}: {done}/{total} windows ({share:.0%}), {time.perf_counter() - t0:.0f} s", flush=True)

    return line, lambda: None
