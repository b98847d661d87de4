"""What one training step asks of the host and the device, counted on any machine (a CPU included).

``StepOps`` is a ``TorchDispatchMode`` that counts, while it is active:
  host reads  : operations that make the host wait for a device value (``aten._local_scalar_dense``, behind
                ``.item()``, ``float()``, ``bool()``; ``aten.is_nonzero``) and the reads that bypass the
                dispatcher (``Tensor.tolist``, ``Tensor.numpy``, patched while active);
  ops         : every dispatched aten operation (views included);
  kernels     : the dispatched operations that are not views (an upper bound of the kernel launches on a GPU).

    python benchmarks/step_ops.py            # counts of one ordinary step of a small run, as JSON
"""
from __future__ import annotations

import json
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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
    trainer = Trainer(lab, unl, cfg)
    trainer.step(0)  # warm-up: the first step allocates what the optimiser keeps
    print(json.dumps(count_step(trainer.step, 1)))


if __name__ == "__main__":
    main()
