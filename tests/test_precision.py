"""Precision the machine computes correctly: the self-check, the per-step guard, the fp32 fallback,
clean checkpoints. The machine's own reduced-precision convolutions are replaced by sound ones and the bf16
fault of some CPUs is injected (tests/faults.py), so these tests hold on any machine; the tests marked
``own_kernels`` run the machine's kernels and assert only what holds on every machine."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_dmd import precision as P
from napari_dmd.checkpoint import load_model, save_model
from napari_dmd.config import TrainConfig
from napari_dmd.data import Volume
from napari_dmd.errors import CheckpointError, DataError, DMDError
from napari_dmd.inference import predict
from napari_dmd.training import CHECKPOINT_NAME, LOG_NAME, Trainer

from faults import NaNFault, sound_reduced_precision
from synthetic import SHARED_DATA

CPU = torch.device("cpu")
SHAPE = (2, 1, 16, 16, 16)
FMT = torch.channels_last_3d
BOTTLENECK = ("enc.4.0", "enc.4.3", "enc.4.6")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test checks afresh: a verdict cached by another test (with another fault) must not leak in."""
    monkeypatch.setenv("NAPARI_DMD_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def sound_machine(request, monkeypatch):
    """Sound reduced-precision convolutions, whatever this CPU computes, unless the test is marked ``own_kernels``."""
    if request.node.get_closest_marker("own_kernels") is None:
        sound_reduced_precision(monkeypatch)


def volumes(cases, labeled=True):
    return [Volume.create(img, lab if labeled else None, name=f"case{i}") for i, (img, lab) in enumerate(cases)]


def config(**kw):
    base = dict(iterations=6, patch_size=(16, 16, 16), labeled_batch=1, unlabeled_batch=1, checkpoint_every=100,
                precision="bf16")
    return TrainConfig(**{**base, **kw})


def buffers(model):
    return [b.clone() for net in model.nets for b in net.buffers()]


def params(model):
    return [p.detach().clone() for net in model.nets for p in net.parameters()]


def test_self_check_keeps_only_the_faulty_layers_in_fp32(monkeypatch):
    NaNFault(monkeypatch)
    choice = P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert choice.dtype == torch.bfloat16 and choice.fp32_layers == BOTTLENECK
    assert "wrongly in bf16" in choice.reason and "enc.4.0" in choice.describe()


def test_self_check_refuses_bf16_when_the_whole_network_stays_wrong(monkeypatch):
    NaNFault(monkeypatch, layer=nn.BatchNorm3d, where=lambda m: m.num_features == 256)  # no convolution to blame
    choice = P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert choice.dtype == torch.float32 and "non-finite" in choice.reason


def test_self_check_passes_a_sound_machine_and_is_cached_per_shape(monkeypatch):
    first = P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert first.dtype == torch.bfloat16 and not first.fp32_layers
    monkeypatch.setattr(P, "self_check", lambda *a, **k: pytest.fail("the cached verdict should be used"))
    assert P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT) == first
    cached = json.loads(P.cache_path().read_text())
    assert any(f"input {'x'.join(map(str, SHAPE))}" in k and P.machine_name(CPU) in k for k in cached)
    with pytest.raises(pytest.fail.Exception):  # another patch is checked again
        P.choose_precision("bf16", CPU, 3, 1, (2, 1, 16, 16, 32), FMT)
    assert P.choose_precision("fp32", CPU, 3, 1, (2, 1, 16, 16, 32), FMT).dtype == torch.float32


def test_the_self_check_builds_the_run_s_own_network(monkeypatch):
    """Two input channels and thick slices: the check runs that network (a one-channel isotropic one could not
    take the input), and its verdict is kept apart from the isotropic one-channel network's."""
    built = []
    build = P.build_network
    monkeypatch.setattr(P, "build_network", lambda *a: built.append(a) or build(*a))
    two = (2, 2, 8, 16, 16)
    assert P.choose_precision("bf16", CPU, 3, 1, two, FMT, (4.0, 1.0, 1.0)).dtype == torch.bfloat16
    assert built == [(3, 1, (4.0, 1.0, 1.0), 2)]
    net = build(*built[0])
    assert net.enc[0][0].in_channels == 2 and net.pools[0] == (1, 2, 2)
    P.choose_precision("bf16", CPU, 3, 1, two, FMT, (1.0, 1.0, 1.0))
    assert len(built) == 2  # isotropic pooling: another network, another verdict
    keys = list(json.loads(P.cache_path().read_text()))
    assert any("pools 1x2x2" in k and "input 2x2x8x16x16" in k for k in keys)
    assert any("pools" not in k for k in keys)  # isotropic keys are as before: their verdicts stay valid


