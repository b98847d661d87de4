"""Read and write medical images with SimpleITK: NIfTI, NRRD, MetaImage and DICOM (read only).

Arrays are in numpy order (z, y, x); a :class:`Geometry` keeps SimpleITK's (x, y, z) order.
"""
from __future__ import annotations

import errno
import gzip
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import DataError

SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LISTED_EXTENSIONS = tuple(e for e in SUPPORTED_EXTENSIONS if e != ".dcm")
COMPRESSED_EXTENSIONS = (".nii.gz", ".nrrd", ".mha")
SAVE_AS = "save as .nii.gz, .nrrd or .mha"
STORED_AS = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}  # no such voxel types
NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of real floating-point voxels
CHUNK = 1 << 22
DISK_FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk


@dataclass(frozen=True)
class Geometry:
    """Where an image lies in space, in SimpleITK (x, y, z) order; direction is the flat matrix."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("spacing", "origin", "direction"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        n = len(self.spacing)
        if len(self.origin) != n or len(self.direction) != n * n:
            raise DataError(f"geometry of {n} dimensions needs {n} origin and {n * n} direction values")
        if min(self.spacing, default=0.0) <= 0:
            raise DataError(f"voxel spacing must be positive, got {self.spacing}")

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.spacing)

    @property
    def scale(self) -> tuple[float, ...]:
        """Spacing in array order (z, y, x), as napari's layer scale."""
        return self.spacing[::-1]

    @property
    def translate(self) -> tuple[float, ...]:
        """Origin in array order (z, y, x), as napari's layer translate."""
        return self.origin[::-1]

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists of floats, for layer metadata or JSON."""
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, d: dict) -> Geometry:
        """The inverse of :meth:`to_dict`."""
        try:
            return cls(spacing=d["spacing"], origin=d["origin"], direction=d["direction"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"not a valid image geometry: {d!r}") from exc

    @classmethod
    def from_scale(cls, scale: Sequence[float]) -> Geometry:
        """Default geometry (origin 0, identity direction) from spacing in array order."""
        n = len(scale)
        return cls(spacing=tuple(scale)[::-1], origin=(0.0,) * n, direction=tuple(np.eye(n).ravel()))

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        """The geometry of a SimpleITK image."""
        return cls(spacing=image.GetSpacing(), origin=image.GetOrigin(), direction=image.GetDirection())

    def apply(self, image: sitk.Image) -> None:
        """Set this geometry on a SimpleITK image."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def extension(path: str | Path) -> str:
    """The lower-case image extension of a path (``.nii.gz`` counts as one)."""
    name = Path(path).name.lower()
    return next((e for e in SUPPORTED_EXTENSIONS if name.endswith(e)), Path(name).suffix)


def case_name(path: str | Path) -> str:
    """The file name without its image extension (a DICOM folder keeps its name)."""
    path = Path(path)
    ext = extension(path)
    return path.name[: -len(ext)] if ext in SUPPORTED_EXTENSIONS else path.name


def _reason(exc: Exception) -> str:
    """The last line of a SimpleITK exception, which names the problem."""
    return str(exc).strip().splitlines()[-1].removeprefix("sitk::ERROR: ")


