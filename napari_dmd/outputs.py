"""The output guard of every command: nothing is overwritten that napari-dmd did not write, and one
command at a time writes a folder.

Each output folder holds a hidden manifest (``.napari-dmd.json``): for every file a command wrote, the
command and the file's SHA-256 (appended files, such as ``log.csv``, are listed without one). A path is
written only when it is new, or when the manifest says the same command wrote it and the file still has
that hash, so a file a user made or edited is detected and kept. ``.napari-dmd.lock`` (an advisory
``flock``) keeps a second command off a folder while one writes it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DataError

MANIFEST = ".napari-dmd.json"
LOCK = ".napari-dmd.lock"
APPENDED = "appended"  # the hash of a file that grows as it is written (log.csv)


def file_hash(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class Outputs:
    """What ``command`` may write in ``folder`` (see the module); ``wrote`` records each file written."""

    def __init__(self, folder: Path, command: str):
        self.folder, self.command = Path(folder), command
        self.manifest = self.folder / MANIFEST

    def entries(self) -> dict[str, dict]:
        """The manifest: file name → {"by": command, "sha256": hash}; {} without one. ``DataError`` naming it
        when it is damaged: which files napari-dmd wrote there cannot be told, so none may be replaced."""
        try:
            entries = json.loads(self.manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            why = getattr(exc, "strerror", None) or "not valid JSON"
            raise DataError(self._damaged(why)) from exc
        if not isinstance(entries, dict):
            kind = "array" if isinstance(entries, list) else "value"
            raise DataError(self._damaged(f"a JSON {kind}, not a table of files"))
        return entries

    def _damaged(self, why: str) -> str:
        """The message for a damaged manifest."""
        return (f"{self.manifest.absolute()}, napari-dmd's record of the files it wrote in {self.folder.absolute()}, "
                f"is damaged ({why}): which files there napari-dmd wrote cannot be told, so none is replaced; "
                f"choose a new --out (nothing was overwritten)")

    def owns(self, path: Path) -> bool:
        """Whether this command wrote ``path`` and nobody changed it since."""
        return self._state(Path(path), self.entries()) == "ours"

    def _state(self, path: Path, entries: dict[str, dict]) -> str:
        """"ours", "changed" (this command wrote it, someone edited it since) or "other"."""
        entry = entries.get(path.name)
        if not isinstance(entry, dict) or entry.get("by") != self.command or not path.is_file():
            return "other"
        return "ours" if entry.get("sha256") in (APPENDED, file_hash(path)) else "changed"

    def claim(self, paths: Iterable[Path]) -> None:
        """``DataError`` naming the first of ``paths`` that exists and may not be replaced."""
        entries = self.entries()
        for path in map(Path, paths):
            if not path.exists() and not path.is_symlink():
                continue
            state = self._state(path, entries)
            if state == "changed":
                raise DataError(f"{path.absolute()} was changed since napari-dmd {self.command} wrote it: it is kept; "
                                f"move it away or choose another --out (nothing was overwritten)")
            if state == "other":
                raise DataError(f"{path.absolute()} exists and was not written by napari-dmd {self.command}: choose "
                                f"an empty or new --out (nothing was overwritten)")

    def wrote(self, *paths: Path, appended: bool = False) -> None:
        """Record files this command has just written (their hash, or ``APPENDED``)."""
        from .io import write_text

        entries = self.entries()
        for path in paths:
            entries[Path(path).name] = {"by": self.command,
                                        "sha256": APPENDED if appended else file_hash(Path(path))}
        write_text(self.manifest, json.dumps(entries, indent=1) + "\n")


def make_folder(folder: Path, what: str = "--out") -> bool:
    """Create ``folder`` (and its parents); True if it was new. One line (``DataError``) if it cannot be."""
    from .io import write_failure

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{what} {folder.resolve()} is a file: give a folder")
    new = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(write_failure(folder.absolute(), exc).replace("cannot write", "cannot create", 1)) from exc
    return new


@contextmanager
def locked(folder: Path, command: str) -> Iterator[Outputs]:
    """Hold ``folder`` (created if need be) for ``command``: another napari-dmd command writing it is refused.
    Where nothing was written (bad input found later), the folder is left as it was: a folder created
    here is removed again, a lock file created here too."""
    from .io import write_failure

    folder = Path(folder)
    new = make_folder(folder)
    lock = folder / LOCK
    made = not lock.exists()
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if new:
            folder.rmdir()
        raise DataError(write_failure(lock.absolute(), exc)) from exc
    try:
        _hold(fd, folder)
        yield Outputs(folder, command)
    finally:
        os.close(fd)
        if made and not (folder / MANIFEST).exists():
            lock.unlink(missing_ok=True)
            if new and not any(folder.iterdir()):
                folder.rmdir()


def _hold(fd: int, folder: Path) -> None:
    """Take the lock on ``fd`` (released when it is closed); ``DataError`` if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the manifest still guards every file
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise DataError(f"another napari-dmd command is writing {folder.resolve()}: wait for it to finish, or "
                        f"choose another --out") from exc
