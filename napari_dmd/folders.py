"""Image folders as a training or test set: cases by name (one file each, or nnU-Net's channel files
``case_0000``, ``case_0001``, ... of one case), label maps checked, review records.

What does not look right (two files of one case, a label off its image's grid, a label map that is
really an image or a 0/255 mask) is refused with one line naming the file.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError
from .progress import bar
from .review import SIDECAR_SUFFIX, Reviewed, load_reviewed, sidecar_path

if TYPE_CHECKING:
    from .channels import Channels
    from .data import Volume
    from .io import Geometry

KINDS = "NIfTI, NRRD, MHA/MHD or a DICOM series"
MAX_CLASSES_FOUND = 50  # more label values than this is not a label map (unless --classes says so)


def folder_images(folder: Path, option: str = "") -> list[Path]:
    """The images of a folder (``io.list_images``); ``DataError`` (naming the ``option`` that gave it, such as
    '--labels') if it is no folder or holds none."""
    from .io import list_images

    given = f"{option} {folder.absolute()}" if option else str(folder.absolute())
    if not folder.is_dir():
        raise DataError(f"{given} is not a folder")
    paths = list_images(folder)
    if not paths:
        kind = "label map" if option == "--labels" else "image"
        raise DataError(f"{given} holds no {kind} ({KINDS}; hidden files are skipped): give the folder that holds "
                        f"them")
    return paths


def by_case(paths: list[Path]) -> dict[str, Path]:
    """Paths by case name; two files of one case (``X.nii.gz`` and ``X.nrrd``) are refused."""
    from .io import case_name

    cases: dict[str, Path] = {}
    for p in paths:
        other = cases.setdefault(case_name(p), p)
        if other != p:
            raise DataError(f"{other.name} and {p.name} in {p.parent.absolute()} are the same case {case_name(p)!r}: "
                            f"keep one of them")
    return cases


def channel_files(paths: list[Path], label_cases: set[str]) -> bool:
    """Whether ``paths`` are named as nnU-Net names the channels of a case (``case_0000``, ``case_0001``, ...):
    names ending in ``_NNNN`` name label files with it cut off, and no name does whole (``image_cases`` then
    refuses a file named otherwise)."""
    from .channels import CHANNEL_FILE
    from .io import case_name

    matches = [CHANNEL_FILE.match(case_name(p)) for p in paths]
    return not label_cases & {case_name(p) for p in paths} and bool(label_cases & {m["case"] for m in matches if m})


def image_cases(paths: list[Path], channels: bool) -> dict[str, list[Path]]:
    """The files of each case: one file each, or (``channels``) the channel files ``case_0000``, ``case_0001``,
    ... in channel order; every case needs channels 0..C-1, C the same for all, else ``DataError``."""
    from .channels import CHANNEL_FILE
    from .io import case_name

    if not channels:
        return {case: [path] for case, path in by_case(paths).items()}
    found: dict[str, dict[int, Path]] = {}
    for p in paths:
        m = CHANNEL_FILE.match(case_name(p))
        if m is None:
            raise DataError(f"{p.absolute()} is not named as a channel file (case_0000, case_0001, ...) like the "
                            f"other images of its folder")
        other = found.setdefault(m["case"], {}).setdefault(int(m["channel"]), p)
        if other != p:
            raise DataError(f"{other.name} and {p.name} in {p.parent.absolute()} are the same channel of "
                            f"{m['case']!r}: keep one of them")
    counts = Counter(len(files) for files in found.values())
    usual = max(counts, key=lambda n: (counts[n], n), default=0)  # the count most cases have
    for case, files in found.items():
        if sorted(files) != list(range(len(files))):
            missing = sorted(set(range(max(files) + 1)) - set(files))
            raise DataError(f"case {case!r} has channel files {', '.join(f'{c:04d}' for c in sorted(files))} in "
                            f"{files[min(files)].parent.absolute()}: channel {missing[0]:04d} is missing")
    odd = next((case for case, files in found.items() if len(files) != usual), None)
    if odd is not None:
        raise DataError(f"case {odd!r} has channel files {', '.join(f'{c:04d}' for c in sorted(found[odd]))}; every "
                        f"case needs {usual} channels, as the {counts[usual]} other case(s) have "
                        f"({', '.join(f'{c:04d}' for c in range(usual))}): add or remove channel files of {odd!r} in "
                        f"{found[odd][0].parent.absolute()}")
    return {case: [files[c] for c in range(usual)] for case, files in found.items()}


def read_case(paths: list[Path], names: Sequence[str] = (), spacing: Sequence[float] | None = None
              ) -> tuple[Channels, Geometry]:
    """The image of a case, its channels named ``names`` (default: ``channels.default_names``): the channels of
    one file (``io.read_channels``), or one channel per file, the files checked to lie on one grid; ``spacing``
    (``--spacing``, z y x) replaces the files' own."""
    from .channels import Channels
    from .io import read_channels, read_image

    if len(paths) == 1:
        image, geometry = read_channels(paths[0], spacing)
    else:
        arrays, geometry = [], None
        for p in paths:
            array, g = read_image(p, spacing)
            if geometry is None:
                geometry = g
            else:
                check_geometry(paths[0], p, arrays[0].shape, array.shape, geometry, g, what="channel file")
            arrays.append(array)
        image = Channels(arrays)
    if names and len(names) != image.count:
        raise DataError(f"{paths[0].absolute()} is a case of {image.count} channel(s), but {len(names)} channel "
                        f"names were given ({', '.join(names)})")
    return (Channels(image.arrays, names) if names else image), geometry