def test_a_non_finite_step_is_skipped_and_batch_norm_statistics_restored(tiny_cases, monkeypatch, tmp_path):
    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(iterations=3), run_dir=tmp_path)
    fault = NaNFault(monkeypatch)
    fault.active = False
    runs = t.run()
    first = next(runs)
    assert first.skipped == 0 and first.precision == "bf16"
    before_b, before_p = buffers(t.model), params(t.model)
    fault.active = True
    bad = next(runs)
    fault.active = False
    assert fault.hits > 0 and bad.iteration == 2 and bad.skipped == 1 and not bad.note
    assert all(torch.equal(a, b) for a, b in zip(before_b, buffers(t.model)))
    assert all(torch.equal(a, b) for a, b in zip(before_p, params(t.model)))
    rest = list(runs)
    assert rest[-1].iteration == 3 and rest[-1].skipped == 1 and rest[-1].precision == "bf16"
    assert np.isfinite([r.loss for r in rest]).all()
    log = (tmp_path / LOG_NAME).read_text().splitlines()
    assert log[0].startswith("iteration,sup_loss") and len(log) == 4 and log[2].split(",")[-2] == "1"


def test_repeated_faults_switch_the_run_to_fp32_once_and_the_checkpoint_is_clean(tiny_cases, monkeypatch, tmp_path):
    t = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(iterations=5), run_dir=tmp_path)
    NaNFault(monkeypatch)
    reports = list(t.run())
    notes = [r.note for r in reports if r.note]
    assert len(notes) == 1 and "switched to fp32 at iteration 3" in notes[0]
    assert [r.skipped for r in reports] == [1, 2, 3, 3, 3]
    assert [r.precision for r in reports][3:] == ["fp32"] * 2
    assert np.isfinite([r.loss for r in reports[3:]]).all()
    model = load_model(tmp_path / CHECKPOINT_NAME)
    assert all(torch.isfinite(v).all() for net in model.nets for v in net.state_dict().values()
               if v.is_floating_point())
    runtime = json.loads((tmp_path / "config.json").read_text())["runtime"]
    assert runtime["precision"] == "fp32" and "continued in fp32" in runtime["reason"]
    again = Trainer(volumes(tiny_cases[:2]), volumes(tiny_cases[2:], False), config(iterations=5))
    assert again.precision.name == "fp32" and "continued in fp32" in again.precision.reason  # remembered


def test_only_a_run_failing_in_fp32_is_diverged_and_its_checkpoint_stays_good(tiny_cases, monkeypatch, tmp_path):
    t = Trainer(volumes(tiny_cases[:1]), [], config(precision="fp32", checkpoint_every=1), run_dir=tmp_path)
    runs = t.run()
    next(runs)
    good = params(t.model)
    NaNFault(monkeypatch, where=lambda m: True, autocast_only=False)
    with pytest.raises(DMDError, match="diverged at iteration 4: the loss was not finite in fp32 for 3 steps"):
        list(runs)
    model = load_model(tmp_path / CHECKPOINT_NAME)
    assert all(torch.equal(a, b) for a, b in zip(good, params(model)))


