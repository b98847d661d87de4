"""One Deep Mutual Distillation step: the forward of both networks on a batch, the loss terms, the SGD update,
and the guard's decision (a non-finite loss, gradient or batch-norm statistic skips the update).

The step never makes the host wait for the device: what is not finite is decided on the device, the fused SGD
update is skipped there by a found-inf flag (as ``GradScaler`` keeps one), the batch-norm statistics are saved
with one foreach copy into preallocated storage and put back on the device where the flag says so, and the
losses stay on the device until the run reads them (``Step``). The run around it (batches, schedules,
batch-norm settling, checkpoints, progress) is ``training.Trainer``.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .compiling import CompiledNets
from .config import TrainConfig
from .distributed import World
from .errors import DMDError
from .losses import Reduce, confident, distillation_loss, pseudo_label_loss, supervised_loss
from .precision import Precision, reset_fp32_layers
from .teachers import MeanTeachers
from .views import View, network_views

FALLBACK_AFTER = 3  # skipped reduced-precision steps before the run continues in fp32
DIVERGED_AFTER = 3  # non-finite fp32 steps in a row that end the run
PROBLEMS = ("", "loss", "gradient", "batch-norm statistics")  # what a step may find not finite, in check order


class Step:
    """What one training step did: its losses, or what was not finite (the step was skipped). The four values
    stay on the device until one of them is first read; then all are read at once."""

    def __init__(self, values: torch.Tensor):
        self._values = values  # sup_loss, distill_loss, loss, index in PROBLEMS

    @functools.cached_property
    def _read(self) -> list[float]:
        return self._values.tolist()

    @property
    def sup_loss(self) -> float:
        return self._read[0]

    @property
    def distill_loss(self) -> float:
        return self._read[1]

    @property
    def loss(self) -> float:
        return self._read[2]

    @property
    def problem(self) -> str:
        """What was not finite ('' for an ordinary step)."""
        return PROBLEMS[int(self._read[3])]


@dataclass(frozen=True)
class Batch:
    """A training batch on the device: images (B, C, *P), labels and review mask of its first patches."""

    image: torch.Tensor
    label: torch.Tensor
    mask: torch.Tensor


class Snapshot:
    """Tensors (the networks' buffers) saved into preallocated flat storage, one foreach copy per dtype, and put
    back on the device, always or where a flag holds: the host reads nothing."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.floats = [t for t in tensors if t.is_floating_point()]
        self._groups = []
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            live = [t for t in tensors if t.dtype == dtype]
            sizes = [t.numel() for t in live]
            flat = torch.empty(sum(sizes), dtype=dtype, device=live[0].device)
            self._groups.append((live, sizes, flat, [v.view(t.shape) for v, t in zip(flat.split(sizes), live)]))

    def save(self) -> None:
        for live, _, _, kept in self._groups:
            torch._foreach_copy_(kept, live)

    def restore(self, where: torch.Tensor | None = None) -> None:
        """The saved values back: all (``where`` None) or only where the 0-d boolean ``where`` holds."""
        for live, sizes, flat, kept in self._groups:
            if where is None:
                torch._foreach_copy_(live, kept)
                continue
            chosen = torch.where(where, flat, torch.cat([t.reshape(-1) for t in live]))
            torch._foreach_copy_(live, [v.view(t.shape) for v, t in zip(chosen.split(sizes), live)])

    def finite(self) -> torch.Tensor:
        """Whether every floating-point value is finite (a 0-d boolean on the device)."""
        if not self.floats:
            return torch.ones((), dtype=torch.bool)
        return torch.cat([t.reshape(-1) for t in self.floats]).isfinite().all()


class DMDStep:
    """The DMD step of two networks: ``step(batch, lr, lam, pseudo)`` updates both (or, when something is not
    finite, leaves them, their momenta and their batch-norm statistics as they were). ``owned`` are the networks
    themselves, ``running`` the networks as they run (wrapped for split statistics or several processes, maybe
    compiled: ``compiling.CompiledNets``; the owned ones, eager, until the run sets it). ``note`` says what changed
    in the last step's way of computing ('' mostly)."""

    def __init__(self, owned: list[torch.nn.Module], config: TrainConfig, precision: Precision,
                 device: torch.device, world: World):
        self.owned, self.config, self.note = owned, config, ""
        self.running = CompiledNets(owned, device, False)
        self.precision, self.device, self.world = precision, device, world
        self.params = [p for net in owned for p in net.parameters()]
        self.buffers = [b for net in owned for b in net.buffers()]
        self.snapshot = Snapshot(self.buffers)
        self.optimizer = torch.optim.SGD(self.params, lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay, fused=True)
        if config.momentum:  # zero momenta: the first update equals SGD's, and a skipped first step stays skipped
            for p in self.params:
                self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.dtype == torch.float16)
        self._zero = torch.zeros((), device=device)
        distils_to_teachers = config.distill_target == "ema" and config.lambda_distill > 0
        self.teachers = MeanTeachers(owned, config.ema_decay) if distils_to_teachers else None  # none for λ 0

    def load_optimizer(self, state: dict) -> None:
        """The optimiser's state of a checkpoint (one written before the update was fused, too)."""
        self.optimizer.load_state_dict(state)
        for group in self.optimizer.param_groups:
            group.update(fused=True, foreach=None)

    def __call__(self, batch: Batch, lr: float, lam: float, pseudo: float) -> Step:
        """One SGD step at learning rate ``lr``, distillation weight ``lam`` and pseudo-label weight ``pseudo``; a
        step of compiled networks that fails is done again eager (``note`` says so)."""
        self.running.begin_step()
        t0 = time.perf_counter()
        try:
            result = self._step(batch, lr, lam, pseudo)
        except Exception as exc:  # the step changed nothing (``_step``)
            note = self.running.failed(exc)
            if note is None:
                raise
            self.note = note
            return self._step(batch, lr, lam, pseudo)
        self.note = self.running.first_step(time.perf_counter() - t0)
        return result

    def _step(self, batch: Batch, lr: float, lam: float, pseudo: float) -> Step:
        cfg = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        for net in self.owned:
            net.train()
        self.snapshot.save()
        reduce = self.world.all_sum if self.world.distributed else None
        y, m = batch.label, batch.mask
        try:
            with self.precision.autocast(self.device):
                views = network_views(batch.image, len(y), len(self.owned), cfg.unlabeled_views)
                logits = [view.back(net(view.image)) for net, view in zip(self.running.nets, views)]
            sup = sum(supervised_loss(z[:len(y)], y, m, reduce, cfg.ce_weight) for z in logits)
            if pseudo > 0:
                sup = sup + pseudo * self._pseudo_loss(logits, m, reduce)
            dis = self._distillation(logits, views, reduce) if cfg.lambda_distill > 0 else self._zero
            loss = sup + lam * dis
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.scaler.is_enabled():
                self.scaler.unscale_(self.optimizer)
            problem = self._problem(loss.detach())
            if self.world.distributed:  # every process skips, or none
                dist.all_reduce(problem, op=dist.ReduceOp.MAX)
        except Exception:  # out of memory, another process lost, compiling failed: this step changes nothing
            self.snapshot.restore()
            self.optimizer.zero_grad(set_to_none=True)
            raise
        bad = problem > 0
        self.optimizer.found_inf, self.optimizer.grad_scale = bad.float(), None  # read by the fused update
        self.optimizer.step()
        if self.teachers is not None:
            self.teachers.update()
        if self.scaler.is_enabled():
            self.scaler.update()  # an fp16 overflow lowers the loss scale
        self.snapshot.restore(bad)
        self.optimizer.zero_grad(set_to_none=True)
        return Step(torch.stack([sup.detach().float(), dis.detach().float(), loss.detach().float(), problem.float()]))

    def _distillation(self, logits: list[torch.Tensor], views: list[View], reduce: Reduce | None) -> torch.Tensor:
        """The distillation term: the two networks' outputs against each other (the paper), or each network's
        against the other's mean teacher (``distill_target`` 'ema'), on the voxels the targets are confident of
        where ``distill_confidence`` asks for it."""
        cfg = self.config
        if self.teachers is None:
            where = confident(logits, cfg.distill_confidence) if cfg.distill_confidence > 0 else None
            return distillation_loss(*logits, cfg.temperature, reduce, where)
        with self.precision.autocast(self.device):
            targets = self.teachers.outputs(views)[::-1]  # network A towards B's teacher, B towards A's
        where = confident(targets, cfg.distill_confidence) if cfg.distill_confidence > 0 else None
        return sum(distillation_loss(z, t, cfg.temperature, reduce, where) for z, t in zip(logits, targets))

    @staticmethod
    def _pseudo_loss(logits: list[torch.Tensor], mask: torch.Tensor, reduce: Reduce | None) -> torch.Tensor:
        """Cross pseudo-supervision of both networks on the voxels without a label: the unreviewed voxels of the
        labeled patches (``mask`` 0) and every voxel of the unlabeled patches after them."""
        free = torch.ones_like(logits[0][:, :1], dtype=torch.float32)
        free[:len(mask)] = 1 - mask
        a, b = logits
        return pseudo_label_loss(a, b, free, reduce) + pseudo_label_loss(b, a, free, reduce)

    def _problem(self, loss: torch.Tensor) -> torch.Tensor:
        """The index in ``PROBLEMS`` of what is not finite after a backward pass (0: all is), on the device."""
        grads = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        return torch.where(~loss.isfinite(), 1, torch.where(~grads.isfinite(), 2,
                                                            torch.where(self.snapshot.finite(), 0, 3)))

    def fall_back(self, reason: str) -> None:
        """Compute in fp32 from now on (every layer; no loss scaling)."""
        self.precision = Precision(torch.float32, (), reason)
        for net in self.owned:
            reset_fp32_layers(net)
        if self.teachers is not None:
            self.teachers.fall_back()
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
