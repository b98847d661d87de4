"""Compiled networks in the DMD step (napari_dmd/compiling.py): the same step as eager, and a compile that fails
falls back to eager with a note, the step changing nothing twice. Small networks keep the capture quick; the
V-Net is compiled through a whole run by the quick GPU check (tests/test_gpu_check.py)."""
import torch
from test_step import CPU, FP32, make_batch, state, unchanged
from torch import nn

from napari_dmd.compiling import CompiledNets, wants_compile
from napari_dmd.config import TrainConfig
from napari_dmd.distributed import World
from napari_dmd.step import DMDStep


def small_step(compiled: bool = False, backend="eager") -> DMDStep:
    """A DMD step of two small networks (convolution, batch norm, dropout, convolution), eager or compiled."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(), nn.Dropout3d(0.5),
                          nn.Conv3d(4, 1, 1)) for _ in range(2)]
    step = DMDStep(nets, TrainConfig(patch_size=(16, 16, 16), precision="fp32"), FP32, CPU, World())
    step.running = CompiledNets(nets, CPU, compiled, backend=backend)
    return step


def test_auto_compiles_on_cuda_only_and_the_setting_decides_elsewhere():
    assert wants_compile("auto", torch.device("cuda")) and not wants_compile("auto", CPU)
    assert wants_compile("on", CPU) and not wants_compile("off", torch.device("cuda"))


def test_a_compiled_step_equals_the_eager_step():
    """Dynamo's capture (the 'eager' backend: the captured graphs run as they are) gives the eager step's losses,
    weights, statistics and momenta, dropout included; the first step says it compiled."""
    eager, compiled = small_step(), small_step(compiled=True)
    for i in range(2):
        torch.manual_seed(i)
        a = eager(make_batch(), 0.01, 1.0, 0.0)
        torch.manual_seed(i)
        b = compiled(make_batch(), 0.01, 1.0, 0.0)
        assert a.loss == b.loss
        assert compiled.note.startswith("networks compiled (backend eager): first step") if i == 0 else \
            compiled.note == ""
    assert compiled.running.compiled and compiled.running.describe() == "compiled (backend eager)"
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(state(eager), state(compiled)))


def _refuse(gm, example_inputs):
    raise RuntimeError("this backend compiles nothing")


def test_a_failing_compile_falls_back_to_eager_and_says_so():
    eager, failing = small_step(), small_step(compiled=True, backend=_refuse)
    torch.manual_seed(0)
    a = eager(make_batch(), 0.01, 1.0, 0.0)
    torch.manual_seed(0)
    b = failing(make_batch(), 0.01, 1.0, 0.0)  # compiled: fails, nothing changed; then the same step eager
    assert not failing.running.compiled and failing.running.describe().startswith("eager: the compiled networks")
    assert "compiled networks failed" in failing.note and "compiles nothing" in failing.note
    assert a.loss == b.loss and unchanged(state(eager), state(failing))
    failing(make_batch(), 0.01, 1.0, 0.0)
    assert failing.note == ""


def test_out_of_memory_is_not_a_compile_failure():
    """A compiled step out of memory is raised as such (the run says what to lower), not retried eager."""
    step = small_step(compiled=True)
    assert step.running.failed(torch.cuda.OutOfMemoryError("out of memory")) is None and step.running.compiled
