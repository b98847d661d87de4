"""Where a workspace keeps its files: nnU-Net's raw dataset folder, the MSD task folder, or a plain folder.

- nnU-Net: ``imagesTr/`` with one file per channel (``case_0000``, ``case_0001``, ...), ``labelsTr/``,
  optional ``imagesTs/``, and ``dataset.json`` (``channel_names``, ``labels`` by name, ``file_ending``).
- MSD: the same folders with one (possibly 4D) file per case and ``dataset.json``'s ``modality`` and
  ``labels`` by value.
- A plain folder of images: its labels go to ``labels/`` inside it.

napari-dmd's own state lives in the hidden folder ``.napari-dmd/`` inside the workspace. What ``dataset.json``
says is checked against the files: a contradiction is refused with one line naming both.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DataError

DATASET_JSON = "dataset.json"
STATE = ".napari-dmd"  # runs/, predictions/, cache/, history/, the lock, settings.json
NNUNET, MSD, FOLDER = "nnU-Net", "MSD", "folder"


@dataclass(frozen=True)
class Layout:
    """The folders of a workspace and what its ``dataset.json`` declares (empty where it says nothing)."""

    root: Path
    kind: str
    images: Path
    labels: Path
    tests: Path | None
    channel_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    file_ending: str | None = None

    @property
    def state(self) -> Path:
        """napari-dmd's hidden folder inside the workspace."""
        return self.root / STATE

    @property
    def channel_files(self) -> bool:
        """Whether each channel of a case is a file of its own (nnU-Net's ``case_0000``)."""
        return self.kind == NNUNET


def _by_index(table: Any, where: Path, key: str) -> tuple[str, ...]:
    """MSD's {"0": "name", "1": ...} as names in index order; ``DataError`` unless the indices are 0..N-1."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{where}: {key!r} must be a table such as {{\"0\": \"...\"}}")
    try:
        indexed = {int(k): str(v) for k, v in table.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: the keys of {key!r} must be numbers 0, 1, ... ({exc})") from exc
    if sorted(indexed) != list(range(len(indexed))):
        raise DataError(f"{where}: {key!r} numbers {sorted(indexed)}; expected 0..{len(indexed) - 1}")
    return tuple(indexed[i] for i in range(len(indexed)))


def _labels_by_name(table: Any, where: Path) -> tuple[str, ...]:
    """nnU-Net's {"background": 0, "name": 1, ...} as class names in value order."""
    if not isinstance(table, dict) or not table:
        raise DataError(f"{where}: 'labels' must be a table such as {{\"background\": 0, \"tumour\": 1}}")
    if any(isinstance(v, list) for v in table.values()):
        raise DataError(f"{where}: 'labels' declares regions (lists of values), which napari-dmd does not train: "
                        f"give one value per class")
    try:
        by_value = {int(v): str(k) for k, v in table.items()}
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: the values of 'labels' must be whole numbers ({exc})") from exc
    if sorted(by_value) != list(range(len(table))):
        raise DataError(f"{where}: 'labels' has values {sorted(by_value)}; expected 0..{len(table) - 1}, "
                        f"background 0")
    return tuple(by_value[i] for i in range(len(by_value)))


def read_dataset_json(path: Path) -> dict[str, Any]:
    """``dataset.json`` as a dict ({} when there is none); ``DataError`` naming it when it is not a JSON table."""
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read {path.absolute()}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path.absolute()} is not a JSON table (it holds a {type(meta).__name__})")
    return meta


def detect(folder: Path) -> Layout:
    """The layout of the workspace ``folder``; ``DataError`` when it is none or its ``dataset.json`` is unusable."""
    from .io import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"the workspace {folder.absolute()} is not a folder")
    where = folder / DATASET_JSON
    meta = read_dataset_json(where)
    if (folder / "imagesTr").is_dir():
        msd = "modality" in meta
        channels = _by_index(meta["modality" if msd else "channel_names"], where, "modality" if msd else
                             "channel_names") if ("modality" in meta or "channel_names" in meta) else ()
        labels = meta.get("labels")
        classes = () if labels is None else _by_index(labels, where, "labels") if msd else \
            _labels_by_name(labels, where)
        ending = meta.get("file_ending")
        if ending is not None and not (isinstance(ending, str) and ending.startswith(".")):
            raise DataError(f"{where.absolute()}: 'file_ending' must be such as \".nii.gz\", not {ending!r}")
        tests = folder / "imagesTs"
        return Layout(folder, MSD if msd else NNUNET, folder / "imagesTr", folder / "labelsTr",
                      tests if tests.is_dir() else None, channels, classes, ending)
    if not list_images(folder):
        raise DataError(f"{folder.absolute()} is not a workspace: it has no imagesTr/ folder (nnU-Net or MSD "
                        f"layout) and holds no image")
    return Layout(folder, FOLDER, folder, folder / "labels", None)


def dataset_json(channel_names: Sequence[str], class_names: Sequence[str], file_ending: str, cases: int) -> str:
    """The text of nnU-Net's ``dataset.json`` for a new workspace."""
    return json.dumps({"channel_names": {str(i): n for i, n in enumerate(channel_names)},
                       "labels": {n: i for i, n in enumerate(class_names)},
                       "numTraining": cases, "file_ending": file_ending}, indent=1) + "\n"


def create(folder: Path, channel_names: Sequence[str], class_names: Sequence[str],
           file_ending: str = ".nii.gz") -> Layout:
    """A new, empty workspace in nnU-Net's layout (``imagesTr/``, ``labelsTr/``, ``dataset.json``);
    ``DataError`` if ``folder`` already holds one."""
    from .io import write_failure, write_text

    folder = Path(folder)
    if (folder / DATASET_JSON).exists() or (folder / "imagesTr").exists():
        raise DataError(f"{folder.absolute()} already holds a workspace ({DATASET_JSON} or imagesTr/): open it instead")
    if len(class_names) < 2:
        raise DataError("a workspace needs at least 2 class names, background first")
    try:
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(write_failure(folder.absolute(), exc).replace("cannot write", "cannot create", 1)) from exc
    write_text(folder / DATASET_JSON, dataset_json(channel_names, class_names, file_ending, 0))
    return detect(folder)
