"""What an image file's header says, checked before SimpleITK reads it: SimpleITK reads the missing end of a
truncated NIfTI or MetaImage as zeros, NaN voxels as 0, and a NIfTI voxel size of 0, negative or NaN as 1 mm."""
from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import DataError
from .spacing import PLAUSIBLE_MM, implausible

NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of real floating-point voxels
CHUNK = 1 << 22
METAIMAGE_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
                   "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
                   "MET_DOUBLE": 8}


def _nifti_header(head: bytes) -> tuple[int, int, str | None] | None:
    """(data offset, data bytes, float dtype or None) of a NIfTI-1 or NIfTI-2 header; None if ``head``
    is no NIfTI header; ``EOFError`` if it is one cut short."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size in (348, 540) and len(head) < size:
            raise EOFError(f"the {len(head)}-byte file ends inside its header")
        if size == 348:
            datatype, bitpix = struct.unpack(order + "hh", head[70:74])
            dim = struct.unpack(order + "8h", head[40:56])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
            break
        if size == 540:
            datatype, bitpix = struct.unpack(order + "hh", head[12:16])
            dim = struct.unpack(order + "8q", head[16:80])
            offset = struct.unpack(order + "q", head[168:176])[0]
            break
    else:
        return None
    if not 1 <= dim[0] <= 7:
        return None
    voxels = int(np.prod([max(int(d), 1) for d in dim[1:dim[0] + 1]], dtype=np.int64))
    float_dtype = NIFTI_FLOATS.get(datatype)
    return max(offset, size), voxels * bitpix // 8, float_dtype and order + float_dtype


def nifti_pixdim(path: Path) -> tuple[float, ...] | None:
    """The voxel spacing (x, y, z order) of the spatial axes (at most three) as a NIfTI file's header states it
    (pixdim), which ITK reads as 1 mm where it is 0, negative or NaN; None for a file that is no NIfTI."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            head = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None
    for order, size, dim, pixdim in (("<", 348, "h", "f"), (">", 348, "h", "f"), ("<", 540, "q", "d"),
                                     (">", 540, "q", "d")):
        if len(head) >= size and struct.unpack(order + "i", head[:4])[0] == size:
            at = (40, 76) if size == 348 else (16, 104)
            n = min(max(struct.unpack(order + dim, head[at[0]:at[0] + struct.calcsize(dim)])[0], 1), 3)
            return struct.unpack(order + "8" + pixdim, head[at[1]:at[1] + 8 * struct.calcsize(pixdim)])[1:n + 1]
    return None


def check_spacing(path: Path, found: Sequence[float] | None) -> None:
    """``DataError`` naming ``path`` and the value when its stated spacing (x, y, z order) is 0, negative, not
    finite or outside ``PLAUSIBLE_MM``: volumes in mm³ and the network plan would be wrong."""
    bad = None if found is None else implausible(found)
    if bad is not None:
        raise DataError(f"{path.absolute()} states a voxel spacing of {found[bad]:g} mm along {'xyz'[bad]} (z y x: "
                        f"{', '.join(f'{s:g}' for s in found[::-1])}), not a voxel size between {PLAUSIBLE_MM[0]:g} "
                        f"and {PLAUSIBLE_MM[1]:g} mm: volumes in mm³ and the network plan would be wrong; correct the "
                        f"file's header, or give the true spacing (command line: --spacing Z Y X)")


