"""What one training step asks of the host and the device, counted on any machine (a CPU included).

``StepOps`` is a ``TorchDispatchMode`` that counts, while it is active:
  host reads  : operations that make the host wait for a device value (``aten._local_scalar_dense``, behind
                ``.item()``, ``float()``, ``bool()``; ``aten.is_nonzero``) and the reads that bypass the
                dispatcher (``Tensor.tolist``, ``Tensor.numpy``, patched while active);
  ops         : every dispatched aten operation (views included);
  kernels     : the dispatched operations that are not views (an upper bound of the kernel launches on a GPU).

``todays_step`` is the step as it was before the step kept its values on the device (commit 118c1a4: three
``float()`` of the losses, two finiteness checks read on the host, 174 ``clone`` of the batch-norm buffers, the
unfused SGD), rebuilt on a ``Trainer``'s networks so the two can be counted and timed in one run.

    python benchmarks/step_ops.py            # counts of one ordinary step, today's and the new, as JSON
"""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from napari_dmd.losses import distillation_loss, supervised_loss

SYNC_OPS = ("aten._local_scalar_dense", "aten.is_nonzero")
PATCHED = ("tolist", "numpy")  # ``.item()`` dispatches ``_local_scalar_dense``, counted there


class StepOps(TorchDispatchMode):
    """Counts host reads, dispatched operations and non-view operations (see the module's docstring)."""

    def __init__(self):
        super().__init__()
        self.reads: Counter[str] = Counter()
        self.ops = self.kernels = 0
        self._saved: dict[str, object] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket._qualified_op_name).replace("::", ".")
        self.ops += 1
        self.kernels += not func.is_view
        if name in SYNC_OPS:
            self.reads[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for attr in PATCHED:
            original = getattr(torch.Tensor, attr)
            self._saved[attr] = original

            def counted(t, *a, _attr=attr, _original=original, **k):
                self.reads[f"Tensor.{_attr}"] += 1
                return _original(t, *a, **k)

            setattr(torch.Tensor, attr, counted)
        return super().__enter__()

    def __exit__(self, *exc):
        for attr, original in self._saved.items():
            setattr(torch.Tensor, attr, original)
        return super().__exit__(*exc)

    @property
    def host_reads(self) -> int:
        """All counted host reads."""
        return sum(self.reads.values())

    def to_dict(self) -> dict:
        return {"host_reads": self.host_reads, "reads": dict(self.reads), "ops": self.ops, "kernels": self.kernels}


def todays_step(trainer):
    """``step(iteration)`` as the step of commit 118c1a4 ran it (its own unfused SGD on the trainer's networks;
    fp32 and bf16, whose loss scaler was off): the comparison for ``count_step`` and benchmarks/speed.py."""
    cfg, dmd = trainer.config, trainer.dmd
    opt = torch.optim.SGD(dmd.params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    floats = [b for b in dmd.buffers if b.is_floating_point()]

    def step(iteration: int) -> tuple[float, float, float, bool]:
        batch = trainer._draw(iteration)
        x = torch.from_numpy(batch["image"]).to(trainer.device).contiguous(memory_format=trainer._memory)
        y, m = (torch.from_numpy(batch[k]).to(trainer.device) for k in ("label", "mask"))
        for group in opt.param_groups:
            group["lr"] = trainer.lr_at(iteration)
        for net in dmd.owned:
            net.train()
        saved = [b.clone() for b in dmd.buffers]
        with dmd.precision.autocast(trainer.device):
            logits = [net(x) for net in dmd.running.nets]
        sup = sum(supervised_loss(z[:len(y)], y, m, None, cfg.ce_weight) for z in logits)
        dis = distillation_loss(*logits, cfg.temperature)
        loss = sup + trainer.lambda_at(iteration) * dis
        opt.zero_grad(set_to_none=True)
        loss.backward()
        values = float(sup.detach()), float(dis.detach()), float(loss.detach())
        bad = (not np.isfinite(values[2])
               or not torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in dmd.params if p.grad is not None]))
               or not torch.isfinite(torch.nn.utils.get_total_norm(floats)))
        if bad:
            for b, before in zip(dmd.buffers, saved):
                b.copy_(before)
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
        return (*values, bad)

    return step


def count_step(step, iteration: int) -> dict:
    """Counts of ``step(iteration)`` (the step's own work: reading its result afterwards is not counted)."""
    with StepOps() as ops:
        step(iteration)
    return ops.to_dict()


def main() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from napari_dmd.config import TrainConfig
    from napari_dmd.data import Volume
    from napari_dmd.training import Trainer

    from synthetic import make_case

    cases = [make_case(s) for s in range(4)]
    lab = [Volume.create(*c) for c in cases[:2]]
    unl = [Volume.create(c[0]) for c in cases[2:]]
    cfg = TrainConfig(iterations=4, patch_size=(16, 16, 16), labeled_batch=2, unlabeled_batch=2, precision="fp32")
    out = {}
    for name in ("today", "new"):
        trainer = Trainer(lab, unl, cfg)
        step = todays_step(trainer) if name == "today" else trainer.step
        step(0)  # warm-up: the first step allocates what the optimiser keeps
        out[name] = count_step(step, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
