"""``napari-dmd``: train, predict and evaluate from the command line, workspaces, napari on one (``open``), the demo.

Bad input ends with one line on stderr and exit status 2; Ctrl-C (SIGINT) and SIGTERM stop a
training after the current step with a checkpoint written (exit status 130 and 143).
"""
from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import DMDError
from .common import Interrupted, raise_interrupted, signals
from .parser import add_setting, build_parser

__all__ = ["add_setting", "build_parser", "main"]


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is running out of memory (CPU or GPU), which torch reports as a RuntimeError."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM."""
    args = build_parser().parse_args(argv)
    try:
        with signals(raise_interrupted):
            code = args.func(args)
    except DMDError as exc:
        print(f"napari-dmd: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not out_of_memory(exc):
            raise
        print(f"napari-dmd: error: out of memory ({str(exc).strip().splitlines()[0][:200]}): lower --patch or the "
              f"batch size, or free memory; every file written is complete", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written, where no clearer message was made
        from ..io import write_failure

        where = Path(exc.filename).absolute() if exc.filename else "a file"
        print(f"napari-dmd: error: {write_failure(where, exc).replace('cannot write', 'cannot use', 1)}",
              file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"napari-dmd: {signal.Signals(signum).name}: stopped; every file written is complete",
              file=sys.stderr)
        return 128 + signum
    return code or 0


