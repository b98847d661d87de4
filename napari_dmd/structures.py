"""Structure volumes of a label map: per class, its volume (mm³ and mL from the voxel spacing), its
connected components (face connectivity, as ``inference.largest_components``) and the largest one's share.

Memory: scikit-image's ``regionprops`` on the label map finds each class's bounding box in one pass; each
class is then measured inside its box, slab by slab (a boolean mask and int32 component labels of one slab,
``skimage.measure.label``), so no copy of a whole clinical volume is made.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from io import StringIO
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import label, regionprops

from .data import slabs
from .errors import DataError
from .io import Geometry, write_text

VOLUMES_CSV = "volumes.csv"  # the table predict writes beside its label maps
MM3_PER_ML = 1000.0
NO_SPACING = "voxels (no spacing)"
FIELDS = ["case", "class", "name", "voxels", "volume", "unit", "volume_ml", "components", "largest_share"]


def _unit(ndim: int, geometry: Geometry | None) -> str:
    """The unit of the volume column: mm³ (mm² for a 2D image), or voxels when the spacing is unknown."""
    if geometry is None:
        return NO_SPACING
    return "mm³" if ndim == 3 else "mm²"


def _measure(box: np.ndarray, c: int) -> tuple[int, int, int]:
    """Voxels of class ``c`` in ``box`` (its bounding box), its number of face-connected components and the
    voxels of the largest one. Labelled slab by slab along axis 0 (``data.slabs``); the parts that touch
    across two slabs are joined as a graph's connected components, so memory stays that of one slab."""
    sizes: list[np.ndarray] = []
    links: list[np.ndarray] = []  # (2, k) pairs of touching parts, numbered from 0 over all slabs
    total, last = 0, None  # parts so far; the previous slab's last plane, numbered over all slabs from 1
    for s in slabs(box.shape):
        parts, n = label(box[s] == c, connectivity=1, return_num=True)
        if n:
            sizes.append(np.bincount(parts.reshape(-1), minlength=n + 1)[1:])
            parts[parts > 0] += total
            if last is not None:
                touch = (last > 0) & (parts[0] > 0)
                base = total + n + 1
                keys = np.unique(last[touch].astype(np.int64) * base + parts[0][touch])
                links.append(np.stack([keys // base, keys % base]) - 1)
            total += n
        last = parts[-1]
    if total == 0:
        return 0, 0, 0
    size = np.concatenate(sizes)
    pairs = np.concatenate(links, axis=1) if links else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(pairs.shape[1], np.int8), (pairs[0], pairs[1])), shape=(total, total))
    n, joined = connected_components(graph, directed=False)
    return int(size.sum()), n, int(np.bincount(joined, weights=size).max())


def volumes_table(labels: np.ndarray, geometry: Geometry | None, class_names: Sequence[str] = (),
                  case: str = "") -> list[dict]:
    """One row per foreground class (keys ``FIELDS``): the named classes (``class_names``, background first)
    and any other label present. ``volume`` is in ``unit``: mm³ (mm² for a 2D image) from ``geometry``'s
    spacing, or voxels when ``geometry`` is ``None``; ``volume_ml`` is ``None`` unless the unit is mm³.
    ``largest_share`` is the largest component's fraction of the class's voxels (``None`` for an absent class)."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim not in (2, 3):
        raise DataError(f"a label map of integers in 2 or 3 dimensions is needed, got {labels.dtype} {labels.shape}")
    if geometry is not None and geometry.ndim != labels.ndim:
        raise DataError(f"the geometry has {geometry.ndim} dimensions, the label map {labels.ndim}")
    if labels.size and labels.min() < 0:
        raise DataError("a label map holds no negative values")
    regions = {r.label: r for r in regionprops(labels)}  # each class's bounding box, in one pass
    unit = _unit(labels.ndim, geometry)
    voxel = float(np.prod(geometry.spacing)) if geometry is not None else 1.0
    rows = []
    for c in range(1, max(len(class_names), max(regions, default=0) + 1)):
        count, n, largest = _measure(labels[regions[c].slice], c) if c in regions else (0, 0, 0)
        volume = count * voxel
        rows.append({
            "case": case, "class": c, "name": class_names[c] if c < len(class_names) else f"class {c}",
            "voxels": count, "volume": volume if geometry is not None else count, "unit": unit,
            "volume_ml": volume / MM3_PER_ML if unit == "mm³" else None, "components": n,
            "largest_share": largest / count if count else None,
        })
    return rows


def _csv_row(row: dict) -> dict:
    """A row of ``volumes_table`` with its numbers written to a sensible precision (empty for ``None``)."""
    digits = {"volume": 3, "volume_ml": 6, "largest_share": 4}
    return {k: f"{v:.{digits[k]}f}" if k in digits and isinstance(v, float) else v for k, v in row.items()}


def update_volumes_csv(path: Path, case: str, rows: list[dict]) -> None:
    """Write ``rows`` (``volumes_table``) as ``case``'s rows of the CSV table at ``path``, after the other
    cases' rows already there, atomically: the table always lists every case written into it."""
    path = Path(path)
    kept: list[dict] = []
    if path.is_file():
        try:
            with path.open(newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if r.get("case") != case]
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is not a volumes table ({exc}): move it away") from exc
    text = StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept + [_csv_row({**r, "case": case}) for r in rows])
    write_text(path, text.getvalue())