def test_non_finite_models_are_neither_written_nor_loaded(tiny_cases, tmp_path):
    t = Trainer(volumes(tiny_cases[:1]), [], config(precision="fp32", iterations=1), run_dir=tmp_path)
    list(t.run())
    path = tmp_path / CHECKPOINT_NAME
    good = path.read_bytes()
    (tmp_path / f".{CHECKPOINT_NAME}.killed").write_bytes(b"partial")  # a write killed with -9
    with torch.no_grad():
        t.model.nets[1].head.weight.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="holds NaN or Inf"):
        save_model(t.model, path)
    assert path.read_bytes() == good
    payload = torch.load(path, weights_only=True)
    payload["nets"][0]["enc.4.1.running_var"].fill_(float("inf"))
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt holds NaN or Inf weights .*net A enc.4.1.running_var"):
        load_model(tmp_path / "bad.pt")
    with torch.no_grad():
        t.model.nets[1].head.weight.zero_()
    save_model(t.model, path)
    assert not list(tmp_path.glob(f".{CHECKPOINT_NAME}.*"))  # stale temporaries are cleaned up


def test_inference_recomputes_non_finite_windows_in_fp32(tiny_cases, monkeypatch):
    model = Trainer(volumes(tiny_cases[:1]), [], config(precision="fp32", iterations=1)).model
    reference = predict(model, tiny_cases[1][0], (16, 16, 16))
    model.config.precision = "bf16"
    predict(model, tiny_cases[1][0], (16, 16, 16))  # bf16 passes the self-check; the fault comes later
    fault = NaNFault(monkeypatch)
    pred = predict(model, tiny_cases[1][0], (16, 16, 16))
    assert fault.hits > 0 and np.isfinite(pred.disagreement).all() and np.isfinite(pred.slice_scores).all()
    assert np.allclose(pred.disagreement, reference.disagreement, atol=1e-3)  # float16
    assert np.allclose(pred.slice_scores, reference.slice_scores, atol=1e-4)
    assert (pred.labels == reference.labels).mean() > 0.999


def test_empty_labels_supervise_as_long_as_some_image_shows_the_structure(tiny_cases):
    empty = (tiny_cases[0][0], np.zeros_like(tiny_cases[0][1]))
    t = Trainer(volumes([empty, tiny_cases[1]]), [], config(precision="fp32", iterations=1))
    assert np.isfinite(next(t.run()).loss)
    with pytest.raises(DataError, match="every labeled image is all background"):
        Trainer(volumes([empty]), [], config(precision="fp32"))


@pytest.mark.realdata
@pytest.mark.own_kernels
def test_la_half_trains_with_the_default_precision_to_finite_losses_and_buffers(tmp_path):
    from napari_dmd.io import read_image

    root = SHARED_DATA / "la_half"
    if not root.is_dir():
        pytest.skip("../shared/data/la_half is absent")
    ids = (root / "train.list").read_text().split()
    lab = [Volume.create(read_image(root / "imagesTr" / f"{i}.nii.gz")[0],
                         read_image(root / "labelsTr" / f"{i}.nii.gz")[0], name=i) for i in ids[:2]]
    unl = [Volume.create(read_image(root / "imagesTr" / f"{i}.nii.gz")[0], name=i) for i in ids[8:10]]
    t = Trainer(lab, unl, TrainConfig(iterations=3, patch_size=(32, 64, 64)), run_dir=tmp_path)
    reports = list(t.run())
    assert np.isfinite([r.loss for r in reports]).all()
    assert all(torch.isfinite(b).all() for net in t.model.nets for b in net.buffers() if b.is_floating_point())
    runtime = json.loads((tmp_path / "config.json").read_text())["runtime"]
    assert runtime["precision"] in ("fp32", "bf16") and runtime["reason"]


@pytest.mark.parametrize("reduced_s, expect", [(0.4, torch.bfloat16), (0.95, torch.float32)])
def test_auto_keeps_a_reduced_precision_only_when_it_is_faster(monkeypatch, reduced_s, expect):
    def timed(net, x, ctx_factory, reps=P.SPEED_REPS):
        return reduced_s if isinstance(ctx_factory(), torch.autocast) else 1.0

    monkeypatch.setattr(P, "step_seconds", timed)
    choice = P.self_check(torch.bfloat16, CPU, 3, 1, SHAPE, FMT, faster_only=True)
    assert choice.dtype == expect
    if expect == torch.float32:
        assert "not faster here (950 vs 1000 ms per step" in choice.reason
    asked = P.self_check(torch.bfloat16, CPU, 3, 1, SHAPE, FMT)  # bf16 asked for: correct is enough
    assert asked.dtype == torch.bfloat16


