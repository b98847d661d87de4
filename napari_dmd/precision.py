"""Reduced precision that this machine computes correctly, found by a cached self-check.

Some CPUs compute some bf16 convolutions wrongly (non-finite outputs or gradients, intermittently).
Before a run in reduced precision, ``choose_precision`` runs the real network at the real patch and
batch, forward and backward, in fp32 and in the reduced precision several times, and probes every
distinct convolution on its own. Layers that fail alone run in fp32 while the rest keeps the reduced
precision, provided the whole network then passes; otherwise the run is fp32. For ``auto`` the
reduced precision must also be faster: a training step in it is timed against fp32 (on a GPU with
small patches bf16 measured slower), the networks compiled where the run compiles them; both are timed in turn,
at least ``SPEED_ROUNDS`` times and ``SPEED_SECONDS`` long, and the medians compared, so a machine busy with other
work slows both alike. The verdict is cached per machine (CPU model or GPU name),
torch version, network, shape and request, so it costs once; it is measured again when it was taken by another
version of napari-dmd, or, when speed decided it, while the machine's load exceeded its cores.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .compiling import compile_mode
from .networks import batch_statistics_without_dropout, build_network
from .spacing import is_isotropic, pooling

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES = {v: k for k, v in DTYPES.items()}
LAYER_TOLERANCE = 0.05  # one layer: worst output error and gradient L2 error, relative to fp32
NETWORK_OUTPUT_TOLERANCE = 0.5  # whole network: relative L2 error of the logits
LAYER_SECONDS = 0.3  # a layer is probed LAYER_REPS times, or at least once and then within this time
CHECK_REPS = 3
SPEED_REPS = 1  # timed steps per precision and round when 'auto' weighs speed (the correctness check warmed both up)
SPEED_ROUNDS = 5  # at least this many rounds of fp32 then the reduced precision; their medians are compared
SPEED_SECONDS = 2.0  # and rounds until both were timed this long together (at most SPEED_MAX_ROUNDS)
SPEED_MAX_ROUNDS = 50
MIN_SPEEDUP = 1.1  # 'auto' keeps a reduced precision only when a step is at least this much faster
LAYER_REPS = 50
_LAYER_TYPES = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@dataclass(frozen=True)
class Precision:
    """The dtype a run computes in, the layers kept in fp32, and why."""

    dtype: torch.dtype
    fp32_layers: tuple[str, ...] = ()
    reason: str = ""
    cache_key: str = field(default="", compare=False)  # where the verdict is cached ('' when not)

    @property
    def name(self) -> str:
        """'fp32', 'bf16' or 'fp16'."""
        return NAMES[self.dtype]

    def describe(self) -> str:
        """One line: what runs in which precision, and why."""
        layers = f" except {len(self.fp32_layers)} layer(s) in fp32 ({', '.join(self.fp32_layers)})" \
            if self.fp32_layers else ""
        return f"{self.name}{layers}: {self.reason}"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Autocast to ``dtype`` on ``device``, or nothing for fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def apply(self, net: nn.Module) -> nn.Module:
        """Make the named layers of ``net`` compute in fp32 under autocast (weights are unchanged)."""
        modules = dict(net.named_modules())
        for name in self.fp32_layers:
            run_in_fp32(modules[name])
        return net

    def to_dict(self) -> dict:
        """Plain values, for config.json and the cache."""
        return {"precision": self.name, "fp32_layers": list(self.fp32_layers), "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict) -> Precision:
        """Inverse of ``to_dict``."""
        return cls(DTYPES[d["precision"]], tuple(d["fp32_layers"]), d["reason"])


def _fp32_forward(forward: Callable, device_type: str, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type, enabled=False):
        return forward(x.float())


def run_in_fp32(module: nn.Module) -> None:
    """Run ``module`` in fp32 even inside autocast (an instance-level forward; state_dict unchanged)."""
    if getattr(module, "_napari_dmd_fp32", False):
        return
    device_type = next(module.parameters()).device.type
    module.forward = functools.partial(_fp32_forward, type(module).forward.__get__(module), device_type)
    module._napari_dmd_fp32 = True


def reset_fp32_layers(net: nn.Module) -> None:
    """Undo ``run_in_fp32`` on every layer of ``net`` (a run that falls back to fp32 altogether)."""
    for module in net.modules():
        if getattr(module, "_napari_dmd_fp32", False):
            del module.forward, module._napari_dmd_fp32


@functools.lru_cache(maxsize=8)
def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (with its bf16/AMX flags, which decide its bf16 kernels); read once
    per device (the dock asks at every refresh of its view)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = " ".join(sorted(f for f in value.split() if "bf16" in f or "amx" in f or f == "avx512f"))
                break
    except OSError:
        pass
    return f"{model} [{flags}]" if flags else model


def cache_path() -> Path:
    """``$NAPARI_DMD_CACHE`` or ``~/.cache/napari-dmd``, file precision.json."""
    root = os.environ.get("NAPARI_DMD_CACHE") or Path.home() / ".cache" / "napari-dmd"
    return Path(root) / "precision.json"


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, value: dict) -> None:
    from .io import write_text

    cache = _read_cache()
    cache[key] = value
    try:
        write_text(cache_path(), json.dumps(cache, indent=1))
    except Exception:  # a read-only home must not stop training: the check simply runs again next time
        pass


def machine_load() -> float | None:
    """The machine's load average over the last minute (``None`` where the system does not tell)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _circumstances(timed: bool) -> dict:
    """What a verdict was measured under: this version, and (when speed decided it) the load and the cores."""
    return {"version": __version__, "timed": timed, "load": machine_load() if timed else None,
            "cores": os.cpu_count()}


