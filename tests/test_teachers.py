"""Mean teachers as the distillation target and confidence-weighted distillation."""
import pytest
import torch

from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.errors import DataError
from napari_dmd.losses import confident, distillation_loss
from napari_dmd.networks import VNet, batch_statistics_without_dropout
from napari_dmd.precision import run_in_fp32
from napari_dmd.teachers import MeanTeachers
from napari_dmd.training import Trainer
from napari_dmd.views import View


def nets(n=2):
    torch.manual_seed(0)
    return [VNet(1, 3, n_filters=4) for _ in range(n)]


def test_a_teacher_starts_as_its_network_then_averages_it_with_the_mean_teachers_decay():
    owned = nets()
    teachers = MeanTeachers(owned, decay=0.9)
    first = [p.detach().clone() for p in owned[0].parameters()]
    with torch.no_grad():
        for p in owned[0].parameters():
            p.add_(1.0)
    teachers.update()  # decay min(1 - 1/1, 0.9) = 0: the network itself
    for t, p in zip(teachers.nets[0].parameters(), owned[0].parameters()):
        assert torch.equal(t, p)
    teachers.update()  # decay min(1 - 1/2, 0.9) = 0.5
    with torch.no_grad():
        for p in owned[0].parameters():
            p.add_(2.0)
    teachers.update()  # decay min(1 - 1/3, 0.9) = 2/3
    for t, p0 in zip(teachers.nets[0].parameters(), first):
        torch.testing.assert_close(t, (2 / 3) * (p0 + 1) + (1 / 3) * (p0 + 3))
    assert not any(p.requires_grad for net in teachers.nets for p in net.parameters())


def test_a_teacher_runs_without_dropout_on_the_batch_statistics():
    owned = nets(1)
    teachers = MeanTeachers(owned, decay=0.99)
    image = torch.randn(2, 1, 16, 16, 16)
    a, b = teachers.outputs([View(image)]), teachers.outputs([View(image)])
    torch.testing.assert_close(a[0], b[0])  # no dropout mask drawn
    owned[0].eval()
    assert not torch.allclose(a[0], owned[0](image))  # eval: running statistics, not the batch's


def test_confident_keeps_the_voxels_where_the_mean_prediction_is_sure():
    sure = torch.tensor([[[[[4.0, 0.1]]]]])  # one sigmoid channel: p = 0.98 and 0.52
    assert confident([sure, sure], 0.9).flatten().tolist() == [1.0, 0.0]
    softmax = torch.zeros(1, 3, 1, 1, 2)
    softmax[0, 2, ..., 0] = 5.0  # class 2 sure at the first voxel, uniform at the second
    assert confident([softmax], 0.5).flatten().tolist() == [1.0, 0.0]


def test_distillation_leaves_the_voxels_outside_where_without_gradient():
    a = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    b = torch.randn(1, 3, 4, 4, 4)
    where = torch.zeros(1, 1, 4, 4, 4)
    where[..., :2] = 1
    distillation_loss(a, b, 2.0, where=where).backward()
    assert a.grad[..., 2:].abs().max() == 0 and a.grad[..., :2].abs().max() > 0


def tiny_trainer(tiny_cases, **settings):
    lab = [Volume.create(img, lab) for img, lab in tiny_cases[:1]]
    unl = [Volume.create(img) for img, _ in tiny_cases[1:2]]
    cfg = TrainConfig(iterations=2, patch_size=(16, 16, 16), labeled_batch=1, unlabeled_batch=1, lambda_rampup=0,
                      precision="fp32", **settings)
    return Trainer(lab, unl, cfg)


def test_a_step_towards_the_mean_teachers_trains_both_networks_and_moves_the_teachers(tiny_cases):
    t = tiny_trainer(tiny_cases, distill_target="ema", ema_decay=0.5, distill_confidence=0.6)
    teachers = t.dmd.teachers
    for _ in range(2):
        start = [p.detach().clone() for net in t.model.nets for p in net.parameters()]
        step = t.step(0)
        assert not step.problem and step.distill_loss > 0
        after = [p.detach() for net in t.model.nets for p in net.parameters()]
        half = len(start) // 2
        assert any(not torch.equal(x, y) for x, y in zip(start[:half], after[:half]))
        assert any(not torch.equal(x, y) for x, y in zip(start[half:], after[half:]))
    # after two updates (decays 0 and 0.5) each teacher is half way between the network's last two weights
    for teacher, p, s in zip((p for net in teachers.nets for p in net.parameters()), after, start):
        torch.testing.assert_close(teacher, 0.5 * (p + s))
    assert tiny_trainer(tiny_cases).dmd.teachers is None  # the paper's mutual target needs none
    assert tiny_trainer(tiny_cases, distill_target="ema", lambda_distill=0.0).dmd.teachers is None  # nor λ 0


def test_the_distillation_settings_are_checked():
    with pytest.raises(DataError, match="distill_target"):
        TrainConfig(distill_target="teacher")
    with pytest.raises(DataError, match="distill_confidence"):
        TrainConfig(distill_confidence=1.0)


def test_a_teacher_of_a_network_with_fp32_layers_runs_its_own_weights():
    owned = nets(1)
    run_in_fp32(owned[0].enc[4])  # as a reduced-precision run keeps its deepest layers in fp32
    teachers = MeanTeachers(owned, decay=0.99)
    with torch.no_grad():
        for p in owned[0].enc[4].parameters():
            p.add_(1.0)  # the network moves on; its teacher has not followed yet
    image = torch.randn(2, 1, 16, 16, 16)
    batch_statistics_without_dropout(owned[0])
    assert not torch.allclose(teachers.outputs([View(image)])[0], owned[0](image))
    assert teachers.nets[0].enc[4]._napari_dmd_fp32
