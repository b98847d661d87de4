"""The plugin's state without Qt or napari: layers, pairing, review records, runs, suggestions."""
import json

import numpy as np
import pytest

from napari_dmd.config import RunOptions, TrainConfig
from napari_dmd.current_model import new_run_dir
from napari_dmd.errors import DataError
from napari_dmd.jobs import Control, Finished, ImageResult, Started, train_and_predict, training_threads
from napari_dmd.label_book import LabelStats, slices_of
from napari_dmd.review import Reviewed
from napari_dmd.session import Session, reviewed_dice, row_info, unpaired_reasons

from synthetic import make_case


def session_with_cases():
    s = Session()
    img0, lab0 = make_case(0)
    img1, _ = make_case(1)
    s.add_image("case0", img0)
    s.add_labels("case0 labels", lab0)
    s.add_image("case1", img1)
    return s, lab0


def test_pairing_and_the_users_choice():
    s, _ = session_with_cases()
    assert s.pairs() == {"case0": "case0 labels", "case1": None}
    s.pair("case0", None)
    assert s.pairs()["case0"] is None
    s.pair("case0", "case0 labels")
    s.remove("case0 labels")
    assert s.pairs()["case0"] is None  # the picked layer is gone
    s.add_labels("wrong", np.zeros((3, 3, 3), np.uint8))
    assert "no image of shape 3×3×3" in unpaired_reasons(s)["wrong"]


def test_complete_labels_count_as_reviewed_whole_new_ones_as_not_reviewed():
    s, lab0 = session_with_cases()
    assert s.reviewed["case0 labels"].whole
    assert row_info(s, "case0", "case0 labels").startswith("16/16 reviewed")
    s.add_labels("case1 labels", np.zeros_like(lab0))
    rec = s.reviewed["case1 labels"]
    assert not rec.whole and not rec.slices
    s.book.painted("case1 labels", {3, 4})  # painting (or erasing) a slice reviews it
    assert rec.slices == {3, 4} and "2/16 reviewed, all background" in row_info(s, "case1", "case1 labels")
    saved = Reviewed(lab0.shape, slices={1})
    s.add_labels("case0 labels", lab0, reviewed=saved)  # a record read from the sidecar is kept
    assert s.reviewed["case0 labels"] is saved


def test_mark_and_unmark_the_current_slice():
    s, _ = session_with_cases()
    rec = s.mark("case0", 7, reviewed=False)
    assert not rec.whole and 7 not in rec.slices and len(rec.slices) == 15
    s.mark("case0", 7)
    assert 7 in rec.slices
    with pytest.raises(DataError, match="no labels"):
        s.mark("case1", 0)


def test_stats_are_cached_until_the_layer_reports_an_edit():
    s, lab0 = session_with_cases()
    st = s.stats["case0 labels"]
    assert st.labeled_slices == LabelStats.of(lab0).labeled_slices == int(lab0.any(axis=(1, 2)).sum())
    lab0[:] = 0  # an edit the session was not told of: the cached statistics stand
    assert st.top == 1
    s.book.painted("case0 labels", {int(np.flatnonzero(st.slice_max)[0])})  # only the painted slice is rescanned
    assert st.top == 1 and st.labeled_slices == LabelStats.of(make_case(0)[1]).labeled_slices - 1
    s.book.update_stats("case0 labels")
    assert s.stats["case0 labels"].top == 0 and s.stats["case0 labels"].labeled_slices == 0


def test_rename_keeps_choices_records_and_results():
    s, _ = session_with_cases()
    s.pair("case0", "case0 labels")
    s.rename("case0 labels", "mine")
    assert s.pairs()["case0"] == "mine" and "mine" in s.reviewed
    s.show_result("case1", np.zeros((16, 24, 24), np.uint8), np.zeros((16, 24, 24), np.float32), np.zeros(16))
    s.rename("case1", "other")
    assert "other" in s.current.results.disagreement and "other" in s.current.results.slice_scores
    s.remove("other")
    assert not any("other" in t for t in s.current.results.tables())


def test_training_set_carries_only_partial_records_and_the_run_keeps_them(tmp_path):
    s, lab0 = session_with_cases()
    s.add_labels("case1 labels", np.zeros_like(lab0))
    s.pair("case1", "case1 labels")
    with pytest.raises(DataError, match="empty"):
        s.training_set()
    s.labels["case1 labels"].data[5, 2:6, 2:6] = 1
    s.book.painted("case1 labels", {5})
    data = s.training_set()
    assert set(data.reviewed) == {"case1"} and data.reviewed["case1"].slices == {5}
    job = s.begin_run(config_of, RunOptions(), folder=str(tmp_path / "run"))
    kept = json.loads((tmp_path / "run" / "reviewed.json").read_text())
    assert kept["partly_reviewed"]["case1"]["slices"] == [5] and job.run_dir == s.current.run_dir == tmp_path / "run"


