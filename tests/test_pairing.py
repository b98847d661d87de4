"""Pairing layers into training data: plain functions, no viewer."""
import numpy as np
import pytest

from napari_dmd.channels import Channels
from napari_dmd.errors import DataError
from napari_dmd.pairing import (
    LayerInfo,
    Row,
    base_name,
    build_volumes,
    channel_token,
    default_groups,
    default_pairs,
    image_problem,
    layer_channels,
    training_set,
)

from synthetic import cube_case


def test_base_name_strips_label_words_and_copy_suffix():
    assert base_name("case_007_seg") == "case_007"
    assert base_name("Case 7 labels [1]") == "case 7"
    assert base_name("hippocampus_001 labels") == "hippocampus_001"
    assert base_name("labels") == "labels"


def test_default_pairs_by_shape_then_name():
    images = [LayerInfo("brain_a", (10, 20, 20)), LayerInfo("brain_b", (10, 20, 20)), LayerInfo("c", (5, 5, 5))]
    labels = [LayerInfo("brain_b_seg", (10, 20, 20)), LayerInfo("c labels", (6, 5, 5))]
    assert default_pairs(images, labels) == {"brain_a": None, "brain_b": "brain_b_seg", "c": None}


def test_rgb_images_are_three_channels_paired_by_their_spatial_shape():
    images = [LayerInfo("photo", (20, 20, 3), rgb=True)]
    assert default_pairs(images, [LayerInfo("photo labels", (20, 20, 3))]) == {"photo": None}
    assert default_pairs(images, [LayerInfo("photo labels", (20, 20))]) == {"photo": "photo labels"}
    assert image_problem(images[0]) is None
    rgba = layer_channels(np.zeros((20, 20, 4), np.uint8), rgb=True)
    assert (rgba.count, rgba.shape, rgba.names) == (4, (20, 20), ("red", "green", "blue", "alpha"))


def test_channel_tokens_and_default_groups():
    assert channel_token("brain_T1") == ("brain", "T1") and channel_token("case_0001") == ("case", "0001")
    assert channel_token("brain-flair") == ("brain", "flair") and channel_token("x.T1ce") == ("x", "T1ce")
    assert channel_token("scan 1") is None and channel_token("T1") is None
    infos = [LayerInfo("brain_T1", (8, 9, 9)), LayerInfo("brain_T2", (8, 9, 9)), LayerInfo("other_T2", (8, 9, 9)),
             LayerInfo("case_0000", (8, 9, 9)), LayerInfo("case_0001", (8, 9, 9)), LayerInfo("scan 1", (8, 9, 9)),
             LayerInfo("scan 2", (8, 9, 9)), LayerInfo("big_T1", (8, 9, 9)), LayerInfo("big_T2", (8, 9, 10))]
    assert default_groups(infos) == {"brain_T2": "brain_T1", "case_0001": "case_0000"}


def rows():
    img0, lab0 = cube_case(0)
    img1, _ = cube_case(1)
    return [Row("a", img0, True, lab0, "a labels"), Row("b", img1, True)]


def test_training_set_counts_classes_and_freezes_labels():
    r = rows()
    data = training_set(r)
    assert (len(data.labeled), len(data.unlabeled), data.num_classes, data.ndim) == (1, 1, 2, 3)
    assert data.class_names == ("background", "class 1")
    frozen = data.frozen().labeled[0][2]
    assert frozen is not r[0].labels and np.array_equal(frozen, r[0].labels)
    assert not data.notes


def test_training_set_class_names_from_layer_metadata_and_model():
    r = rows()
    r[0].class_names = ("bg", "cube", "spare")
    assert training_set(r).class_names == ("bg", "cube")
    assert training_set(rows(), model_class_names=("bg", "x", "y")).num_classes == 3


@pytest.mark.parametrize("change, words", [
    (lambda r: setattr(r[0], "labels", r[0].labels[:-1]), "shape"),
    (lambda r: setattr(r[0], "labels", np.zeros_like(r[0].labels)), "empty"),
    (lambda r: setattr(r[0], "labels", None), "no image has labels"),
    (lambda r: setattr(r[1], "image", np.zeros((2, 4, 8, 8))), "4D"),
    (lambda r: setattr(r[1], "image", Channels([r[1].image] * 2)), "'b' has 2 channel"),
    (lambda r: setattr(r[0], "labels", r[0].labels.astype(np.int16) - 1), "negative"),
])
def test_training_set_bad_input_names_the_problem(change, words):
    r = rows()
    change(r)
    with pytest.raises(DataError, match=words):
        training_set(r)


