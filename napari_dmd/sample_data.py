"""The bundled sample data: 12 hippocampus MRI volumes (MSD Task04), 3 of them labeled."""
from __future__ import annotations

from pathlib import Path

from .errors import DataError
from .io import list_images

SAMPLE_DIR = Path(__file__).parents[1] / "sample_data"
CLASS_NAMES = ("background", "anterior", "posterior")


def sample_cases() -> list[tuple[Path, Path | None]]:
    """(image, label or None) for each sample image, in name order."""
    images, labels = SAMPLE_DIR / "images", SAMPLE_DIR / "labels"
    if not images.is_dir():
        raise DataError(f"the sample data folder {images} is missing; reinstall napari-dmd from its repository")
    return [(p, labels / p.name if (labels / p.name).is_file() else None) for p in list_images(images)]
