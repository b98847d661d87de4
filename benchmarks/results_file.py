"""The benchmarks' result files: JSON written atomically, and merged by key under a lock so that runs in parallel
processes (one seed each, as the benchmarks README runs them) keep each other's results."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_dmd.io import write_text

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; run one process per result file there
    fcntl = None


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file beside ``out`` (POSIX; the file stays, ignored by git)."""
    if fcntl is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(f".{out.name}.lock"), "w") as lock:  # closing the file releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_results(out: Path) -> dict:
    """The JSON object in ``out`` ({} when there is none yet)."""
    return json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}


def save_result(out: Path, key: str, entry: dict) -> None:
    """Merge ``entry`` under ``key`` into the JSON object ``out``: re-read under the lock, written atomically."""
    with _locked(out):
        results = load_results(out)
        results[key] = entry
        save_report(out, results)


def save_report(out: Path, report: dict) -> None:
    """Write a whole JSON report atomically (parents are created)."""
    write_text(out, json.dumps(report, indent=1) + "\n")
