"""What a training run was trained on, kept in its folder (``data.json``): the labeled and unlabeled volumes by
name, so that ``--resume`` continues the run on the same data, or says how the data differ."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .errors import DataError
from .io import write_text

DATA_NAME = "data.json"
SHOWN = 3  # names shown per difference


def data_record(labeled: Sequence[str], unlabeled: Sequence[str]) -> dict[str, list[str]]:
    """The record of a run's volumes, by name."""
    return {"labeled": sorted(labeled), "unlabeled": sorted(unlabeled)}


def write_data_record(run_dir: Path, record: dict[str, list[str]]) -> Path:
    """Write ``record`` into the run folder (atomically); its path."""
    path = Path(run_dir) / DATA_NAME
    write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def _names(names: list[str]) -> str:
    """A few names, and how many more."""
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def check_same_data(checkpoint: Path, record: dict[str, list[str]]) -> None:
    """``DataError`` naming what differs when the run of ``checkpoint`` was trained on other volumes than
    ``record`` lists (a run without a record, from an earlier napari-dmd, is not checked)."""
    path = Path(checkpoint).parent / DATA_NAME
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.absolute()}, the record of the data the run was trained on, is unreadable: restore "
                        f"it, or start a new run from {checkpoint} (--init without --resume)") from exc
    changes = []
    for kind in ("labeled", "unlabeled"):
        old, new = set(before.get(kind, [])), set(record[kind])
        if new - old:
            changes.append(f"{kind} {_names(sorted(new - old))} added")
        if old - new:
            changes.append(f"{kind} {_names(sorted(old - new))} missing")
    if changes:
        raise DataError(f"--resume continues the run of {Path(checkpoint).absolute()} on its data, and the data given "
                        f"differ ({'; '.join(changes)}): give the run's data, or start a new run from it (--init "
                        f"without --resume)")
