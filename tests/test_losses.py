"""Dice losses against hand-computed values, the shapes that broke the authors' script, gradients."""
import math

import pytest
import torch

from napari_dmd.heads import hard_labels, probabilities
from napari_dmd.losses import (
    EPS,
    cross_entropy,
    dice_loss,
    distillation_loss,
    one_hot_foreground,
    pseudo_label_loss,
    supervised_loss,
)


def test_dice_loss_hand_computed():
    p = torch.tensor([0.5, 1.0, 0.0, 0.25]).view(1, 1, 4)
    q = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 4)
    # Σpq = 1.5, Σp² = 0.25 + 1 + 0.0625 = 1.3125, Σq² = 2
    expected = 1 - (2 * 1.5 + EPS) / (1.3125 + 2 + EPS)
    assert dice_loss(p, q).item() == pytest.approx(expected, rel=1e-6)


def test_dice_loss_mask_ignores_unannotated_voxels():
    p = torch.tensor([1.0, 1.0, 0.0, 0.9]).view(1, 1, 4)
    q = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 4)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 4)
    assert dice_loss(p, q, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(p, q).item() > 0.1
    # a patch without any annotated voxel contributes nothing
    assert dice_loss(p, q, torch.zeros_like(mask)).item() == pytest.approx(0.0, abs=1e-6)


def test_multiclass_dice_averages_foreground_channels():
    labels = torch.tensor([[0, 1, 2, 2]])
    logits = torch.full((1, 3, 4), -20.0)
    logits[0, 0, 0] = logits[0, 1, 1] = logits[0, 2, 2] = logits[0, 0, 3] = 20.0  # voxel 3 wrongly background
    # class 1 perfect (loss 0); class 2: Σpq = 1, Σp² = 1, Σq² = 2 → 1 - (2+ε)/(3+ε)
    expected = (0 + 1 - (2 + EPS) / (3 + EPS)) / 2
    assert supervised_loss(logits, labels).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("label_shape", [(2, 8, 8, 4), (2, 1, 8, 8, 4)])
def test_label_shapes_of_the_authors_script_do_not_broadcast(label_shape):
    """Labels B×X×Y×Z against logits B×1×X×Y×Z must give the per-voxel Dice, not a broadcast."""
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, 4)
    labels = (torch.rand(2, 8, 8, 4) > 0.5).long().view(label_shape)
    p = torch.sigmoid(logits)
    q = labels.view(2, 1, 8, 8, 4).float()
    expected = 1 - (2 * (p * q).sum() + EPS) / ((p * p).sum() + (q * q).sum() + EPS)
    assert supervised_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert one_hot_foreground(labels, 1).shape == (2, 1, 8, 8, 4)


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError):
        supervised_loss(torch.randn(2, 1, 8, 8, 4), torch.zeros(2, 8, 8, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        dice_loss(torch.rand(2, 1, 4), torch.rand(2, 1, 1, 4))


def test_distillation_uses_temperature_softened_outputs():
    za, zb = torch.randn(2, 1, 6, 6), torch.randn(2, 1, 6, 6)
    pa, pb = torch.sigmoid(za / 2), torch.sigmoid(zb / 2)
    expected = 1 - (2 * (pa * pb).sum() + EPS) / ((pa ** 2).sum() + (pb ** 2).sum() + EPS)
    assert distillation_loss(za, zb, 2.0).item() == pytest.approx(expected.item(), rel=1e-5)
    zc = torch.randn(2, 3, 6, 6)
    assert torch.allclose(probabilities(zc, 2.0), torch.softmax(zc / 2, dim=1))


def test_gradients_reach_both_networks_through_distillation():
    za = torch.randn(2, 3, 5, 5, requires_grad=True)
    zb = torch.randn(2, 3, 5, 5, requires_grad=True)
    distillation_loss(za, zb, 2.0).backward()
    assert za.grad.abs().sum() > 0 and zb.grad.abs().sum() > 0


def test_hard_labels_follow_the_heads_convention():
    binary = torch.tensor([-1.0, 0.5, 3.0, -0.1]).view(1, 1, 4)
    assert hard_labels(binary).view(-1).tolist() == [0, 1, 1, 0]
    multi = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]).T.reshape(1, 3, 3)  # voxels: 1, 0, 2
    assert hard_labels(multi).shape == (1, 1, 3) and hard_labels(multi).view(-1).tolist() == [1, 0, 2]


@pytest.mark.parametrize("channels", [1, 3])
def test_pseudo_label_loss_is_supervision_by_the_other_networks_prediction_where_no_label_is(channels):
    torch.manual_seed(0)
    za = torch.randn(2, channels, 6, 6, requires_grad=True)
    zb = torch.randn(2, channels, 6, 6, requires_grad=True)
    where = torch.zeros(2, 1, 6, 6)
    where[1] = 1  # the second patch has no label
    loss = pseudo_label_loss(za, zb, where)
    assert loss.item() == pytest.approx(supervised_loss(za, hard_labels(zb), where).item(), rel=1e-6)
    loss.backward()
    assert zb.grad is None  # the other network is the teacher of this term: no gradient
    assert za.grad[1].abs().sum() > 0 and za.grad[0].abs().sum() == 0  # only where no label is
    assert pseudo_label_loss(zb, zb, where).item() < loss.item()  # its own hard prediction fits a network better


def test_cross_entropy_hand_computed_on_the_annotated_voxels():
    """Binary (one sigmoid channel) and multi-class (softmax) cross entropy, averaged over the masked voxels only;
    label shapes B×S and B×1×S alike; a patch without annotated voxels gives 0, not NaN."""
    logits = torch.tensor([0.0, 2.0, -1.0, 5.0]).view(1, 1, 4)
    labels = torch.tensor([[1, 1, 0, 0]])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 4)  # the last voxel, badly wrong, is not annotated
    expected = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 3
    assert cross_entropy(logits, labels, mask).item() == pytest.approx(expected, rel=1e-6)
    assert cross_entropy(logits, labels.view(1, 1, 4), mask).item() == pytest.approx(expected, rel=1e-6)
    assert cross_entropy(logits, labels).item() > expected + 1  # unmasked, the wrong voxel counts
    assert cross_entropy(logits, labels, torch.zeros_like(mask)).item() == 0.0
    three = torch.tensor([[[2.0], [0.0], [0.0]]])  # one voxel, class 0 favoured
    assert cross_entropy(three, torch.tensor([[2]])).item() == pytest.approx(
        -math.log(1 / (math.exp(2) + 2)), rel=1e-6)


def test_supervised_loss_adds_weighted_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    mask = (torch.rand(2, 1, 4, 4) > 0.3).float()
    dice = supervised_loss(logits, labels, mask)
    assert supervised_loss(logits, labels, mask, ce_weight=0.5).item() == pytest.approx(
        dice.item() + 0.5 * cross_entropy(logits, labels, mask).item(), rel=1e-6)