def _stale(entry: dict) -> bool:
    """Whether a cached verdict must be measured again: taken by another version (or one that did not say), or
    timed while the load exceeded the cores."""
    if entry.get("version") != __version__:
        return True
    load, cores = entry.get("load"), entry.get("cores") or os.cpu_count() or 1
    return bool(entry.get("timed")) and load is not None and load > cores


def _finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)


def _forward_backward(net: nn.Module, x: torch.Tensor, ctx) -> tuple[torch.Tensor, list]:
    """Output and parameter gradients of ``sum(w * net(x))`` for fixed random weights ``w``."""
    net.zero_grad(set_to_none=True)
    with ctx:
        out = net(x)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out.device)
    (out.float() * weight).sum().backward()
    return out.detach().float(), [p.grad for p in net.parameters()]


def step_seconds(net: nn.Module, x: torch.Tensor, ctx_factory: Callable[[], contextlib.AbstractContextManager],
                 reps: int = SPEED_REPS) -> float:
    """Seconds of one forward and backward of ``net`` on ``x`` under a fresh ``ctx_factory()``, the
    mean of ``reps`` repetitions (run after the correctness check, which warmed both precisions up)."""
    t0 = time.perf_counter()
    for _ in range(reps):
        _forward_backward(net, x, ctx_factory())
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return (time.perf_counter() - t0) / reps


def _buffers_finite(net: nn.Module) -> bool:
    return _finite(b for b in net.buffers() if b.is_floating_point())


def compare(ref: tuple[torch.Tensor, list], got: tuple[torch.Tensor, list], loose: bool) -> str | None:
    """``None`` when ``got`` (output, gradients) is finite and close to ``ref``; else what is wrong.

    A single layer in bf16 stays within ~0.5% of fp32, so ``loose=False`` allows 5% (worst output
    error, relative L2 error of the gradients). Through a whole randomly initialised network with
    batch norm over few voxels, bf16 rounding legitimately moves the logits by 10-25% and the
    gradients by more than their own norm (measured), so the network check (``loose=True``) asks for
    finite gradients and logits within 50% (relative L2): it catches non-finite and grossly wrong
    results, the layer probes the subtle ones.
    """
    out, grads = got
    if not _finite([out]):
        return "non-finite output"
    if not _finite(grads):
        return "non-finite gradient"
    pairs = [(g.float(), r.float()) for g, r in zip(grads, ref[1]) if g is not None and r is not None]
    ref_norm = sum(float((r ** 2).sum()) for _, r in pairs) ** 0.5
    if loose:
        err = float((out - ref[0]).norm() / (ref[0].norm() + 1e-12))
        return f"output off by {err:.0%}" if err > NETWORK_OUTPUT_TOLERANCE else None
    err = float((out - ref[0]).abs().max() / (ref[0].abs().max() + 1e-12))
    gerr = sum(float(((g - r) ** 2).sum()) for g, r in pairs) ** 0.5 / max(ref_norm, 1e-30)
    if err > LAYER_TOLERANCE:
        return f"output off by {err:.1%}"
    if gerr > LAYER_TOLERANCE:
        return f"gradients off by {gerr:.1%}"
    return None


def _prepare(net: nn.Module, device: torch.device, fmt: torch.memory_format) -> nn.Module:
    # the same dropout mask in both precisions: none
    return batch_statistics_without_dropout(net.to(device).to(memory_format=fmt))


