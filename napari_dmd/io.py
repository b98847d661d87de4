"""Read and write medical images with SimpleITK: NIfTI, NRRD, MetaImage and DICOM (read only).

Arrays are in numpy order (z, y, x); a :class:`Geometry` keeps SimpleITK's (x, y, z) order.
"""
from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .channels import Channels
from .dicom import check_series, dicom_series, series_ids
from .errors import DataError
from .image_checks import (
    check_metaimage,
    check_nifti,
    check_spacing,
    check_spacing_stated,
    itk_warnings_off,
    nifti_pixdim,
)
from .spacing import PLAUSIBLE_MM, implausible

SUPPORTED_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
WRITABLE_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LISTED_EXTENSIONS = tuple(e for e in SUPPORTED_EXTENSIONS if e != ".dcm")
COMPRESSED_EXTENSIONS = (".nii.gz", ".nrrd", ".mha")
SAVE_AS = "save as .nii.gz, .nrrd or .mha"
STORED_AS = {np.dtype(bool): np.dtype(np.uint8), np.dtype(np.float16): np.dtype(np.float32)}  # no such voxel types
DISK_FULL_BELOW = 1 << 20  # free bytes under which a failed write is put down to a full disk
READ_BACK_BELOW = 1 << 28  # a written image smaller than this is read back whole, a larger one its header


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


def not_found(path: str | Path) -> DataError:
    """The error for a path that cannot be opened: it does not exist, or it is a link to nothing or in a loop."""
    path = Path(path)
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return DataError(f"{path.absolute()} is a link in a loop (it points to {os.readlink(path)}, which "
                                 f"leads back to it): replace it with a link to the image, or remove it")
        return DataError(f"{path.absolute()} is a link to {os.readlink(path)}, which does not exist: restore or "
                         f"remove it")
    return DataError(f"{path.absolute()} does not exist")


