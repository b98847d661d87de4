"""Training split over several processes (GPUs of one machine, or nodes of a cluster), as torchrun starts them.

torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address; ``join_world`` joins
that process group (NCCL on GPUs, gloo on CPUs). The ``Trainer`` then wraps both networks in
DistributedDataParallel with synchronised batch norm, and sums the Dice terms over the processes, so
a step on N processes is the step of one process on the whole (global) batch. Rank 0 alone prints and
writes the run folder.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .errors import DataError, DMDError
from .precision import Precision
from .runtime import resolve_device

TIMEOUT = timedelta(minutes=10)  # a collective that waits longer than this for another process fails
# the differentiable all-reduce of torch.distributed.nn works from torch 2.1 on; newer versions warn that a
# private module replaces it
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_reduce is deprecated",
                        category=FutureWarning)


class LostProcess(DMDError):
    """Another process of a distributed run stopped, or cannot be reached."""


@dataclass(frozen=True)
class World:
    """This process's place in a run: rank ``rank`` of ``size``, computing on ``device``
    (``None`` for a run of one process, whose device comes from its settings)."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None

    @property
    def distributed(self) -> bool:
        """Whether the run has several processes."""
        return self.size > 1

    @property
    def writes(self) -> bool:
        """Whether this process prints and writes the run folder (rank 0)."""
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes; the gradient flows back to every process."""
        return dist_fn.all_reduce(t)

    def agree(self, values: list[float]) -> list[float]:
        """The largest of each value over the processes (every process gets the same answer)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every process, in rank order (every process gets the list)."""
        if not self.distributed:
            return [obj]
        found: list[Any] = [None] * self.size
        dist.all_gather_object(found, obj)
        return found

    def barrier(self) -> None:
        """Wait until every process is here."""
        if self.distributed:
            dist.barrier()


def current_world() -> World:
    """The process group this process has joined, or a world of one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return World()
    gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if gpu else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), device)


def join_world(device: str = "auto", timeout: timedelta = TIMEOUT) -> World:
    """Join the process group that torchrun describes in the environment (a world of one without it).

    Each process uses GPU ``LOCAL_RANK`` with NCCL when ``device`` resolves to CUDA, else the CPU with
    gloo. Processes other than rank 0 print nothing to stdout and draw no progress bar (errors still
    reach stderr).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    if not dist.is_initialized():
        if device not in ("auto", "cpu", "cuda"):
            raise DataError(f"--device {device} under torchrun: use auto, cuda or cpu (each process takes the GPU "
                            "of its LOCAL_RANK)")
        gpu = resolve_device(device).type == "cuda"
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            dist.init_process_group("nccl" if gpu else "gloo", timeout=timeout)
        except (RuntimeError, ValueError) as exc:
            raise LostProcess(f"cannot join the other processes of the run ({_first_line(exc)}): check the "
                              "rendezvous address and that every node started") from exc
        atexit.register(_leave)
    world = current_world()
    if not world.writes:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the life of the process
        sys.stderr = _NotATerminal(sys.stderr)
    return world


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    """The first sentence of an error, without the source location that gloo and NCCL put first."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line).split(". ")[0][:300]


def lost_process(exc: BaseException) -> LostProcess:
    """What a failed collective operation means for the user, naming the error."""
    return LostProcess(f"another process of the run stopped or cannot be reached ({_first_line(exc)})")


class _NotATerminal:
    """Writes through to a stream that does not count as a terminal, so no progress bar is drawn."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def agreed_precision(mine: Precision) -> Precision:
    """The precision every process runs in: the common verdict of their self-checks, else fp32."""
    verdicts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(verdicts, mine.to_dict())
    if all(v == verdicts[0] for v in verdicts):
        return mine
    found = sorted({v["precision"] + "".join(" -" + n for n in v["fp32_layers"]) for v in verdicts})
    return Precision(torch.float32, (), f"the processes' self-checks differ ({'; '.join(found)})")


def rank_generators(seed: int, rank: int, start: int) -> tuple[np.random.Generator, int]:
    """The patch generator and torch seed of a process other than rank 0: from ``seed + rank`` and the
    iteration the run starts at (rank 0 keeps the generator of a single-process run)."""
    sequence = np.random.SeedSequence([seed + rank, start])
    return np.random.default_rng(sequence), int(sequence.generate_state(1)[0])


class GlobalBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the whole batch over all processes.

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this computes the same on any device with two
    differentiable all-reduces (the mean, then the squared deviations from it).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], dtype=xf.dtype, device=xf.device)
        sums = dist_fn.all_reduce(torch.cat([xf.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape) * self.weight.view(shape) + self.bias.view(shape)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean, m)
            self.running_var.lerp_(var * n / (n - 1), m)
        return y.to(x.dtype)


def synchronise_batch_norm(net: nn.Module, gpu: bool) -> nn.Module:
    """``net`` with every batch norm computing whole-batch statistics (the same parameters and buffers,
    so the state dict and checkpoints are those of the plain network)."""
    if gpu:
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for name, child in net.named_children():
        if isinstance(child, _BatchNorm):
            bn = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats, device=child.weight.device)
            bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var = child.running_mean, child.running_var
            bn.num_batches_tracked = child.num_batches_tracked
            bn.train(child.training)
            setattr(net, name, bn)
        else:
            synchronise_batch_norm(child, gpu)
    return net


def data_parallel(net: nn.Module, world: World) -> nn.Module:
    """``net`` in DistributedDataParallel: gradients averaged over the processes after each backward."""
    gpu = world.device is not None and world.device.type == "cuda"
    for p in net.parameters():  # a 1×1 kernel has no channels-last layout that its gradient would share
        if p.dim() > 2 and all(s == 1 for s in p.shape[2:]):
            p.data = p.data.clone(memory_format=torch.contiguous_format)
    return nn.parallel.DistributedDataParallel(net, device_ids=[world.device] if gpu else None,
                                               gradient_as_bucket_view=True)


def split_batch(labeled: int, unlabeled: int, size: int) -> tuple[int, int]:
    """Each process's share of the global batch; ``DataError`` unless both halves split evenly."""
    if labeled % size or unlabeled % size:
        raise DataError(f"the batch of {labeled} labeled + {unlabeled} unlabeled patches cannot be split evenly "
                        f"over {size} processes: make --labeled-batch and --unlabeled-batch multiples of {size} "
                        "(they are the global batch, shared equally by the processes)")
    return labeled // size, unlabeled // size
