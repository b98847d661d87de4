"""``torch.compile`` of the networks a training step runs, where it pays, with a logged fallback to eager.

Only the networks' forward (and, through AOTAutograd, their backward) is compiled: the losses, the guard and the
fused SGD update stay eager, so λ, the temperature and the learning rate never enter a compiled graph and a
changing λ (the ramp-up) or learning rate (the schedule) never recompiles it or invalidates a CUDA graph. On CUDA
the mode is "reduce-overhead" (the networks' kernels replayed as CUDA graphs); on a CPU the default mode (C++
kernels generated with the system compiler). The compiled networks share their parameters and buffers with the
eager ones, which checkpoints, batch-norm settling and prediction keep using unchanged.

``auto`` compiles on CUDA and not on a CPU: on the 2-core EPYC compiling took 114 s for a step 1.13x faster, which
pays only after about 170 iterations and would leave a dock run without results for its first two minutes; ``on`` is
there for long runs (benchmarks/speed.py ``--compare``, benchmarks/README.md, "The step").
"""
from __future__ import annotations

import torch
from torch import nn


def wants_compile(choice: str, device: torch.device) -> bool:
    """Whether a run with the ``compile`` setting ``choice`` (``config.COMPILES``) compiles on ``device``."""
    if choice == "auto":
        return device.type == "cuda"
    return choice == "on"


def compile_mode(device: torch.device) -> str:
    """The ``torch.compile`` mode on ``device``: CUDA graphs on CUDA, the default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


class CompiledNets:
    """The networks as the step runs them, compiled until a compiled step fails; then eager for good.

    ``nets`` is what the step calls now. ``failed(exc)`` switches to the eager networks and returns
    the note that says so (``None`` when they are already eager, or out of memory: the caller re-raises).
    ``first_step(seconds)`` records how long the first compiled step took (compiling included): its note.
    """

    def __init__(self, eager: list[nn.Module], device: torch.device, compile_nets: bool, backend: str = "inductor"):
        self.eager, self.device, self.compiled = list(eager), device, compile_nets
        self.how = compile_mode(device) if backend == "inductor" else f"backend {backend}"
        options = {"mode": compile_mode(device)} if backend == "inductor" else {}
        self.nets = [torch.compile(n, backend=backend, **options) for n in eager] if compile_nets else list(eager)
        self._timed, self.failure = not compile_nets, ""

    def describe(self) -> str:
        """'compiled (mode)', 'eager', or 'eager: the compiled networks failed (...)', for config.json and the user."""
        if self.compiled:
            return f"compiled ({self.how})"
        return f"eager: {self.failure}" if self.failure else "eager"

    def begin_step(self) -> None:
        """Before each step: on CUDA graphs, the previous step's outputs are no longer needed."""
        if self.compiled and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

    def first_step(self, seconds: float) -> str:
        """A note on the first compiled step (``seconds`` with its compiling), once; '' otherwise."""
        if self._timed:
            return ""
        self._timed = True
        return f"networks compiled ({self.how}): first step {seconds:.0f} s with compiling"

    def failed(self, exc: BaseException) -> str | None:
        """Switch to the eager networks after ``exc`` from a compiled step; the note, or ``None`` when eager."""
        if not self.compiled or isinstance(exc, torch.cuda.OutOfMemoryError):
            return None
        self.compiled, self.nets, self._timed = False, list(self.eager), True
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        said = " ".join(lines[:2])[:200]  # dynamo's first line names the backend, its second what it raised
        self.failure = f"the compiled networks failed ({type(exc).__name__}: {said})"
        return f"{self.failure}; continued eager"