def is_supported(path: str | Path) -> bool:
    """True for an image file of a supported format, or a folder holding a DICOM series."""
    path = Path(path)
    if path.is_dir():
        return bool(series_ids(path))
    return extension(path) in SUPPORTED_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files and DICOM series subfolders in ``folder``.

    Loose ``.dcm`` files are not listed one by one: a DICOM series is listed as its folder.
    Hidden names (starting with ``.``) are skipped; a link to nothing or in a loop is refused (``DataError``).
    """
    found = []
    for p in sorted(Path(folder).iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_symlink() and not p.exists():
            raise not_found(p)
        if p.is_dir() and is_supported(p) or p.is_file() and extension(p) in LISTED_EXTENSIONS:
            found.append(p)
    return found


def _geometry(path: Path, image: sitk.Image, spacing: Sequence[float] | None) -> Geometry:
    """The geometry of ``image`` read from ``path`` (of its first three axes), its spacing checked
    (``image_checks.check_spacing``); ``spacing`` (array order z, y, x: ``--spacing``) replaces it."""
    dim = image.GetDimension()
    n = min(dim, 3)
    origin = image.GetOrigin()[:n]
    direction = tuple(np.reshape(image.GetDirection(), (dim, dim))[:n, :n].ravel())
    if spacing is None:
        found = tuple(image.GetSpacing()[:n])
        check_spacing(path, found)
        return Geometry(found, origin, direction)
    given = tuple(float(s) for s in spacing)
    bad = implausible(given)
    if len(given) != n or bad is not None:
        what = f"{len(given)} values" if len(given) != n else f"{given[bad]:g} mm"
        raise DataError(f"--spacing {' '.join(f'{s:g}' for s in given)} gives {what} for {path.absolute()}: give "
                        f"{n} voxel sizes in mm (z y x order), each between {PLAUSIBLE_MM[0]:g} and "
                        f"{PLAUSIBLE_MM[1]:g}")
    return Geometry(given[::-1], origin, direction)


def _read_checked(path: Path, spacing: Sequence[float] | None) -> sitk.Image:
    """``_read``, the spacing a file states checked first (NIfTI's pixdim; that NRRD and MetaImage state one): ITK
    reads 1 mm instead (and warns about NIfTI's). With ``spacing`` given to replace it, ITK's warnings about it are
    not shown."""
    if spacing is not None:
        with itk_warnings_off():
            return _read(path)
    if extension(path) in (".nii", ".nii.gz") and path.is_file():
        check_spacing(path, nifti_pixdim(path))
    elif path.is_file():
        check_spacing_stated(path, extension(path))
    return _read(path)


@contextmanager
def _native_messages(path: Path) -> Iterator[None]:
    """Hold what ITK's readers print on stderr themselves (MetaIO, GDCM: several lines for one damaged
    file) while the block reads ``path``: dropped when it raises (the ``DataError`` says what is wrong in
    one line); when it returns, a failure printed there ("Uncompress failed": SimpleITK returns the image
    anyway) raises ``DataError``, anything else is shown."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no file descriptor 2 (some GUI launchers)
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", "replace")
    failed = [line.strip() for line in text.splitlines() if "fail" in line.lower() or "not read completely" in line]
    if failed:
        raise DataError(f"cannot read {path.absolute()}: damaged or truncated ({failed[-1]})")
    if text:
        sys.stderr.write(text)


def _read(path: Path) -> sitk.Image:
    """The SimpleITK image of an image file or of the one DICOM series in a folder; ``DataError`` for what cannot
    be read."""
    if not path.exists():
        raise not_found(path)
    try:
        if path.is_dir():
            files = dicom_series(path)
            if not files:
                raise DataError(f"{path.absolute()} is a folder without a DICOM series")
            check_series(path, files)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            with _native_messages(path):
                return reader.Execute()
        if extension(path) not in SUPPORTED_EXTENSIONS:
            raise DataError(f"{path.absolute()}: unsupported file type; use one of {', '.join(SUPPORTED_EXTENSIONS)} "
                            f"or a DICOM folder")
        if extension(path) in (".nii", ".nii.gz"):
            check_nifti(path)
        elif extension(path) in (".mha", ".mhd"):
            check_metaimage(path)
        with _native_messages(path):
            image = sitk.ReadImage(str(path))
        if extension(path) == ".dcm" and image.GetDimension() == 3 and image.GetDepth() == 1:
            image = image[:, :, 0]  # a single-frame DICOM file is a 2D image
        return image
    except RuntimeError as exc:
        reason = _reason(exc)
        if "No such file" in reason:  # the file is there: ITK says so of a damaged or truncated one
            reason = "truncated, or its data unreadable"
        raise DataError(f"cannot read {path.absolute()}: damaged or not a valid image ({reason})") from exc


def _finite(array: np.ndarray, path: Path) -> np.ndarray:
    """``array``; ``DataError`` if it holds NaN or infinite values."""
    if np.issubdtype(array.dtype, np.floating):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(f"{path.absolute()} holds {bad} NaN or infinite voxel values: replace them before use")
    return array


def read_image(path: str | Path, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, Geometry]:
    """A single-channel 2D or 3D image (or label map) as a numpy array (z, y, x) in its stored dtype, and its
    geometry (``spacing``, in array order, replaces the file's: ``--spacing``).

    ``path`` is an image file or a folder holding one DICOM series. A truncated or corrupt file, an image
    holding NaN or infinite values, and a spacing that is no voxel size (``_geometry``) raise ``DataError``; so
    does a colour, vector or 4D image (``read_channels`` reads those).
    """
    path = Path(path)
    image = _read_checked(path, spacing)
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise DataError(f"{path.absolute()} has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or "
                        f"vector image); a single-channel image is needed here")
    if image.GetDimension() not in (2, 3):
        raise DataError(f"{path.absolute()} is a {image.GetDimension()}D image; a 2D or 3D image is needed here")
    geometry = _geometry(path, image, spacing)
    return _finite(sitk.GetArrayFromImage(image), path), geometry


def read_channels(path: str | Path, spacing: Sequence[float] | None = None) -> tuple[Channels, Geometry]:
    """An image of one or several channels (named by ``channels.default_names``) and its (2D or 3D) geometry
    (checked, or ``spacing`` as in ``read_image``): a colour or vector image gives one channel per value of a
    voxel, a 4D image one per 3D volume along its fourth axis (as MSD stores MR sequences), any other image one
    channel."""
    path = Path(path)
    image = _read_checked(path, spacing)
    components, dim = image.GetNumberOfComponentsPerPixel(), image.GetDimension()
    if dim not in (2, 3, 4) or (dim == 4 and components > 1):
        raise DataError(f"{path.absolute()} is a {dim}D image of {components} value(s) per voxel; 2D or 3D images of "
                        f"one or more channels, or 4D images of channels, are supported")
    geometry = _geometry(path, image, spacing)
    array = _finite(sitk.GetArrayFromImage(image), path)
    if dim == 4:  # (C, z, y, x): the channels are the fourth axis of the file
        return Channels.split(array, 0), geometry
    return (Channels.split(array, -1) if components > 1 else Channels([array])), geometry


def _size_limit() -> int | None:
    """The file-size limit of this process (``ulimit -f``) in bytes; None without one (or on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def image_shape(path: str | Path) -> tuple[int, ...]:
    """The array shape (z, y, x) of one channel of an image file from its header (``image_header``)."""
    return image_header(path)[0]


def image_header(path: str | Path) -> tuple[tuple[int, ...], tuple[float, ...], int]:
    """(shape (z, y, x) of one channel, spacing in that order, channel count) of an image file from its header
    alone (a 4D file's channels are its fourth axis, as ``read_channels`` reads them); a DICOM folder is read
    whole."""
    path = Path(path)
    if path.is_dir() or extension(path) == ".dcm":
        image, geometry = read_channels(path)
        return image.shape, geometry.scale, image.count
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(f"cannot read {path.absolute()}: damaged or not a valid image ({_reason(exc)})") from exc
    size, spacing = reader.GetSize(), reader.GetSpacing()
    shape = tuple(size[:3][::-1])
    channels = reader.GetNumberOfComponents() * (size[3] if len(size) > 3 else 1)
    return shape, tuple(float(s) for s in spacing[: len(shape)][::-1]), channels


def write_failure(path: str | Path, exc: BaseException) -> str:
    """Why writing ``path`` failed, in words: "the disk is full" or the file-size limit when so (some
    writers, such as SimpleITK's and torch's, do not say so themselves), else the writer's reason."""
    code = getattr(exc, "errno", None)
    full = code in (errno.ENOSPC, errno.EDQUOT)
    folder = Path(path).parent
    while not full and not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        full = full or shutil.disk_usage(folder).free < DISK_FULL_BELOW
    except OSError:
        pass
    if full:
        return f"cannot write {path}: the disk is full; free some space and run again"
    limit = _size_limit()
    if code == errno.EFBIG or limit is not None and (code == errno.EIO or isinstance(exc, RuntimeError)):
        shown = f"ulimit -f: {limit} bytes" if limit is not None else "EFBIG"
        return f"cannot write {path}: the file is larger than the file-size limit ({shown}); raise it and run again"
    reason = _reason(exc) if isinstance(exc, RuntimeError) else getattr(exc, "strerror", None) or str(exc)
    return f"cannot write {path}: {reason}"


def write_text(path: str | Path, text: str) -> None:
    """Write a text file (UTF-8) as ``write_bytes`` does."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically (a temporary file beside it, read back, then a rename); parents are created.
    ``DataError`` (``write_failure``: a full disk, the file-size limit) when it cannot be, the temporary file
    removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        if tmp.read_bytes() != data:
            raise OSError(errno.EIO, "what was written does not read back")
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
        _verify(tmp / path.name, array.shape)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):  # the header last
            os.replace(f, path.parent / f.name)
    except (RuntimeError, OSError, DataError) as exc:
        raise DataError(write_failure(path, exc)) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify(path: Path, shape: tuple[int, ...]) -> None:
    """``OSError`` unless the image just written at ``path`` reads back with ``shape``: whole when it is
    small (``READ_BACK_BELOW``), else its header and data size (SimpleITK does not report short writes)."""
    try:
        if extension(path) in (".nii", ".nii.gz"):
            check_nifti(path, finite=False)
        elif extension(path) in (".mha", ".mhd"):
            check_metaimage(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        if sum(f.stat().st_size for f in path.parent.iterdir()) < READ_BACK_BELOW:
            size = reader.Execute().GetSize()
        else:
            reader.ReadImageInformation()
            size = reader.GetSize()
    except (RuntimeError, DataError) as exc:
        reason = _reason(exc) if isinstance(exc, RuntimeError) else str(exc).split(": ", 1)[-1]
        raise OSError(errno.EIO, f"what was written does not read back ({reason})") from exc
    if tuple(size[::-1]) != tuple(shape):
        raise OSError(errno.EIO, f"what was written reads back as {tuple(size[::-1])}, not {tuple(shape)}")
