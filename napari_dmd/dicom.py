"""DICOM series folders: the one series a folder holds, checked whole before ITK reads it (ITK reads a series
with a lost slice as a volume of the wrong spacing, and a folder of several series as its largest, and only
warns)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import DataError
from .image_checks import itk_warnings_off


def series_ids(folder: str | Path) -> tuple[str, ...]:
    """The DICOM series directly in ``folder``, without ITK's warning when there is none."""
    with itk_warnings_off():
        return sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))


def _description(path: str) -> str:
    """The SeriesDescription of a DICOM file ('' without one)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        return reader.GetMetaData("0008|103e").strip() if reader.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        return ""


def dicom_series(folder: str | Path) -> list[str]:
    """The files of the DICOM series directly in ``folder`` ([] if none); ``DataError`` naming each series (UID,
    description, slice count) when there are several: which one is meant is the user's choice."""
    ids = series_ids(folder)
    series = {i: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i)) for i in ids}
    if len(series) > 1:
        found = "; ".join(f"{uid} ({_description(files[0]) or 'no description'!r}, {len(files)} slices)"
                          for uid, files in series.items())
        raise DataError(f"{Path(folder).absolute()} holds {len(series)} DICOM series ({found}): move each series "
                        f"into a folder of its own and give the one to use")
    return next(iter(series.values()), [])


def _slice_position(path: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImagePositionPatient, slice normal) of one DICOM file; None without those tags."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    try:
        position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
        cosines = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
    except (RuntimeError, ValueError):
        return None
    return position, np.cross(cosines[:3], cosines[3:])


def check_series(folder: Path, files: list[str]) -> None:
    """Refuse a DICOM series with a slice GDCM left out (damaged, cut short, not DICOM) or with slices not
    evenly spaced (a slice missing): ITK reads both as a volume with a wrong spacing, and only warns."""
    listed = {Path(f).name for i in series_ids(folder)
              for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), i)}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR" \
                and Path(p.name.lower()).suffix in (".dcm", "") and p.name not in listed:
            raise DataError(f"{p.absolute()} in the DICOM series {folder.absolute()} is not a readable DICOM slice "
                            f"(damaged, cut short or not DICOM): restore it, or remove it and the series' other gaps")
    if len(files) < 3:
        return
    found = [_slice_position(f) for f in files]
    if any(f is None for f in found):
        return
    depth = np.array([float(position @ found[0][1]) for position, _ in found])
    gaps = np.diff(depth)
    typical = float(np.median(np.abs(gaps)))
    worst = int(np.argmax(np.abs(np.abs(gaps) - typical)))
    if typical > 0 and abs(abs(gaps[worst]) - typical) > max(1e-3, 0.01 * typical):
        raise DataError(f"the DICOM series {folder.absolute()} is not evenly spaced: {Path(files[worst]).name} and "
                        f"{Path(files[worst + 1]).name} are {abs(gaps[worst]):.4g} mm apart, the other slices "
                        f"{typical:.4g} mm (a slice missing?)")