def check_nifti(path: Path, finite: bool = True) -> None:
    """Refuse a truncated or corrupt NIfTI file, and one holding NaN or infinite voxels.

    SimpleITK reads the missing end of a truncated file as zeros, NIfTI's NaN and infinities as 0,
    and says only "Unable to determine ImageIO reader" of a damaged compressed file; so a compressed or
    float file is streamed once here (an uncompressed integer one is measured): its data must be as long
    as the header says, its compression intact and, for float voxels, every value finite. A file that
    is neither gzip nor NIfTI is left to SimpleITK. ``finite=False`` checks the length alone.
    """
    compressed = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw:
        if compressed and raw.read(2) != b"\x1f\x8b":
            return
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            header = _nifti_header(f.read(540))
            if header is None:
                return
            offset, expected, float_dtype = header
            float_dtype = float_dtype if finite else None
            found, bad, rest = 0, 0, b""
            if not compressed and not float_dtype:  # its size says it all: nothing to stream
                found = max(0, path.stat().st_size - offset)
            f.seek(offset)
            while (compressed or float_dtype) and (chunk := f.read(CHUNK)):
                found += len(chunk)
                if float_dtype:
                    chunk = rest + chunk
                    usable = len(chunk) - len(chunk) % np.dtype(float_dtype).itemsize
                    values, rest = np.frombuffer(chunk[:usable], float_dtype), chunk[usable:]
                    bad += values.size - int(np.count_nonzero(np.isfinite(values)))
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.absolute()} is truncated or corrupt ({exc})") from exc
    if found < expected:
        raise DataError(f"{path.absolute()} is truncated or corrupt: its header announces {expected} bytes of voxel "
                        f"data, "
                        f"the file holds {found}")
    if bad:
        raise DataError(f"{path.absolute()} holds {bad} NaN or infinite voxel values: replace them before use")


def check_metaimage(path: Path) -> None:
    """Refuse a MetaImage (``.mha``, or ``.mhd`` with its data file) whose voxel data (or compressed data) is
    shorter than its header announces (SimpleITK says only "No such file or directory")."""
    header, fields = 0, {}
    with open(path, "rb") as f:
        for raw in f:
            header += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or header > 1 << 16:
                break
    size = METAIMAGE_BYTES.get(fields.get("ElementType", ""))
    data = fields.get("ElementDataFile", "")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if size is None or compressed and "CompressedDataSize" not in fields or "HeaderSize" in fields \
            or not data or " " in data or data.upper() == "LIST":
        return  # a layout not measured here: SimpleITK checks it
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        expected = int(fields["CompressedDataSize"]) if compressed else \
            int(np.prod(dims, dtype=np.int64)) * size * int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return
    if data.upper() == "LOCAL":
        found, where = path.stat().st_size - header, path
    else:
        where = path.parent / data
        if not where.is_file():
            raise DataError(f"{path.absolute()} is incomplete: its voxel data file {where} is missing")
        found = where.stat().st_size
    if found < expected:
        raise DataError(f"{where} is truncated or corrupt: the header {path.name} announces {expected} bytes of voxel "
                        f"data, the file holds {max(found, 0)}")


SPACING_KEYS = {".nrrd": ("space directions", "spacings"), ".nhdr": ("space directions", "spacings"),
                ".mha": ("ElementSpacing", "ElementSize"), ".mhd": ("ElementSpacing", "ElementSize")}


def _header_fields(path: Path, nrrd: bool) -> dict[str, str]:
    """The fields of a NRRD (``key: value``, up to the blank line) or MetaImage (``Key = Value``, up to
    ``ElementDataFile``) header, in its first 64 kB."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields = {}
    for raw in head.split(b"\n")[1 if nrrd else 0:]:
        line = raw.decode("latin-1").strip()
        if nrrd and not line:
            break
        key, sep, value = line.partition(": " if nrrd else "=")
        if sep:
            fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    return fields


def check_spacing_stated(path: Path, ext: str) -> None:
    """``DataError`` for a NRRD or MetaImage file whose header states no voxel spacing (none of
    ``SPACING_KEYS``): ITK reads 1 mm then."""
    keys = SPACING_KEYS.get(ext)
    if keys is None or any(k in _header_fields(path, ext in (".nrrd", ".nhdr")) for k in keys):
        return
    raise DataError(f"{path.absolute()} states no voxel spacing (its header has no {' or '.join(map(repr, keys))} "
                    f"field): volumes in mm³ and the network plan would be wrong; add it to the header, or give the "
                    f"true spacing (command line: --spacing Z Y X)")


@contextmanager
def itk_warnings_off() -> Iterator[None]:
    """ITK's warnings not shown inside the block (those about what napari-dmd checks or replaces itself)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
