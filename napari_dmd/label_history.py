"""The saved versions of a case's labels: each save keeps the version it replaces, the last ``KEEP`` per case.

A version is the label file and its review record (``<case>.reviewed.json``), kept under
``.napari-dmd/history/<case>/<version>/``, the version named by when it was replaced (UTC, sortable). A label
file is never overwritten when it changed on disk since it was read (another program, another napari): the
caller gives the hash it read, and a different hash is refused with one line.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import DataError
from .outputs import file_hash
from .review import sidecar_path

KEEP = 20  # versions kept per case


def label_hash(path: Path) -> str | None:
    """The SHA-256 of a label file; None where there is none."""
    return file_hash(path) if Path(path).is_file() else None


class LabelHistory:
    """The history of every case of a workspace, in ``folder`` (``.napari-dmd/history``)."""

    def __init__(self, folder: Path, keep: int = KEEP):
        self.folder, self.keep = Path(folder), keep

    def versions(self, case: str) -> list[Path]:
        """The saved versions of ``case``, oldest first (each a folder holding the label file, and its record)."""
        where = self.folder / case
        return sorted(p for p in where.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if where.is_dir() else []

    def check_unchanged(self, label: Path, read_hash: str | None) -> None:
        """``DataError`` unless ``label`` is as it was read (``read_hash``; None: it did not exist)."""
        now = label_hash(label)
        if now != read_hash:
            what = "was created" if read_hash is None else "was deleted" if now is None else "was changed"
            raise DataError(f"{label.absolute()} {what} on disk since napari-dmd read it (by another program?): "
                            f"it is kept, nothing was overwritten; reload the case to see it, or save elsewhere")

    def keep_previous(self, case: str, label: Path) -> Path | None:
        """Keep the current label file of ``case`` and its record as a version (hard links where the disk
        allows, else copies); the version's folder, or None when there is no label file yet."""
        if not label.is_file():
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        version = self.folder / case / stamp
        try:
            version.mkdir(parents=True, exist_ok=False)
            for source in (label, sidecar_path(label)):
                if source.is_file():
                    try:
                        os.link(source, version / source.name)
                    except OSError:
                        shutil.copy2(source, version / source.name)
        except OSError as exc:
            from .io import write_failure

            shutil.rmtree(version, ignore_errors=True)
            raise DataError(write_failure(version, exc) + " (the label history; nothing was saved)") from exc
        return version

    def drop(self, version: Path | None) -> None:
        """Remove a version kept for a save that then failed (the file it keeps is still the current one)."""
        if version is not None:
            shutil.rmtree(version, ignore_errors=True)

    def prune(self, case: str) -> None:
        """Keep the last ``keep`` versions of ``case``."""
        for old in self.versions(case)[: -self.keep or None]:
            shutil.rmtree(old, ignore_errors=True)
