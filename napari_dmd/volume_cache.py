"""Training volumes kept in a folder as uncompressed ``.npy`` files and opened memory-mapped (``train --cache``).

Each volume is an entry, a subfolder: its arrays (each channel of the image in its own type, or normalised
float16; labels; review mask) and ``manifest.json``, which records the source files (path, size, mtime_ns and
SHA-256 of the bytes, so that an edit keeping size and time is seen),
the options the entry was made with, each array's dtype, shape, size and SHA-256, the channels' names and
intensity statistics and what the loader found besides (label values, review record). An entry is used only
while all of that holds; one that is stale (a source changed) or damaged (a file missing, cut short, altered,
or an unreadable manifest) is reported in one line and written again, never trained on. Every file is written
atomically (a temporary file beside it, then a rename), the manifest last. Entries are never deleted: delete
the folder to free it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .channels import Channels
from .data import IntensityStats, Volume
from .errors import DataError
from .io import write_failure, write_text
from .outputs import file_hash

FORMAT = 3  # version of the entry layout (3: sources hashed); entries of another version are rebuilt
MANIFEST = "manifest.json"
ARRAYS = ("label", "mask")  # besides the image's channels, channel_0.npy, channel_1.npy, ...

Built = tuple[Volume, dict[str, Any]]  # a volume and what its loader found besides it (JSON values)


class Unusable(Exception):
    """Why a cache entry cannot be used, in a few words."""


def file_state(path: Path) -> list[dict[str, Any]]:
    """Path, size, mtime_ns and SHA-256 of a source: a file, every file of a folder (a DICOM series), or its
    absence. The hash reads the file's bytes once (far faster than decoding it): a file edited with its size and
    time kept (``cp -p``, ``rsync -a``) is told from the one cached."""
    path = Path(path).resolve()
    if path.is_dir():
        return [s for p in sorted(path.iterdir()) if p.is_file() for s in file_state(p)]
    try:
        st = path.stat()
        digest = file_hash(path)
    except FileNotFoundError:
        return [{"path": str(path), "absent": True}]
    return [{"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}]


def _change(cached: list[dict[str, Any]], now: list[dict[str, Any]]) -> str:
    """What differs between the sources as cached and as they are now, in a few words."""
    for a, b in zip(cached, now):
        if a != b:
            name = Path(b["path"]).name
            kept = not a.get("absent") and a.get("size") == b.get("size") and a.get("mtime_ns") == b.get("mtime_ns")
            return f"{name} changed" + (" (its content; its size and modification time did not)" if kept else "")
    return "its files changed"


def _write_array(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as ``path`` (.npy) atomically; what the manifest records of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        record = {"file": path.name, "dtype": array.dtype.str, "shape": list(array.shape),
                  "bytes": tmp.stat().st_size, "sha256": file_hash(tmp)}
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(write_failure(path, exc)) from exc
    return record


def _open_array(folder: Path, record: dict[str, Any], verify: bool) -> np.ndarray:
    """The array of a manifest record, memory-mapped, once its file is found whole (its size and, with
    ``verify``, its checksum as written); ``Unusable`` if not."""
    path = folder / record["file"]
    if not path.is_file():
        raise Unusable(f"damaged: {path.name} is missing")
    if path.stat().st_size != record["bytes"]:
        raise Unusable(f"damaged: {path.name} has {path.stat().st_size} bytes, {record['bytes']} were written")
    if verify and file_hash(path) != record["sha256"]:
        raise Unusable(f"damaged: {path.name} does not match its checksum")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise Unusable(f"damaged: {path.name} is unreadable ({exc})") from exc
    if array.dtype.str != record["dtype"] or list(array.shape) != record["shape"]:
        raise Unusable(f"damaged: {path.name} holds {array.dtype} {array.shape}, not {record['dtype']} "
                       f"{tuple(record['shape'])}")
    return array


class VolumeCache:
    """A cache folder; ``get`` returns an entry's volume memory-mapped, building the entry when needed.
    ``notes`` collects one line per entry found stale or damaged."""

    def __init__(self, folder: Path):
        """``DataError`` at once (before any image is read) for a folder that cannot be written."""
        self.folder = Path(folder)
        self.notes: list[str] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise DataError(f"--cache {self.folder.absolute()} is a file: give a folder (new, or one --cache wrote)")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.folder).close()
        except OSError as exc:
            raise DataError(f"--cache {self.folder.absolute()} cannot be written "
                            f"({write_failure(self.folder.absolute(), exc).split(': ', 1)[-1]}): give a folder you "
                            f"can write, or leave --cache out") from exc

    def entry(self, name: str, sources: list[Path]) -> Path:
        """The entry folder of a volume named ``name`` read from ``sources`` (same sources, same entry)."""
        where = json.dumps([str(Path(p).resolve()) for p in sources])
        safe = re.sub(r"[^\w.-]", "_", name)[:64]
        return self.folder / f"{safe}-{hashlib.sha256(where.encode()).hexdigest()[:16]}"

    def get(self, name: str, sources: list[Path], options: dict[str, Any], build: Callable[[], Built | None]
            ) -> Built | None:
        """The cached volume of ``sources`` read with ``options``; else ``build()``'s, written to the cache and
        opened from it (None, when ``build`` gives None, is not cached)."""
        folder = self.entry(name, sources)
        state = [s for p in sources for s in file_state(p)]
        try:
            return self._load(folder, state, options)
        except FileNotFoundError:
            pass  # no entry yet
        except Unusable as why:
            self.notes.append(f"cache of {name} in {folder} is not usable ({why}): rebuilding it")
        built = build()
        return None if built is None else self._store(folder, state, options, *built)

    def _load(self, folder: Path, state: list[dict], options: dict[str, Any], verify: bool = True) -> Built:
        """The entry's volume and extras; ``FileNotFoundError`` if there is no entry, ``Unusable`` if it is
        stale or damaged."""
        manifest = self._manifest(folder)
        try:
            if manifest["sources"] != state:
                raise Unusable(f"stale: {_change(manifest['sources'], state)}")
            if manifest["options"] != options:
                raise Unusable(f"stale: made with {manifest['options']}, now {options}")
            arrays = {k: _open_array(folder, r, verify) for k, r in manifest["arrays"].items()}
            image = Channels([arrays[f"channel_{c}"] for c in range(len(manifest["channels"]))], manifest["channels"])
            volume = Volume(image, arrays.get("label"), arrays.get("mask"), manifest["name"],
                            tuple(manifest["spacing"]) if manifest["spacing"] else None,
                            tuple(IntensityStats(**s) for s in manifest["stats"]))
            return volume, manifest["extra"]
        except (KeyError, TypeError, AttributeError) as exc:
            raise Unusable(f"damaged: {MANIFEST} is incomplete ({exc!r})") from exc

    @staticmethod
    def _manifest(folder: Path) -> dict[str, Any]:
        """The entry's manifest; ``FileNotFoundError`` for no entry, ``Unusable`` for an unreadable one."""
        path = folder / MANIFEST
        if not folder.is_dir():
            raise FileNotFoundError(folder)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise Unusable(f"damaged: {MANIFEST} is missing") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Unusable(f"damaged: {MANIFEST} is unreadable") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise Unusable(f"damaged: {MANIFEST} is not of format {FORMAT}")
        return manifest

    def _store(self, folder: Path, state: list[dict], options: dict[str, Any], volume: Volume,
               extra: dict[str, Any]) -> Built:
        """Write an entry (arrays first, then the manifest) and open it."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / MANIFEST).unlink(missing_ok=True)  # an entry cut short has no manifest
        except OSError as exc:
            raise DataError(write_failure(folder / MANIFEST, exc)) from exc
        held = {f"channel_{c}": a for c, a in enumerate(volume.image.arrays)}
        held.update({k: getattr(volume, k) for k in ARRAYS if getattr(volume, k) is not None})
        arrays = {k: _write_array(folder / f"{k}.npy", a) for k, a in held.items()}
        write_text(folder / MANIFEST, json.dumps({
            "format": FORMAT, "name": volume.name, "sources": state, "options": options, "arrays": arrays,
            "channels": list(volume.image.names), "spacing": volume.spacing,
            "stats": [asdict(s) for s in volume.stats], "extra": extra}, indent=1) + "\n")
        return self._load(folder, state, options, verify=False)  # just written and hashed