def config_of(num_classes, class_names, ndim):
    return TrainConfig(num_classes=num_classes, class_names=class_names, iterations=2, patch_size=(16, 16, 16),
                       labeled_batch=1, unlabeled_batch=1, device="cpu", precision="fp32", checkpoint_every=1000)


def test_start_to_finished_without_qt(tmp_path):
    """The session's transitions drive a whole run: Start's job, the run, Finished, a warm start, a prediction."""
    s, _ = session_with_cases()
    with pytest.raises(DataError, match="no model yet"):
        s.begin_prediction()
    import torch

    before = torch.get_num_threads()
    job = s.begin_run(config_of, RunOptions(refresh_every=1000, threads=1), folder=str(tmp_path / "run"))
    assert s.current.class_names == ("background", "class 1") and job.config.num_classes == 2
    messages, during = [], set()
    for msg in train_and_predict(job, Control()):  # (the run's thread is this one here)
        messages.append(msg)
        during.add(torch.get_num_threads())
    assert during == {1} and torch.get_num_threads() == before  # the run's threads, then PyTorch's again
    started, finished = messages[1], messages[-1]  # after 'Preparing'
    assert isinstance(started, Started) and started.plan.patch == (16, 16, 16)
    assert isinstance(finished, Finished) and not finished.stopped
    assert sum(isinstance(m, ImageResult) for m in messages) == 2  # the final refresh: both images
    s.current.finished(finished)
    assert s.current.model is finished.model and s.current.path == tmp_path / "run" / "model.pt"
    assert s.current.path.is_file()
    warm = s.begin_run(config_of, RunOptions(), warm=True, folder=str(tmp_path / "run"))
    assert warm.init == tmp_path / "run" / "model.pt" and warm.run_dir != tmp_path / "run"  # never the same folder
    assert [name for name, _ in s.begin_prediction()] == ["case0", "case1"]
    s.current.saved(tmp_path / "elsewhere.pt")
    with pytest.raises(DataError, match="no checkpoint file"):
        s.begin_run(config_of, RunOptions(), warm=True)


def test_suggestions_leave_out_reviewed_slices():
    s, lab0 = session_with_cases()
    d = np.random.default_rng(0).random(lab0.shape).astype(np.float32)
    s.show_result("case0", lab0, d, d.mean(axis=(1, 2)))
    s.show_result("case1", lab0, d, d.mean(axis=(1, 2)))
    assert all(g.image == "case1" for g in s.suggestions())  # case0 is reviewed whole
    s.mark("case0", 3, reviewed=False)
    assert {g.image for g in s.suggestions()} == {"case0", "case1"}
    assert all(g.index == 3 for g in s.suggestions() if g.image == "case0")


def test_a_new_run_never_reuses_a_folder_holding_a_run(tmp_path):
    picked = tmp_path / "run"
    assert new_run_dir(picked) == picked  # new or empty: used as is
    picked.mkdir()
    (picked / "model.pt").write_text("x")
    other = new_run_dir(picked)
    assert other != picked and other.parent == tmp_path and other.name.startswith("run-")
    other.mkdir()
    (other / "model.pt").write_text("x")
    assert new_run_dir(picked) not in (picked, other)


def test_slices_of_paint_atoms():
    class Atom:
        slice_key = (slice(3, 5), slice(0, 4), slice(0, 4))

    legacy = ((np.array([7, 7, 9]), np.array([0, 1, 2]), np.array([0, 0, 0])), np.zeros(3), 1)
    assert slices_of([Atom(), legacy]) == {3, 4, 7, 9}


def channel_session():
    """brain_T1 + brain_T2 (one case, labeled), scan 1 / scan 2 (two cases), big_T1 / big_T2 (different shapes)."""
    s = Session()
    img, lab = make_case(0)
    for name in ("brain_T1", "brain_T2", "scan 1", "scan 2", "big_T1"):
        s.add_image(name, img.copy())
    s.add_image("big_T2", np.zeros((16, 24, 25), np.float32))
    s.add_labels("brain labels", lab)
    return s


def test_channel_layers_of_one_case_are_grouped_by_default():
    s = channel_session()
    assert s.grouping.members() == {"brain_T2": "brain_T1"}
    assert s.grouping.cases() == ["brain_T1", "scan 1", "scan 2", "big_T1", "big_T2"]
    assert s.pairs()["brain_T1"] == "brain labels" and "brain_T2" not in s.pairs()
    image = s.rows()[0].image
    assert image.names == ("T1", "T2") and image.arrays[1] is s.images["brain_T2"].data  # by reference
    assert row_info(s, "brain_T2", None) == "channel of brain_T1"
    assert row_info(s, "brain_T1", "brain labels").startswith("2 channels (T1, T2) · 16/16 reviewed")
    assert s.grouping.case_of("brain_T2") == "brain_T1"
    assert s.grouping.channels_of("brain_T1") == ["brain_T1", "brain_T2"]
    assert s.training_channels() == 2  # the plan (time and precision check) is of a 2-channel network
    s.grouping.group("brain_T2", None)
    assert s.training_channels() == 1