def test_unticked_4d_image_is_only_a_note_and_no_unlabeled_is_said():
    r = rows()
    r[1] = Row("movie", np.zeros((2, 4, 8, 8)), include=False)
    data = training_set(r)
    assert any("4D" in n for n in data.notes)
    assert any(n.startswith("no unlabeled image") for n in data.notes)


def test_multichannel_cases_train_together_and_a_model_of_other_channels_is_refused():
    img0, lab0 = cube_case(0)
    img1, _ = cube_case(1)
    r = [Row("a", Channels([img0, -img0], ("T1", "T2")), True, lab0, "a labels"),
         Row("b", Channels([img1, -img1], ("T1", "T2")))]
    data = training_set(r)
    assert [img.count for _, img in data.images] == [2, 2] and data.images[0][1].arrays[0] is img0  # by reference
    with pytest.raises(DataError, match="the current model takes 1 channel"):
        training_set(r, model_class_names=("bg", "fg"), model_ndim=3, model_channels=("image",))
    r[1].image = img1
    with pytest.raises(DataError, match="'b' has 1 channel.*'a' takes 2"):
        training_set(r)


def test_unlabeled_of_other_dimension_is_skipped_with_a_note():
    r = rows() + [Row("flat", np.zeros((32, 32)))]
    data = training_set(r)
    assert [n for n, _ in data.unlabeled] == ["b"]
    assert any("'flat' is not used" in n for n in data.notes)


def test_warm_start_dimension_must_match():
    with pytest.raises(DataError, match="2D images"):
        training_set(rows(), model_class_names=("bg", "fg"), model_ndim=2)


def test_build_volumes_masks_the_reviewed_slices_whatever_their_labels():
    from napari_dmd.review import Reviewed

    img, lab = cube_case(0)
    some = np.zeros_like(lab)
    some[5] = lab[5]
    some[5, 0, 0] = 1
    rec = Reviewed(lab.shape, slices={5, 9})  # slice 9 was reviewed and left at background
    data = training_set([Row("a", img, True, some, "a labels", reviewed=rec)])
    (vol,), _ = build_volumes(data)
    assert vol.mask[5].all() and vol.mask[9].all() and not vol.mask[4].any()
    rec.mark(4)  # the user marks a slice while the run goes on: the run keeps what it started with
    (vol,), _ = build_volumes(data.frozen())
    assert vol.mask[4].any()
    frozen = data.frozen()
    rec.mark(3)
    (vol,), _ = build_volumes(frozen)
    assert not vol.mask[3].any()
    whole = Reviewed.complete(lab.shape)
    (vol,), _ = build_volumes(training_set([Row("a", img, True, some, "a labels", reviewed=whole)]))
    assert vol.mask is None
    with pytest.raises(DataError, match="no slice of labels 'a labels' is marked reviewed"):
        training_set([Row("a", img, True, some, "a labels", reviewed=Reviewed(lab.shape))])


def test_reviewed_background_trains_when_another_labels_layer_shows_the_structure():
    from napari_dmd.review import Reviewed
    from napari_dmd.training import check_volumes

    img0, lab0 = cube_case(0)
    img1, _ = cube_case(1)
    background = np.zeros_like(lab0)
    rec = Reviewed(lab0.shape, slices={0, 1})  # edge slices reviewed: nothing there
    data = training_set([Row("a", img0, True, lab0, "a labels"),
                         Row("b", img1, True, background, "b labels", reviewed=rec)])
    assert [n for n, _, _ in data.labeled] == ["a", "b"] and data.reviewed["b"].slices == {0, 1}
    labeled, unlabeled = build_volumes(data)
    assert check_volumes(labeled, unlabeled, data.num_classes) == 3  # the engine agrees
    structure_unreviewed = np.zeros_like(lab0)
    structure_unreviewed[5] = 1  # foreground only on a slice nobody reviewed: it does not supervise
    with pytest.raises(DataError, match="'a labels', 'b labels': all background"):
        training_set([Row("a", img0, True, structure_unreviewed, "a labels", reviewed=Reviewed(lab0.shape, slices={2})),
                      Row("b", img1, True, background, "b labels", reviewed=rec)])