def _series_ids(folder: str | Path) -> tuple[str, ...]:
    """The DICOM series directly in ``folder``, without ITK's warning when there is none."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def dicom_series(folder: str | Path) -> list[str]:
    """The files of the largest DICOM series directly in ``folder`` ([] if none)."""
    ids = _series_ids(folder)
    series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i) for i in ids]
    return list(max(series, key=len, default=()))


def is_supported(path: str | Path) -> bool:
    """True for an image file of a supported format, or a folder holding a DICOM series."""
    path = Path(path)
    if path.is_dir():
        return bool(_series_ids(path))
    return extension(path) in SUPPORTED_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files and DICOM series subfolders in ``folder``.

    Loose ``.dcm`` files are not listed one by one: a DICOM series is listed as its folder.
    Hidden names (starting with ``.``) are skipped.
    """
    found = []
    for p in sorted(Path(folder).iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and is_supported(p) or p.is_file() and extension(p) in LISTED_EXTENSIONS:
            found.append(p)
    return found


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


def _check_nifti(path: Path) -> None:
    """Refuse a truncated or corrupt NIfTI file, and one holding NaN or infinite voxels.

    SimpleITK reads the missing end of a truncated file as zeros, NIfTI's NaN and infinities as 0,
    and says only "Unable to determine ImageIO reader" of a damaged compressed file; so a compressed or
    float file is streamed once here (an uncompressed integer one is measured): its data must be as long
    as the header says, its compression intact and, for float voxels, every value finite. A file that
    is neither gzip nor NIfTI is left to SimpleITK.
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
        raise DataError(f"{path} is truncated or corrupt ({exc})") from exc
    if found < expected:
        raise DataError(f"{path} is truncated or corrupt: its header announces {expected} bytes of voxel data, "
                        f"the file holds {found}")
    if bad:
        raise DataError(f"{path} holds {bad} NaN or infinite voxel values: replace them before use")


def read_image(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """A grayscale 2D or 3D image as a numpy array (z, y, x) in its stored dtype, and its geometry.

    ``path`` is an image file or a folder holding a DICOM series (the largest, if several). A
    truncated or corrupt file, and an image holding NaN or infinite values, raise ``DataError``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    try:
        if path.is_dir():
            files = dicom_series(path)
            if not files:
                raise DataError(f"{path} is a folder without a DICOM series")
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
        elif extension(path) not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{path.name}: unsupported file type; use one of {', '.join(SUPPORTED_EXTENSIONS)} "
                            f"or a DICOM folder")
        else:
            if extension(path) in (".nii", ".nii.gz"):
                _check_nifti(path)
            image = sitk.ReadImage(str(path))
            if extension(path) == ".dcm" and image.GetDimension() == 3 and image.GetDepth() == 1:
                image = image[:, :, 0]  # a single-frame DICOM file is a 2D image
    except RuntimeError as exc:
        raise DataError(f"cannot read {path}: damaged or not a valid image ({_reason(exc)})") from exc
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise DataError(f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel (color or vector "
                        f"image); a grayscale image is needed")
    if image.GetDimension() not in (2, 3):
        raise DataError(f"{path} is a {image.GetDimension()}D image; only 2D and 3D images are supported")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(f"{path} holds {bad} NaN or infinite voxel values: replace them before use")
    return array, Geometry.of(image)


def write_failure(path: str | Path, exc: BaseException) -> str:
    """Why writing ``path`` failed, in words; "the disk is full" when it is (some writers, such as
    SimpleITK's and torch's, do not say so themselves)."""
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    folder = Path(path).parent
    while not full and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        full = full or shutil.disk_usage(folder).free < DISK_FULL_BELOW
    except OSError:
        pass
    if full:
        return f"cannot write {path}: the disk is full; free some space and run again"
    reason = _reason(exc) if isinstance(exc, RuntimeError) else getattr(exc, "strerror", None) or str(exc)
    return f"cannot write {path}: {reason}"


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (a temporary file beside it, then a rename); parents are created."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(write_failure(path, exc)) from exc


def write_image(path: str | Path, array: np.ndarray, geometry: Geometry | None = None) -> None:
    """Write an array (z, y, x) with its geometry, atomically; parent folders are created.

    The file is written into a hidden temporary folder beside ``path``, then moved in place
    (for ``.mhd`` the data file first, then the header). Booleans are stored as uint8, float16 as float32.
    """
    path = Path(path)
    ext = extension(path)
    if ext == ".dcm":
        raise DataError(f"writing DICOM is not supported; {SAVE_AS}")
    if ext not in WRITABLE_EXTENSIONS:
        raise DataError(f"cannot write {path.name}: unsupported file type; {SAVE_AS}")
    array = np.asarray(array)
    array = array.astype(STORED_AS.get(array.dtype, array.dtype), copy=False)
    geometry = geometry or Geometry.from_scale((1.0,) * array.ndim)
    if geometry.ndim != array.ndim:
        raise DataError(f"cannot write {path.name}: the array is {array.ndim}D, its geometry {geometry.ndim}D")
    try:
        image = sitk.GetImageFromArray(array)
    except TypeError as exc:
        raise DataError(f"cannot write {path.name}: {array.dtype} arrays cannot be saved as images") from exc
    geometry.apply(image)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as exc:
        raise DataError(write_failure(path, exc)) from exc
    try:
        sitk.WriteImage(image, str(tmp / path.name), useCompression=ext in COMPRESSED_EXTENSIONS)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):  # the header last
            os.replace(f, path.parent / f.name)
    except (RuntimeError, OSError) as exc:
        raise DataError(write_failure(path, exc)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