def test_channel_grouping_is_changeable_and_survives_renames_and_removals():
    s = channel_session()
    s.grouping.group("brain_T2", None)  # own case by hand
    assert s.grouping.members() == {}
    s.grouping.group("scan 2", "scan 1")
    s.grouping.group("brain_T1", "brain_T2")  # the other way round: the picked case stays a case
    assert s.grouping.members() == {"scan 2": "scan 1", "brain_T1": "brain_T2"}
    s.grouping.group("big_T2", "big_T1")  # another shape: not a channel
    assert "big_T2" not in s.grouping.members() and s.grouping.groupable("big_T2") == []
    s.rename("scan 1", "patient")
    assert s.grouping.members()["scan 2"] == "patient"
    s.remove("patient")
    assert "scan 2" in s.grouping.cases() and not s.choices["scan 2"].grouped  # the picked case is gone
    s.grouping.group("brain_T1", None)
    s.grouping.group("brain_T2", None)
    s.choices["brain_T2"].grouped = False  # back to the default
    assert s.grouping.members() == {"brain_T2": "brain_T1"}


def test_rgb_layer_is_a_case_of_three_channels():
    s = Session()
    s.add_image("photo", np.zeros((20, 30, 3), np.uint8), rgb=True)
    lab = np.zeros((20, 30), np.uint8)
    lab[5:9, 5:9] = 1
    s.add_labels("photo labels", lab)
    assert s.choices["photo"].include and s.pairs() == {"photo": "photo labels"}
    image = s.rows()[0].image
    assert (image.count, image.shape, image.names) == (3, (20, 30), ("red", "green", "blue"))
    assert row_info(s, "photo", "photo labels") == "3 channels (red, green, blue) · reviewed"
    assert s.training_set().ndim == 2


def test_a_model_of_another_channel_count_is_refused_for_warm_start_and_prediction():
    from types import SimpleNamespace

    s = channel_session()
    s.grouping.choice("big_T2").include = False
    s.grouping.choice("scan 1").include = False
    s.grouping.choice("scan 2").include = False
    s.grouping.choice("big_T1").include = False
    assert s.training_set().labeled[0][1].count == 2
    s.current.model = SimpleNamespace(class_names=("bg", "fg"), ndim=3, channels=("image",))
    with pytest.raises(DataError, match="the current model takes 1 channel"):
        s.training_set(warm=True)
    with pytest.raises(DataError, match=r"the model takes 1 channel\(s\) \(image\); no ticked 3D case has 1"):
        s.begin_prediction()
    s.grouping.choice("scan 1").include = True
    assert [n for n, _ in s.begin_prediction()] == ["scan 1"]
    s.grouping.choice("scan 1").include = False
    s.current.model = SimpleNamespace(class_names=("bg", "fg"), ndim=3, channels=("T1", "T2"))
    assert [(n, img.count) for n, img in s.begin_prediction()] == [("brain_T1", 2)]


def test_a_refresh_measures_a_multichannel_case_by_one_channel(monkeypatch):
    from napari_dmd import jobs
    from napari_dmd.channels import Channels
    from napari_dmd.jobs import View, refresh_items

    big = np.broadcast_to(np.zeros(1, np.float32), (40, 512, 512))  # 10.5 megavoxels a channel, no memory
    monkeypatch.setattr(jobs, "REFRESH_WHOLE_MVOXELS", 10)
    items = refresh_items([("a", Channels([big, big], ("T1", "T2")))], View("a", 20), final=False)
    assert items[0][2] is not None and items[0][2][0] < 20 < items[0][2][1]  # the slab in view, not the whole case


def test_training_threads_leave_the_viewer_a_core_unless_set():
    assert training_threads(0, 2) == 1 and training_threads(0, 1) == 1 and training_threads(0, 16) == 15
    assert training_threads(2, 2) == 2


def test_the_dice_on_the_reviewed_slices_compares_the_prediction_with_the_labels_there_only():
    s, lab0 = session_with_cases()
    assert reviewed_dice(s) is None  # no prediction yet
    labeled = [i for i in range(lab0.shape[0]) if lab0[i].any()]
    k, other = labeled[0], labeled[-1]
    rec = s.reviewed["case0 labels"]
    rec.whole, rec.slices = False, {k}
    pred = lab0.copy()
    pred[other] = 0  # wrong on an unreviewed slice only: not counted
    s.show_result("case0", pred, np.zeros(lab0.shape, np.float32), np.zeros(lab0.shape[0]))
    assert reviewed_dice(s) == 1.0
    pred[k] = 0  # nothing predicted where the user reviewed labels
    assert reviewed_dice(s) == 0.0
