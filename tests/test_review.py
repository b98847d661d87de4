"""The review record: slices or whole image, its mask, and the sidecar file beside the labels."""
import json

import numpy as np
import pytest

from napari_dmd.errors import DataError
from napari_dmd.review import Reviewed, load_reviewed, save_reviewed, sidecar_path


def test_mark_unmark_and_mask_along_an_axis():
    rec = Reviewed((4, 5, 6), axis=1)
    assert not rec.mask().any()
    rec.mark(3)
    rec.mark(0)
    assert rec.is_reviewed(3) and not rec.is_reviewed(1)
    mask = rec.mask()
    assert mask.shape == (4, 5, 6) and mask[:, [0, 3]].all() and not mask[:, [1, 2, 4]].any()
    rec.unmark(3)
    assert rec.slices == {0}
    with pytest.raises(DataError, match="outside"):
        rec.mark(5)


def test_complete_record_covers_everything_and_unmark_keeps_the_rest():
    rec = Reviewed.complete((3, 4, 4))
    assert rec.whole and rec.mask().all() and rec.is_reviewed(2)
    rec.unmark(1)
    assert not rec.whole and rec.slices == {0, 2}
    assert rec.mask()[[0, 2]].all() and not rec.mask()[1].any()


def test_2d_image_is_reviewed_whole_or_not_at_all():
    rec = Reviewed((6, 7))
    rec.mark(0)
    assert rec.whole and rec.mask().all()
    rec.unmark(0)
    assert not rec.whole and not rec.mask().any()
    with pytest.raises(DataError, match="2D"):
        Reviewed((6, 7), slices={1})


def test_sidecar_round_trip_and_bad_files(tmp_path):
    label = tmp_path / "case7.nii.gz"
    path = sidecar_path(label)
    assert path == tmp_path / "case7.reviewed.json"
    rec = Reviewed((4, 5, 6), axis=2, slices={1, 4})
    save_reviewed(rec, path)
    assert load_reviewed(path, (4, 5, 6)) == rec
    assert [p.name for p in tmp_path.iterdir()] == ["case7.reviewed.json"]  # no temporary left
    with pytest.raises(DataError, match="shape"):
        load_reviewed(path, (4, 5, 7))
    path.write_text("{not json")
    with pytest.raises(DataError, match="case7.reviewed.json"):
        load_reviewed(path, (4, 5, 6))
    path.write_text(json.dumps({"shape": [4, 5, 6], "axis": 0, "slices": [9]}))
    with pytest.raises(DataError, match="outside"):
        load_reviewed(path, (4, 5, 6))
    path.write_text(json.dumps({"shape": [4, 5, 6], "axis": 3}))
    with pytest.raises(DataError, match="axis"):
        load_reviewed(path, (4, 5, 6))


def test_to_dict_is_plain_json():
    rec = Reviewed((2, 3, 4), slices={np.int64(1)})
    assert json.loads(json.dumps(rec.to_dict())) == {"shape": [2, 3, 4], "axis": 0, "slices": [1], "whole": False}
    assert Reviewed.from_dict(rec.to_dict()) == rec
