"""What a training run was trained on, kept in its folder (``data.json``): the labeled and unlabeled volumes by
name, so that ``--resume`` says how the data it is given differ from the run's."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

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


def data_changes(checkpoint: Path, record: dict[str, list[str]]) -> str | None:
    """One line saying how the volumes of ``record`` differ from those the run of ``checkpoint`` was trained on
    (``--resume`` continues it on them: its λ ramp-up, sampling and statistics then meet other data); None when
    they are the same, or the run has no record (an earlier napari-dmd)."""
    path = Path(checkpoint).parent / DATA_NAME
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{path.absolute()}, the record of the data the run was trained on, is unreadable: the data given " \
               f"are not compared with the run's"
    changes = []
    for kind in ("labeled", "unlabeled"):
        old, new = set(before.get(kind, [])), set(record[kind])
        if new - old:
            changes.append(f"{kind} {_names(sorted(new - old))} added")
        if old - new:
            changes.append(f"{kind} {_names(sorted(old - new))} missing")
    if not changes:
        return None
    return (f"--resume continues the run of {Path(checkpoint).absolute()} on other data than it was trained on "
            f"({'; '.join(changes)}); for a run on the new data alone, start one from it (--init without --resume)")