def _values(v: Sequence[float]) -> str:
    """Numbers as a short tuple: (0.8, 0.8, 2)."""
    return "(" + ", ".join(f"{x:g}" for x in v) + ")"


def check_geometry(image_path: Path, other_path: Path, image_shape: tuple[int, ...],
                   other_shape: tuple[int, ...], gi: Geometry, go: Geometry, what: str = "label") -> None:
    """``DataError`` naming both files unless ``other_path`` (a label or prediction) lies on the image's grid."""
    if image_shape != other_shape:
        raise DataError(f"{what} {other_path.absolute()} has shape {other_shape}, its image {image_path.absolute()} "
                        f"{image_shape}")
    for name, tol in (("spacing", 1e-3), ("origin", 1e-2), ("direction", 1e-3)):
        a, b = getattr(gi, name), getattr(go, name)
        close = np.allclose(a, b, rtol=tol) if name == "spacing" else np.allclose(a, b, atol=tol)
        if not close:
            raise DataError(f"{what} {other_path.absolute()} does not lie on its image {image_path.absolute()}: "
                            f"{name} {_values(b)} "
                            f"vs {_values(a)}")


def check_label_map(label: np.ndarray, path: Path) -> np.ndarray:
    """The distinct values of a label map; ``DataError`` naming the file for what is not one."""
    if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool) \
            and not np.array_equal(label, np.round(label)):
        raise DataError(f"{path.absolute()} holds values that are not whole numbers: an image, not a label map?")
    values = np.unique(label)
    if values.size and values[0] < 0:
        raise DataError(f"{path.absolute()} holds negative values ({values[0]:g}): not a label map")
    if values.size > MAX_CLASSES_FOUND:
        raise DataError(f"{path.absolute()} holds {values.size} distinct values ({values[0]:g} to {values[-1]:g}): "
                        f"an image, not a label map of a few classes?")
    return values.astype(np.int64)


