"""The bundled sample data: 12 hippocampus MRI volumes (MSD Task04), 3 of them labeled, as a workspace (MSD layout).

The volumes live in the repository's top-level ``sample_data/`` folder, which installs as the package
``napari_dmd._sample`` (setup.cfg), so they are found the same way in an editable install and in a wheel.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from .errors import DataError
from .io import list_images
from .workspace_layout import detect

# A regular package unpacked on disk (wheel or editable install), so its Traversable is a real folder.
SAMPLE_DIR = Path(str(files("napari_dmd._sample")))
CLASS_NAMES = detect(SAMPLE_DIR).class_names  # from its dataset.json: background, anterior, posterior
DEMO_ITERATIONS = 300  # the demo's training on the sample data, headless and in the dock


def sample_cases() -> list[tuple[Path, Path | None]]:
    """(image, label or None) for each sample image, in name order."""
    images, labels = SAMPLE_DIR / "imagesTr", SAMPLE_DIR / "labelsTr"
    if not images.is_dir():
        raise DataError(f"the sample data folder {images} is missing; reinstall napari-dmd")
    return [(p, labels / p.name if (labels / p.name).is_file() else None) for p in list_images(images)]
