"""Tiny synthetic volumes for the tests: a bright box on noise, labeled 1 (a dimmer box labeled 2); where the
shared benchmark data is (``benchmarks/datasets.py``, its one home)."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from datasets import SHARED as SHARED_DATA  # noqa: E402, F401  (the tests import it from here)


def make_case(seed: int, shape=(16, 24, 24), classes: int = 2, dtype=np.float32, scale: float = 1.0):
    """(image, label): class 1 is a bright box, class 2 (if any) a dimmer box beside it."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    lo = [int(rng.integers(2, s // 2 - 2)) for s in shape]
    label[tuple(slice(a, a + s // 3) for a, s in zip(lo, shape))] = 1
    if classes == 3:
        label[tuple(slice(a + s // 3, a + s // 3 + s // 5) for a, s in zip(lo, shape))] = 2
    image = rng.normal(0, 0.3, shape) + 2.0 * (label == 1) + 1.0 * (label == 2)
    return (image * scale).astype(dtype), label


def write_dataset(root: Path, geometry) -> Path:
    """Three 3-class cases as files: images/case0..2, labels/ for case0 and case1, truth/ for all three."""
    from napari_dmd.io import write_image

    for k in range(3):
        img, lab = make_case(k, classes=3)
        write_image(root / "images" / f"case{k}.nii.gz", img, geometry)
        if k < 2:
            write_image(root / "labels" / f"case{k}.nii.gz", lab, geometry)
        write_image(root / "truth" / f"case{k}.nii.gz", lab, geometry)
    return root


CUBE = (16, 32, 32)


def cube_case(seed: int, shape=CUBE, classes: int = 2):
    """(image float32, labels uint8): bright box(es) on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    lo = [int(rng.integers(1, max(2, s // 2 - 2))) for s in shape]
    label[tuple(slice(a, a + max(2, s // 3)) for a, s in zip(lo, shape))] = 1
    if classes == 3:
        label[tuple(slice(a + s // 3, a + s // 3 + max(2, s // 5)) for a, s in zip(lo, shape))] = 2
    image = rng.normal(0, 0.3, shape) + 2.0 * (label == 1) + 1.0 * (label == 2)
    return image.astype(np.float32), label