def infer_classes(values: dict[Path, np.ndarray]) -> int:
    """The class count of label maps (largest value + 1), refusing what does not look like classes: too
    many values, a 0/255 mask, or values with a gap (one stray 7 among 0/1 labels is not 8 classes)."""
    path, found = max(values.items(), key=lambda kv: int(kv[1].max(initial=0)))
    top = int(found.max(initial=0))
    if top + 1 > MAX_CLASSES_FOUND:
        if set(found.tolist()) == {0, 255}:
            raise DataError(f"values 0 and 255 found in {path.absolute()}: a 0/255 mask? Remap 255 to 1, or give "
                            f"--classes "
                            f"(and --ignore-label 255 if 255 marks voxels to ignore)")
        raise DataError(f"{path.absolute()} holds label value {top} ({', '.join(map(str, found.tolist()))}): "
                        f"that would be "
                        f"{top + 1} classes; remap the labels to 0..N-1, or give --classes")
    every = set().union(*(v.tolist() for v in values.values()))
    absent = sorted(set(range(1, top + 1)) - every)
    if absent:
        raise DataError(f"label values {', '.join(map(str, sorted(every)))} are not consecutive: {path.absolute()} "
                        f"holds {top}, no file holds {', '.join(map(str, absent))}; remap the labels to 0..N-1, "
                        f"or give --classes {top + 1} if those classes are meant to be empty")
    return max(top + 1, 2)


@dataclass
class TrainingData:
    """What ``load_training_data`` found: volumes, label values per file, review records of the
    partly reviewed label files (by case), and notes to show."""

    labeled: list[Volume]
    unlabeled: list[Volume]
    values: dict[Path, np.ndarray]
    notes: list[str]
    reviewed: dict[str, dict]


def review_record(label_path: Path, shape: tuple[int, ...]) -> Reviewed | None:
    """The review record of a label file from its sidecar (None: no sidecar, so reviewed whole)."""
    path = sidecar_path(label_path)
    return load_reviewed(path, shape) if path.exists() else None


def _no_image(label: Path, files: list[Path], label_cases: set[str], images: Path) -> None:
    """``DataError`` for a label file without its image: its case's channel files are there, but another image of
    the folder is named as a whole case (so the folder is not read as channel files), or no image at all."""
    from .channels import CHANNEL_FILE
    from .io import case_name

    case = case_name(label)
    channels = [p.name for p in files if (m := CHANNEL_FILE.match(case_name(p))) and m["case"] == case]
    whole = [p for p in files if case_name(p) in label_cases]
    if channels and whole:
        raise DataError(f"label {label.absolute()} has the channel files {', '.join(channels)} in {images.absolute()}, "
                        f"but {whole[0].name} there is named as a whole case, so no file is read as a channel: name "
                        f"every image of the folder as channel files ({case_name(whole[0])}_0000, _0001, ... one per "
                        f"channel), or move {whole[0].name} to a folder of its own")
    raise DataError(f"label {label.absolute()} has no image of the same name in {images.absolute()}")


