"""The DMD step alone (napari_dmd/step.py): two small networks, a batch made here, no sampler and no run."""
import sys
from pathlib import Path

import pytest
import torch

from napari_dmd.config import TrainConfig
from napari_dmd.distributed import World
from napari_dmd.losses import distillation_loss, supervised_loss
from napari_dmd.networks import build_network
from napari_dmd.precision import Precision
from napari_dmd.step import Batch, DMDStep, Snapshot

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from step_ops import StepOps  # noqa: E402

CPU = torch.device("cpu")
FP32 = Precision(torch.float32, (), "test")


def make_step(**kw) -> DMDStep:
    torch.manual_seed(0)
    nets = [build_network(3, 1).to(memory_format=torch.channels_last_3d) for _ in range(2)]
    cfg = TrainConfig(patch_size=(16, 16, 16), precision="fp32", **kw)
    return DMDStep(nets, cfg, FP32, CPU, World())


def make_batch(n_labeled: int = 1, n_all: int = 2) -> Batch:
    g = torch.Generator().manual_seed(1)
    image = torch.randn((n_all, 1, 16, 16, 16), generator=g).contiguous(memory_format=torch.channels_last_3d)
    label = (torch.rand((n_labeled, 1, 16, 16, 16), generator=g) > 0.7).to(torch.uint8)
    return Batch(image, label, torch.ones((n_labeled, 1, 16, 16, 16)))


def state(step: DMDStep) -> list[torch.Tensor]:
    """Weights, buffers (batch-norm statistics and counts) and momenta."""
    momenta = [step.optimizer.state[p].get("momentum_buffer") for p in step.params]
    return [t.detach().clone() for t in step.params + step.buffers + [m for m in momenta if m is not None]]


def unchanged(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_an_ordinary_step_reads_nothing_on_the_host_and_updates_both_networks():
    step = make_step()
    step(make_batch(), 0.01, 1.0, 0.0)  # the first step: nothing is allocated lazily any more after it
    before = state(step)
    with StepOps() as ops:
        result = step(make_batch(), 0.01, 1.0, 0.0)
    assert ops.host_reads == 0, ops.reads
    assert ops.kernels > 0
    assert result.problem == "" and result.loss == pytest.approx(result.sup_loss + result.distill_loss, rel=1e-5)
    half = len(step.params)
    after = state(step)
    assert not unchanged(before[:half // 2], after[:half // 2]) and not unchanged(before[half // 2:half],
                                                                                   after[half // 2:half])


def _poison_statistics(module, inputs, output) -> None:
    module.running_var.data.fill_(float("nan"))


@pytest.mark.parametrize("problem", ["loss", "gradient", "batch-norm statistics"])
def test_a_non_finite_step_changes_nothing_and_says_what(problem):
    """Weights, momenta and batch-norm statistics (counts too) stay as they were, whatever was not finite."""
    step = make_step()
    step(make_batch(), 0.01, 1.0, 0.0)
    batch, before = make_batch(), state(step)
    net = step.owned[1]
    if problem == "loss":
        batch.image[1, 0, 3, 3, 3] = float("nan")
    elif problem == "gradient":
        net.head.weight.register_hook(lambda g: g * float("nan"))
    else:  # through .data: the backward pass (which does not use them in training) is not disturbed
        norm = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d))
        norm.register_forward_hook(_poison_statistics)
    with StepOps() as ops:
        result = step(batch, 0.01, 1.0, 0.0)
    assert ops.host_reads == 0, ops.reads  # the skip is decided on the device too
    assert result.problem == problem
    assert unchanged(before, state(step))
    assert all(p.grad is None for p in step.params)


def test_the_first_step_equals_plain_sgd_and_momentum_carries_on():
    """Momenta start at zero, so the fused update with its flag is SGD with momentum, step for step."""
    step = make_step()
    plain_nets = [build_network(3, 1).to(memory_format=torch.channels_last_3d) for _ in range(2)]
    for a, b in zip(plain_nets, step.owned):
        a.load_state_dict(b.state_dict())
    params = [p for n in plain_nets for p in n.parameters()]
    cfg = step.config
    plain = torch.optim.SGD(params, lr=0.01, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for i in range(2):
        batch = make_batch()
        torch.manual_seed(i)  # the same dropout masks
        result = step(batch, 0.01, 1.0, 0.0)
        torch.manual_seed(i)
        plain.zero_grad()
        logits = [n(batch.image) for n in plain_nets]
        sup = sum(supervised_loss(z[:1], batch.label, batch.mask, None, cfg.ce_weight) for z in logits)
        loss = sup + distillation_loss(*logits, cfg.temperature)
        loss.backward()
        plain.step()
        assert result.loss == pytest.approx(float(loss.detach()), rel=1e-5)
    for a, b in zip(params, step.params):
        assert torch.allclose(a, b, atol=1e-6)


def test_snapshot_puts_back_only_where_the_flag_holds():
    tensors = [torch.arange(3.0), torch.tensor(5), torch.ones(2, 2)]
    snap = Snapshot(tensors)
    snap.save()
    for t in tensors:
        t.add_(1)
    snap.restore(torch.tensor(False))
    assert tensors[1] == 6 and torch.equal(tensors[0], torch.arange(1.0, 4.0))
    tensors[2].fill_(float("inf"))
    assert not snap.finite()
    snap.restore(torch.tensor(True))
    assert tensors[1] == 5 and torch.equal(tensors[2], torch.ones(2, 2)) and bool(snap.finite())
