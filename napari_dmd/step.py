"""One Deep Mutual Distillation step: the forward of both networks on a batch, the loss terms, the SGD update,
and the guard's decision (a non-finite loss, gradient or batch-norm statistic skips the update).

The run around it (batches, schedules, batch-norm settling, checkpoints, progress) is ``training.Trainer``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainConfig
from .distributed import World
from .errors import DMDError
from .losses import Reduce, distillation_loss, pseudo_label_loss, supervised_loss
from .precision import Precision, reset_fp32_layers

FALLBACK_AFTER = 3  # skipped reduced-precision steps before the run continues in fp32
DIVERGED_AFTER = 3  # non-finite fp32 steps in a row that end the run
PROBLEMS = ("", "loss", "gradient", "batch-norm statistics")  # what a step may find not finite, in check order


@dataclass(frozen=True)
class Step:
    """What one training step did: its losses, or what was not finite (the step was skipped)."""

    sup_loss: float
    distill_loss: float
    loss: float
    problem: str = ""


@dataclass(frozen=True)
class Batch:
    """A training batch on the device: images (B, C, *P), labels and review mask of its first patches."""

    image: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor


class DMDStep:
    """The DMD step of two networks: ``step(batch, lr, lam, pseudo)`` updates both (or, when something is not
    finite, leaves them and their batch-norm statistics as they were). ``nets`` are the networks as they run
    (wrapped for split statistics or several processes), ``owned`` the networks themselves."""

    def __init__(self, nets: list[torch.nn.Module], owned: list[torch.nn.Module], config: TrainConfig,
                 precision: Precision, device: torch.device, world: World):
        self.nets, self.owned, self.config = nets, owned, config
        self.precision, self.device, self.world = precision, device, world
        self.params = [p for net in owned for p in net.parameters()]
        self.buffers = [b for net in owned for b in net.buffers()]
        self.optimizer = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)

    def __call__(self, batch: Batch, lr: float, lam: float, pseudo: float) -> Step:
        """One SGD step at learning rate ``lr``, distillation weight ``lam`` and pseudo-label weight ``pseudo``."""
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for net in self.owned:
            net.train()
        saved = [b.clone() for b in self.buffers]
        reduce = self.world.all_sum if self.world.distributed else None
        y, m = batch.label, batch.mask
        try:
            with self.precision.autocast(self.device):
                logits = [net(batch.image) for net in self.nets]
            sup = sum(supervised_loss(z[:len(y)], y, m, reduce, cfg.ce_weight) for z in logits)
            if pseudo > 0:
                sup = sup + pseudo * self._pseudo_loss(logits, m, reduce)
            dis = distillation_loss(*logits, cfg.temperature, reduce) if cfg.lambda_distill > 0 else torch.zeros(())
            loss = sup + lam * dis
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            values = float(sup.detach()), float(dis.detach()), float(loss.detach())
            problem = self._non_finite(values[2])
            if self.world.distributed:  # every process skips, or none
                problem = PROBLEMS[int(self.world.agree([float(PROBLEMS.index(problem))])[0])]
        except RuntimeError:  # out of memory, or another process lost: this step changes nothing
            self.restore(saved)
            raise
        if problem:
            self.restore(saved)
            if self.scaler.is_enabled():
                self.scaler.update()  # an fp16 overflow lowers the loss scale
            return Step(*values, problem)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return Step(*values)

    @staticmethod
    def _pseudo_loss(logits: list[torch.Tensor], mask: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
        """Cross pseudo-supervision of both networks on the voxels without a label: the unreviewed voxels of the
        labeled patches (``mask`` 0) and every voxel of the unlabeled patches after them."""
        free = torch.ones_like(logits[0][:, :1], dtype=torch.float32)
        free[:len(mask)] = 1 - mask
        a, b = logits
        return pseudo_label_loss(a, b, free, reduce) + pseudo_label_loss(b, a, free, reduce)

    def restore(self, buffers: list[torch.Tensor]) -> None:
        """Batch-norm statistics back to ``buffers``, no gradient left."""
        for b, before in zip(self.buffers, buffers):
            b.copy_(before)
        self.optimizer.zero_grad(set_to_none=True)

    def _non_finite(self, loss: float) -> str:
        """What is not finite after a backward pass ('' when all is finite)."""
        if not np.isfinite(loss):
            return "loss"
        if not torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])):
            return "gradient"
        if not torch.isfinite(torch.nn.utils.get_total_norm([b for b in self.buffers if b.is_floating_point()])):
            return "batch-norm statistics"
        return ""

    def fall_back(self, reason: str) -> None:
        """Compute in fp32 from now on (every layer; no loss scaling)."""
        self.precision = Precision(torch.float32, (), reason)
        for net in self.owned:
            reset_fp32_layers(net)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)


class Guard:
    """Counts skipped steps: after ``FALLBACK_AFTER`` in a reduced precision the step falls back to fp32, after
    ``DIVERGED_AFTER`` in a row in fp32 the run has diverged (``DMDError``)."""

    def __init__(self, step: DMDStep):
        self.step = step
        self.skipped = self._skipped_reduced = self._bad_in_row = 0

    def after(self, result: Step, done: int, lr: float) -> str:
        """Count ``result`` of iteration ``done`` (its learning rate ``lr``); a note when the precision changed."""
        if not result.problem:
            self._bad_in_row = 0
            return ""
        self.skipped += 1
        self._bad_in_row += 1
        step = self.step
        if step.scaler.is_enabled() and result.problem == "gradient":
            return ""  # fp16 loss-scale overflow: the scaler lowers the scale, as designed
        if step.precision.dtype != torch.float32:
            self._skipped_reduced += 1
            if self._skipped_reduced < FALLBACK_AFTER:
                return ""
            step.fall_back(f"{self._skipped_reduced} {step.precision.name} steps gave a non-finite {result.problem}; "
                           f"continued in fp32 from iteration {done}")
            self._bad_in_row = 0
            return f"switched to fp32 at iteration {done}: {step.precision.reason}"
        if self._bad_in_row >= DIVERGED_AFTER:
            raise DMDError(f"training diverged at iteration {done}: the {result.problem} was not finite in fp32 for "
                           f"{self._bad_in_row} steps in a row (learning rate {lr:g}); lower the learning rate, or "
                           "check the images for extreme values")
        return ""
