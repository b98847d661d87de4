"""Structure volumes: known volumes and spacing, components joined across slabs, a clinical-size label map,
the CSV table, bad input."""
import csv
import tracemalloc

import numpy as np
import pytest
from skimage.measure import label

from napari_dmd import data
from napari_dmd.errors import DataError
from napari_dmd.io import Geometry
from napari_dmd.structures import NO_SPACING, update_volumes_csv, volumes_table

SPACING = (0.5, 0.75, 2.0)  # x, y, z in mm: 0.75 mm³ a voxel


def known_map() -> np.ndarray:
    """Class 1: a 4×5×6 box (120 voxels) and a 2×3×5 box (30) apart; class 3: one voxel, and one touching it
    only at an edge (two components under face connectivity). Class 2 is absent."""
    lab = np.zeros((12, 14, 16), np.uint8)
    lab[1:5, 1:6, 1:7] = 1
    lab[8:10, 8:11, 8:13] = 1
    lab[10, 2, 12] = 3
    lab[11, 3, 12] = 3
    return lab


def test_volumes_of_a_known_map_with_spacing():
    rows = volumes_table(known_map(), Geometry(SPACING, (0, 0, 0), tuple(np.eye(3).ravel())),
                         ("background", "atrium", "vessel", "scar"), case="a.nii.gz")
    assert [(r["class"], r["name"]) for r in rows] == [(1, "atrium"), (2, "vessel"), (3, "scar")]
    one, two, three = rows
    assert one["voxels"] == 150 and one["unit"] == "mm³"
    assert one["volume"] == pytest.approx(112.5) and one["volume_ml"] == pytest.approx(0.1125)
    assert one["components"] == 2 and one["largest_share"] == pytest.approx(0.8)
    assert two["voxels"] == 0 and two["volume"] == 0 and two["components"] == 0 and two["largest_share"] is None
    assert three["components"] == 2 and three["largest_share"] == pytest.approx(0.5)
    assert all(r["case"] == "a.nii.gz" for r in rows)


def test_without_spacing_volumes_are_voxels_and_say_so():
    rows = volumes_table(known_map(), None)
    assert [r["name"] for r in rows] == ["class 1", "class 2", "class 3"]
    assert rows[0]["volume"] == 150 and rows[0]["unit"] == NO_SPACING and rows[0]["volume_ml"] is None


def test_a_2d_map_gets_areas():
    lab = np.zeros((10, 10), np.int32)
    lab[2:5, 2:6] = 1
    (row,) = volumes_table(lab, Geometry((0.5, 2.0), (0, 0), (1, 0, 0, 1)))
    assert row["volume"] == pytest.approx(12.0) and row["unit"] == "mm²" and row["volume_ml"] is None


def test_components_joined_across_slabs_match_whole_volume_labelling(monkeypatch):
    rng = np.random.default_rng(3)
    lab = (rng.random((20, 9, 11)) < 0.35).astype(np.uint8)  # many parts that join through several slabs
    lab[:, 0, 0] = 1  # a column crossing every slab
    whole = label(lab == 1, connectivity=1)
    sizes = np.bincount(whole.ravel())[1:]
    monkeypatch.setattr(data, "SLAB_VOXELS", 2 * 9 * 11)  # slabs of two planes
    (row,) = volumes_table(lab, None)
    assert row["components"] == whole.max() > 10
    assert row["largest_share"] == pytest.approx(sizes.max() / sizes.sum())


def test_a_clinical_size_map_without_big_copies():
    shape = (300, 512, 512)
    rng = np.random.default_rng(0)
    lab = np.zeros(shape, np.uint8)
    lab[40:260, 80:430, 90:420] = 1  # a large organ
    lab[100:180, 200:300, 200:290] = 2  # a structure inside it
    flat = lab.reshape(-1)
    flat[rng.integers(0, flat.size, 20_000)] = 3  # scattered specks across the whole volume
    expected = [int(np.count_nonzero(lab == c)) for c in (1, 2, 3)]
    tracemalloc.start()
    try:
        rows = volumes_table(lab, Geometry((0.8, 0.8, 1.5), (0, 0, 0), tuple(np.eye(3).ravel())))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < lab.nbytes / 4  # the label map is 75 MiB: no copy of it, let alone an int32 or float one
    assert [r["voxels"] for r in rows] == expected
    assert rows[0]["components"] == 1 and rows[1]["components"] == 1 and rows[2]["components"] > 19_000
    assert rows[0]["volume_ml"] == pytest.approx(expected[0] * 0.96 / 1000)


def test_volumes_csv_keeps_other_cases_and_replaces_a_case_written_again(tmp_path):
    path = tmp_path / "out" / "volumes.csv"
    geometry = Geometry(SPACING, (0, 0, 0), tuple(np.eye(3).ravel()))
    update_volumes_csv(path, "a.nii.gz", volumes_table(known_map(), geometry, ("bg", "atrium", "vessel", "scar")))
    update_volumes_csv(path, "b.nii.gz", volumes_table(known_map(), None))
    smaller = known_map()
    smaller[8:10, 8:11, 8:13] = 0
    update_volumes_csv(path, "a.nii.gz", volumes_table(smaller, geometry))
    rows = list(csv.DictReader(path.open(newline="", encoding="utf-8")))
    assert [(r["case"], r["class"]) for r in rows] == [("b.nii.gz", "1"), ("b.nii.gz", "2"), ("b.nii.gz", "3"),
                                                       ("a.nii.gz", "1"), ("a.nii.gz", "2"), ("a.nii.gz", "3")]
    a1 = rows[3]
    assert (a1["voxels"], a1["volume"], a1["unit"], a1["volume_ml"], a1["components"], a1["largest_share"]) == (
        "120", "90.000", "mm³", "0.090000", "1", "1.0000")
    assert rows[0]["unit"] == NO_SPACING and rows[0]["volume"] == "150" and rows[0]["volume_ml"] == ""
    assert rows[4]["largest_share"] == ""


@pytest.mark.parametrize("bad, geometry, says", [
    (np.zeros((4, 4, 4), np.float32), None, "integers"),
    (np.full((4, 4, 4), -1, np.int16), None, "negative"),
    (np.zeros((4, 4), np.uint8), Geometry((1, 1, 1), (0, 0, 0), tuple(np.eye(3).ravel())), "dimensions"),
])
def test_bad_label_maps_get_one_line(bad, geometry, says):
    with pytest.raises(DataError, match=says):
        volumes_table(bad, geometry)