def check_network(net: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
                  reps: int = CHECK_REPS, loose: bool = True, seconds: float | None = None) -> str | None:
    """Forward and backward of ``net`` on ``x`` in ``dtype`` autocast, ``reps`` times (or, with
    ``seconds``, at least once and then while time is left), against fp32; ``None`` when every
    repetition is finite and close, else what went wrong."""
    for m in net.modules():  # statistics poisoned by an earlier check must not fail this one
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    ref = _forward_backward(net, x, contextlib.nullcontext())
    t0 = time.perf_counter()
    for rep in range(reps):
        if seconds is not None and rep >= 1 and time.perf_counter() - t0 > seconds:
            break
        problem = compare(ref, _forward_backward(net, x, torch.autocast(device.type, dtype=dtype)), loose)
        if problem is None and not _buffers_finite(net):
            problem = "non-finite batch-norm statistics"
        if problem:
            return problem
    return None


def _layer_inputs(net: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, inputs: tuple) -> None:
        shapes.setdefault(name, tuple(inputs[0].shape))

    hooks = [m.register_forward_pre_hook(lambda m, i, n=n: record(n, i))
             for n, m in net.named_modules() if isinstance(m, _LAYER_TYPES)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def failing_layers(net: nn.Module, x: torch.Tensor, device: torch.device, dtype: torch.dtype,
                   fmt: torch.memory_format, reps: int = LAYER_REPS) -> list[str]:
    """Names of the convolutions that give wrong results in ``dtype`` when probed alone at their
    input shape (each distinct layer shape is probed once, ``reps`` times)."""
    modules = dict(net.named_modules())
    verdict: dict[tuple, bool] = {}
    bad = []
    for name, shape in _layer_inputs(net, x).items():
        module = modules[name]
        key = (repr(module), shape)
        if key not in verdict:
            probe = copy.deepcopy(module)
            xi = torch.randn(shape, device=device).contiguous(memory_format=fmt)
            verdict[key] = check_network(probe, xi, device, dtype, reps, False, LAYER_SECONDS) is not None
        if verdict[key]:
            bad.append(name)
    return bad


def _target(requested: str, device: torch.device) -> torch.dtype | Precision:
    """The reduced dtype to check for ``requested``, or the fp32 precision when there is none to check."""
    if requested == "fp32":
        return Precision(torch.float32, (), "fp32 asked for")
    if requested != "auto":
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if native_bf16(device):
        return torch.bfloat16
    return Precision(torch.float32, (), "this CPU has no native bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (a CPU without it emulates bf16, many times slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def run_key(device: torch.device, ndim: int, out_channels: int, shape: tuple[int, ...],
            fmt: torch.memory_format, spacing: tuple[float, ...] | None = None, compiled: bool = False) -> list[str]:
    """What a measurement of a run depends on: the machine, torch, the network (its pooling where the spacing
    is anisotropic, compiled or not) and its input (batch, channels, patch): keys of the verdict cache here and
    of the dock's measured speeds."""
    pools = pooling(spacing, ndim)
    shown = [] if is_isotropic(pools) else ["pools " + ",".join("x".join(map(str, level)) for level in pools)]
    return [machine_name(device), f"torch {torch.__version__}", f"{ndim}D", f"out {out_channels}", *shown,
            f"input {'x'.join(map(str, shape))}", str(fmt).removeprefix("torch."), *(["compiled"] if compiled else [])]


def _verdict_key(requested: str, dtype: torch.dtype, device: torch.device, ndim: int, out_channels: int,
                 shape: tuple[int, ...], fmt: torch.memory_format, spacing: tuple[float, ...] | None,
                 compiled: bool) -> str:
    key = "|".join([*run_key(device, ndim, out_channels, shape, fmt, spacing, compiled), NAMES[dtype],
                    "if faster" if requested == "auto" else "asked for"])
    return f"{key} #{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def known_precision(requested: str, device: torch.device, ndim: int, out_channels: int,
                    shape: tuple[int, ...], fmt: torch.memory_format,
                    spacing: tuple[float, ...] | None = None, compiled: bool = False) -> Precision | None:
    """The precision a run will compute in when it is known without a self-check: fp32 asked for, a CPU
    without bf16, or this machine's cached verdict (``cache_key`` set); ``None`` when the check must run."""
    target = _target(requested, device)
    if isinstance(target, Precision):
        return target
    key = _verdict_key(requested, target, device, ndim, out_channels, shape, fmt, spacing, compiled)
    cached = _read_cache().get(key)
    try:
        return None if cached is None or _stale(cached) else replace(Precision.from_dict(cached), cache_key=key)
    except (KeyError, TypeError):  # an entry of another version: check again
        return None