@pytest.mark.own_kernels
def test_a_real_step_is_timed_in_both_precisions():
    net = P._prepare(P.build_network(3, 1), CPU, FMT)
    x = torch.randn(SHAPE).contiguous(memory_format=FMT)
    assert 0 < P.step_seconds(net, x, lambda: torch.autocast("cpu", dtype=torch.bfloat16), reps=1) < math.inf


def test_a_verdict_of_another_version_is_measured_again(monkeypatch):
    """A cached verdict is reused, unless another version of napari-dmd wrote it (or it does not say)."""
    quick_check(monkeypatch)
    checks = []
    real = P.self_check
    monkeypatch.setattr(P, "self_check", lambda *a, **k: checks.append(k["faster_only"]) or real(*a, **k))
    P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert checks == [False]
    checks.clear()
    P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert checks == []  # cached, same version
    cache = json.loads(P.cache_path().read_text())
    for entry in cache.values():
        entry["version"] = "0.0.1"
    P.cache_path().write_text(json.dumps(cache))
    P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert checks == [False]  # another version's verdict: checked again


def quick_check(monkeypatch):
    """A self-check that finds every layer sound at once: what is tested here is when it runs."""
    monkeypatch.setattr(P, "check_network", lambda *a, **k: None)
    monkeypatch.setattr(P, "failing_layers", lambda *a, **k: [])


def test_a_timed_verdict_taken_under_load_is_measured_again(monkeypatch):
    quick_check(monkeypatch)
    monkeypatch.setattr(P, "_target", lambda requested, device: torch.bfloat16)  # 'auto' weighs bf16 on any CPU
    monkeypatch.setattr(P, "step_seconds", lambda net, x, ctx_factory, reps=1: 1.0)
    checks = []
    real = P.self_check
    monkeypatch.setattr(P, "self_check", lambda *a, **k: checks.append(1) or real(*a, **k))
    cores = P.os.cpu_count()
    monkeypatch.setattr(P, "machine_load", lambda: cores + 1.5)  # busier than its cores
    assert P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT).dtype == torch.float32
    P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT)
    assert len(checks) == 2  # the verdict taken under load was not trusted
    monkeypatch.setattr(P, "machine_load", lambda: cores / 2)
    P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT)
    P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT)
    assert len(checks) == 3  # measured calmly: kept
    P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    monkeypatch.setattr(P, "machine_load", lambda: cores + 1.5)
    P.choose_precision("bf16", CPU, 3, 1, SHAPE, FMT)
    assert len(checks) == 4  # a verdict on correctness alone does not depend on the load


@pytest.mark.parametrize("seconds, rounds", [(1.0, P.SPEED_ROUNDS), (1e-4, P.SPEED_MAX_ROUNDS)])
def test_auto_times_the_networks_as_the_run_computes_them_long_enough(monkeypatch, seconds, rounds):
    """'auto' weighs the precisions on the networks compiled where the run compiles them (compiled in both before
    timing), kept as a verdict of its own; a step too quick to time stably is timed over more rounds."""
    quick_check(monkeypatch)
    monkeypatch.setattr(P, "_target", lambda requested, device: torch.bfloat16)
    timed = []
    monkeypatch.setattr(P, "step_seconds", lambda net, x, ctx_factory, reps=1: timed.append(net) or seconds)
    assert P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT, compiled=True).dtype == torch.float32
    assert len(timed) == 2 + 2 * rounds and all(isinstance(n, torch._dynamo.eval_frame.OptimizedModule) for n in timed)
    timed.clear()
    assert P.known_precision("auto", CPU, 3, 1, SHAPE, FMT, compiled=False) is None  # the eager step: not known
    P.choose_precision("auto", CPU, 3, 1, SHAPE, FMT)
    assert len(timed) == 2 * rounds and not any(isinstance(n, torch._dynamo.eval_frame.OptimizedModule) for n in timed)
