"""A cohort in a folder: the cases of a workspace listed from their headers, read one at a time, their labels
saved with a history, one writer at a time (``workspace_lock``).

Listing reads file headers and review records only, never voxel data. Saving a case's labels goes through
the project's atomic, verified writer (``io.write_image``), keeps the version it replaces
(``label_history``), and refuses a label file that changed on disk since it was read. A workspace opened
while another process holds it (or on a read-only disk) opens read-only, and says why.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError
from .label_history import LabelHistory, label_hash
from .review import SIDECAR_SUFFIX, Reviewed, load_reviewed, save_reviewed, sidecar_path
from .workspace_layout import NNUNET, Layout, detect
from .workspace_lock import WorkspaceLock

if TYPE_CHECKING:
    from .channels import Channels
    from .io import Geometry



@dataclass(frozen=True)
class CaseInfo:
    """One case as its headers and review record describe it: no voxel data read."""

    name: str
    images: tuple[Path, ...]
    label: Path | None  # the label file, where the case has one
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    channels: int
    reviewed: int | None  # slices reviewed; None: the label file is reviewed whole; 0: not labelled
    test: bool = False  # a case of imagesTs/: predicted, never trained on

    @property
    def labelled_whole(self) -> bool:
        """Whether every voxel of the case is reviewed (a label file without a partial record)."""
        return self.label is not None and self.reviewed is None

    @property
    def state(self) -> str:
        """'test', 'unlabelled', 'labelled' or 'N of M slices reviewed'."""
        if self.test:
            return "test"
        if self.label is None or self.reviewed == 0:
            return "unlabelled"
        return "labelled" if self.reviewed is None else f"{self.reviewed} of {self.shape[0]} slices reviewed"


@dataclass
class CaseData:
    """One case read for view: its image, geometry, labels (None: none yet), review record, and the hash of the
    label file as read (what ``Workspace.save_labels`` checks before it writes)."""

    info: CaseInfo
    image: Channels
    geometry: Geometry
    labels: np.ndarray | None
    reviewed: Reviewed
    label_hash: str | None


class Workspace:
    """The workspace in ``folder`` (see ``workspace_layout``); writable unless another process holds it or the
    disk refuses, ``read_only`` then saying why. Use it as a context manager, or ``close`` it."""

    def __init__(self, folder: Path, writable: bool = True):
        self.layout: Layout = detect(Path(folder))
        self.history = LabelHistory(self.layout.state / "history")
        self.lock = WorkspaceLock(self.layout.state) if writable else None
        self.read_only: str | None = "opened for reading" if self.lock is None else self.lock.refused

    def close(self) -> None:
        """Release the workspace for another writer."""
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ cases
    def _case_files(self, folder: Path) -> dict[str, list[Path]]:
        """The image files of each case in ``folder`` (one per channel in nnU-Net's layout), checked against
        ``dataset.json``'s file ending."""
        from .channels import CHANNEL_FILE
        from .folders import image_cases
        from .io import case_name, extension, list_images

        files = list_images(folder)
        ending = self.layout.file_ending
        wrong = next((p for p in files if ending and not p.is_dir() and extension(p) != ending), None)
        if wrong is not None:
            raise DataError(f"{wrong.absolute()} ends in {extension(wrong)}, but {self.layout.root / 'dataset.json'} "
                            f"declares file_ending {ending}: convert it, or correct file_ending")
        split = self.layout.kind == NNUNET and (bool(self.layout.channel_names)
                                                or bool(files) and all(CHANNEL_FILE.match(case_name(p)) for p in files))
        return image_cases(files, split)

    def cases(self, only: str | None = None) -> list[CaseInfo]:
        """Every case of the workspace (training cases, then ``imagesTs/``), from headers and review records
        (``only``: that case alone, no other header read)."""
        from .folders import by_case, check_geometry
        from .io import Geometry, image_header, list_images

        labels = by_case(list_images(self.layout.labels)) if self.layout.labels.is_dir() else {}
        found: list[CaseInfo] = []
        for folder, test in ((self.layout.images, False), (self.layout.tests, True)):
            if folder is None:
                continue
            cases = self._case_files(folder)
            if not test:
                orphan = sorted(set(labels) - set(cases))
                if orphan:
                    raise DataError(f"label {labels[orphan[0]].absolute()} has no image of case {orphan[0]!r} in "
                                    f"{folder.absolute()}")
            for case, paths in sorted(cases.items()):
                if only is not None and case != only:
                    continue
                shape, spacing, channels = image_header(paths[0])
                channels *= len(paths)
                self._check_channels(case, paths, channels)
                label = None if test else labels.get(case)
                reviewed: int | None = 0
                if label is not None:
                    lshape, lspacing, _ = image_header(label)
                    check_geometry(paths[0], label, shape, lshape, Geometry.from_scale(spacing),
                                   Geometry.from_scale(lspacing))
                    record = sidecar_path(label)
                    rec = load_reviewed(record, shape) if record.is_file() else None
                    reviewed = None if rec is None or rec.whole else len(rec.marked())
                found.append(CaseInfo(case, tuple(paths), label, shape, spacing, channels, reviewed, test))
        return found

    def _check_channels(self, case: str, paths: list[Path], channels: int) -> None:
        declared = self.layout.channel_names
        if declared and channels != len(declared):
            raise DataError(f"case {case!r} ({paths[0].absolute()}) has {channels} channel(s), but "
                            f"{self.layout.root / 'dataset.json'} declares {len(declared)} ({', '.join(declared)})")

    def case(self, name: str) -> CaseInfo:
        """The case ``name`` (its headers alone read); ``DataError`` where there is none."""
        got = self.cases(only=name)
        if not got:
            raise DataError(f"the workspace {self.layout.root.absolute()} has no case {name!r} (napari-dmd workspace "
                            f"{self.layout.root} lists them)")
        return got[0]

    def read(self, name: str) -> CaseData:
        """Case ``name`` read for view: image, labels, review record and the label file's hash."""
        from .folders import read_case

        info = self.case(name)
        image, geometry = read_case(list(info.images), self.layout.channel_names)
        return CaseData(info, image, geometry, *_labels(self.label_path(info), info.images[0], image.shape, geometry))

    def reread_labels(self, case: CaseData) -> None:
        """``case``'s labels, review record and label hash as its label file is on disk now (another program
        changed it); ``case.labels`` is None where there is no label file."""
        case.labels, case.reviewed, case.label_hash = _labels(self.label_path(case.info), case.info.images[0],
                                                              case.image.shape, case.geometry)

    # ------------------------------------------------------------------ saving
    def label_path(self, info: CaseInfo) -> Path:
        """Where the labels of a case are saved: its label file, else a new one in the labels folder."""
        from .io import WRITABLE_EXTENSIONS, extension

        if info.label is not None:
            return info.label
        ext = self.layout.file_ending or extension(info.images[0])
        return self.layout.labels / f"{info.name}{ext if ext in WRITABLE_EXTENSIONS else '.nii.gz'}"

    def save_labels(self, case: CaseData, labels: np.ndarray, reviewed: Reviewed) -> Path:
        """Save the labels and review record of ``case`` (as read by ``read``), keeping the version they replace;
        ``DataError`` (nothing changed on disk) if the workspace is read-only, the label file changed since it
        was read, or the write fails."""
        if self.read_only:
            raise DataError(f"not saved: {self.read_only}")
        if case.info.test:
            raise DataError(f"{case.info.name} is a test case (imagesTs/): its labels are not kept in the workspace")
        if labels.shape != case.image.shape:
            raise DataError(f"labels of shape {labels.shape} for case {case.info.name!r} of shape {case.image.shape}")
        path = self.label_path(case.info)
        self.history.check_unchanged(path, case.label_hash)
        version = self.history.keep_previous(case.info.name, path)
        try:
            from .io import write_image

            write_image(path, labels, case.geometry)
            save_reviewed(reviewed, sidecar_path(path))
        except DataError:
            self.history.drop(version)
            raise
        self.history.prune(case.info.name)
        case.label_hash, case.labels, case.reviewed = label_hash(path), labels, reviewed
        return path

    def restore(self, case: CaseData, version: Path) -> Path:
        """Make a saved ``version`` of ``case`` its current labels again (the current version kept in turn)."""
        from .io import read_image

        saved = [p for p in version.iterdir() if not p.name.endswith(SIDECAR_SUFFIX)]
        if len(saved) != 1:
            raise DataError(f"{version.absolute()} is not a saved version of {case.info.name!r}")
        labels, _ = read_image(saved[0])
        record = sidecar_path(saved[0])
        reviewed = load_reviewed(record, labels.shape) if record.is_file() else Reviewed.complete(labels.shape)
        return self.save_labels(case, labels, reviewed)

    # ------------------------------------------------------------------ runs and results
    @property
    def runs(self) -> Path:
        """The folder of the workspace's training runs."""
        return self.layout.state / "runs"

    @property
    def cache(self) -> Path:
        """The folder of its cached volumes (``train --cache``)."""
        return self.layout.state / "cache"

    def new_run(self) -> Path:
        """A new run folder, named by its start time."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        candidates = (self.runs / (stamp if k == 1 else f"{stamp}-{k}") for k in range(1, 1000))
        return next(p for p in candidates if not p.exists())

    def latest_model(self) -> Path:
        """The model of the workspace's latest run; ``DataError`` where no run wrote one."""
        from .config import CHECKPOINT_NAME

        models = sorted(self.runs.glob(f"*/{CHECKPOINT_NAME}"), key=lambda p: p.stat().st_mtime) \
            if self.runs.is_dir() else []
        if not models:
            raise DataError(f"the workspace {self.layout.root.absolute()} has no trained model yet: train one "
                            f"(napari-dmd train --workspace {self.layout.root}), or give --model")
        return models[-1]

    def predictions(self, model: Path) -> Path:
        """Where the predictions of ``model`` go: ``.napari-dmd/predictions/<its run folder's name>``."""
        return self.layout.state / "predictions" / Path(model).resolve().parent.name

    def check_label_values(self, values: dict[Path, np.ndarray]) -> None:
        """``DataError`` naming the file where a label value is not a class ``dataset.json`` declares."""
        names = self.layout.class_names
        beyond = next(((p, int(v.max())) for p, v in values.items() if names and v.size and v.max() >= len(names)),
                      None)
        if beyond is not None:
            raise DataError(f"{beyond[0].absolute()} holds label value {beyond[1]}, but "
                            f"{self.layout.root / 'dataset.json'} declares {len(names)} labels "
                            f"({', '.join(f'{i} {n}' for i, n in enumerate(names))})")


def _labels(path: Path, image_path: Path, shape: tuple[int, ...],
            geometry: Geometry) -> tuple[np.ndarray | None, Reviewed, str | None]:
    """The label file ``path`` of a case (hashed before it is read, so a later change is caught; its geometry
    checked against the case's image), its review record (the whole case reviewed without one), and the hash; an
    empty record alone where there is no label file."""
    from .folders import check_geometry
    from .io import read_image

    if not path.is_file():
        return None, Reviewed(shape), None
    read_hash = label_hash(path)
    labels, gl = read_image(path)
    check_geometry(image_path, path, shape, labels.shape, geometry, gl)
    record = sidecar_path(path)
    reviewed = load_reviewed(record, shape) if record.is_file() else Reviewed.complete(shape)
    return labels, reviewed, read_hash