def choose_precision(requested: str, device: torch.device, ndim: int, out_channels: int,
                     shape: tuple[int, ...], fmt: torch.memory_format,
                     spacing: tuple[float, ...] | None = None, compiled: bool = False) -> Precision:
    """The precision to run in: ``requested`` ('auto', 'fp32', 'bf16', 'fp16') as far as this machine
    computes it correctly (and, for 'auto', faster, ``compiled`` or not) for the network (pooled for ``spacing``)
    at input ``shape`` (batch, channels, *patch)."""
    known = known_precision(requested, device, ndim, out_channels, shape, fmt, spacing, compiled)
    if known is not None:
        return known
    dtype = _target(requested, device)
    key = _verdict_key(requested, dtype, device, ndim, out_channels, shape, fmt, spacing, compiled)
    choice = self_check(dtype, device, ndim, out_channels, shape, fmt, faster_only=requested == "auto",
                        spacing=spacing, compiled=compiled)
    _write_cache(key, {**choice.to_dict(), **_circumstances(requested == "auto")})
    return replace(choice, cache_key=key)


def remember_fallback(checked: Precision, fallback: Precision) -> None:
    """A run that had to fall back to fp32 at run time (the check missed an intermittent fault)
    records fp32 as this machine's verdict, so the next run does not try the reduced precision again."""
    if checked.cache_key:
        _write_cache(checked.cache_key, {**fallback.to_dict(), **_circumstances(False)})


def self_check(dtype: torch.dtype, device: torch.device, ndim: int, out_channels: int,
               shape: tuple[int, ...], fmt: torch.memory_format, faster_only: bool = False,
               spacing: tuple[float, ...] | None = None, compiled: bool = False) -> Precision:
    """Run the check (uncached) of the run's own network (its input channels ``shape[1]``, its pooling for
    ``spacing``): whole network, then each layer alone, then the network again with the failing layers in
    fp32; with ``faster_only``, a correct reduced precision must also make a step ``MIN_SPEEDUP`` times faster
    than fp32 (``compiled``: with the network compiled as the run compiles it)."""
    t0 = time.perf_counter()
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    try:
        torch.manual_seed(1234)
        net = _prepare(build_network(ndim, out_channels, spacing, shape[1]), device, fmt)
        x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        name = NAMES[dtype]
        whole = check_network(net, x, device, dtype)
        bad = failing_layers(net, x, device, dtype, fmt)
        every_layer = len(bad) == len(_layer_inputs(net, x))
        if bad and not every_layer:
            Precision(dtype, tuple(bad)).apply(net)
            whole = check_network(net, x, device, dtype)
        if whole is not None or every_layer:
            problem = whole or f"all {len(bad)} convolutions wrong"
            return Precision(torch.float32, (), f"this machine computes the network wrongly in {name} ({problem})")
        if faster_only:
            timed = torch.compile(net, mode=compile_mode(device)) if compiled else net
            contexts = (contextlib.nullcontext, lambda: torch.autocast(device.type, dtype=dtype))
            for context in contexts if compiled else ():  # compiled in both precisions before timing
                step_seconds(timed, x, context)
            fp32, reduced = [], []
            while len(fp32) < SPEED_MAX_ROUNDS and (len(fp32) < SPEED_ROUNDS or sum(fp32 + reduced) < SPEED_SECONDS):
                fp32.append(step_seconds(timed, x, contexts[0]))  # in turn: load from other work slows both alike
                reduced.append(step_seconds(timed, x, contexts[1]))
            fp32_s, reduced_s = statistics.median(fp32), statistics.median(reduced)
            if reduced_s * MIN_SPEEDUP > fp32_s:
                return Precision(torch.float32, (), f"{name} computes correctly but is not faster here "
                                                    f"({1e3 * reduced_s:.0f} vs {1e3 * fp32_s:.0f} ms per step; "
                                                    f"self-check, {time.perf_counter() - t0:.1f} s)")
        seconds = time.perf_counter() - t0
        if bad:
            return Precision(dtype, tuple(bad), f"this machine computes those layers wrongly in {name} "
                                                f"(self-check, {seconds:.1f} s)")
        return Precision(dtype, (), f"self-check passed ({seconds:.1f} s)")
    finally:  # the check leaves the caller's random streams as they were
        torch.set_rng_state(state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