def load_training_data(images: Path, labels: Path, unlabeled: list[Path], ignore_label: int | None = None,
                       cache: Path | None = None, channel_names: Sequence[str] = (),
                       spacing: Sequence[float] | None = None) -> TrainingData:
    """Labeled volumes (images with a label file of the same name, restricted to what their
    ``<case>.reviewed.json`` records and to voxels not ``ignore_label``), unlabeled volumes, and
    the label values found per file. An image is one file, or nnU-Net's channel files of its case
    (``channel_files``), named ``channel_names``. Float images are held as normalised float16
    (``Volume.create(..., compact=True)``); with ``cache``, each volume is kept in that folder and opened from
    it memory-mapped (``volume_cache``), on later runs without reading the images again. ``spacing`` (z y x,
    ``--spacing``) replaces the files' own."""
    from .data import Volume
    from .io import read_image
    from .volume_cache import Built, VolumeCache

    label_paths = by_case(folder_images(labels, "--labels"))
    files = folder_images(images, "--images")
    split = channel_files(files, set(label_paths))
    image_paths = image_cases(files, split)
    paired = sorted(set(image_paths) & set(label_paths))
    if not paired:
        raise DataError(f"no label file in {labels} has the name of an image in {images}")
    orphans = sorted(set(label_paths) - set(image_paths))
    if orphans:
        _no_image(label_paths[orphans[0]], files, set(label_paths), images)
    data = TrainingData([], [], {}, [], {})
    lone = sorted(p for p in labels.glob(f"*{SIDECAR_SUFFIX}") if p.name[: -len(SIDECAR_SUFFIX)] not in label_paths)
    data.notes += [f"{p.absolute()} has no label file of its case beside it: it is not used" for p in lone]
    dims: dict[int, Path] = {}
    store = VolumeCache(cache) if cache is not None else None
    options = {"compact": True, "ignore_label": ignore_label, "spacing": list(spacing) if spacing else None}

    def check_dims(ndim: int, path: Path) -> None:
        dims.setdefault(ndim, path)
        if len(dims) > 1:
            n, other = next((n, p) for n, p in dims.items() if n != ndim)
            raise DataError(f"{path.absolute()} is {ndim}D but {other.absolute()} is {n}D: all images must be 2D, "
                            f"or all 3D")

    def cached(name: str, sources: list[Path], build: Callable[[], Built | None]) -> Built | None:
        got = build() if store is None else store.get(name, sources, options, build)
        if got is not None:
            check_dims(got[0].image.ndim, sources[0])
        return got

    def labeled_case(case: str) -> Built | None:  # None: nothing of it is reviewed
        img, gi = read_case(image_paths[case], channel_names, spacing)
        lab, gl = read_image(label_paths[case], spacing)
        check_geometry(image_paths[case][0], label_paths[case], img.shape, lab.shape, gi, gl)
        rec = review_record(label_paths[case], lab.shape)
        mask = None if rec is None or rec.whole else rec.mask()
        reviewed = None if mask is None else rec.to_dict()
        if ignore_label is not None:
            ignored = lab == ignore_label
            if ignored.any():
                mask = ~ignored if mask is None else mask & ~ignored
                lab = np.where(ignored, 0, lab)
        if mask is not None and not mask.any():
            return None
        values = check_label_map(lab, label_paths[case]).tolist()
        volume = Volume.create(img, lab, mask, name=case, spacing=gi.scale, compact=True)
        return volume, {"values": values, "reviewed": reviewed}

    def unlabeled_case(paths: list[Path]) -> Built:
        img, g = read_case(paths, channel_names, spacing)
        return Volume.create(img, name=paths[0].name, spacing=g.scale, compact=True), {}

    unlabeled_paths = [image_paths[c] for c in sorted(set(image_paths) - set(label_paths))]
    for case in bar(paired, desc="reading labeled", unit="vol", leave=False):
        sources = [*image_paths[case], label_paths[case], sidecar_path(label_paths[case])]
        got = cached(case, sources, lambda: labeled_case(case))  # noqa: B023 (called at once)
        if got is None:
            data.notes.append(f"nothing of {label_paths[case].name} is reviewed: {case} is used as unlabeled")
            unlabeled_paths.append(image_paths[case])
            continue
        volume, found = got
        data.values[label_paths[case]] = np.array(found["values"], np.int64)
        if found["reviewed"] is not None:
            data.reviewed[case] = found["reviewed"]
        data.labeled.append(volume)
    for folder in unlabeled:
        unlabeled_paths += image_cases(folder_images(folder), split).values()
    for p in bar(unlabeled_paths, desc="reading unlabeled", unit="vol", leave=False):
        data.unlabeled.append(cached(p[0].name, p, lambda: unlabeled_case(p))[0])  # noqa: B023
    if not data.labeled:
        raise DataError(f"no label file in {labels} has a reviewed voxel")
    data.notes += store.notes if store is not None else []
    return data


def reviewed_of(label_path: Path, shape: tuple[int, ...]) -> Reviewed:
    """What is reviewed of an image with this label file: its sidecar's record, else all of it."""
    return review_record(label_path, shape) or Reviewed.complete(shape)
