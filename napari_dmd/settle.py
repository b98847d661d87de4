"""Batch-norm settling: the running statistics, which predictions normalise with, recomputed at the current
weights (README, "Batch-norm statistics")."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .networks import batch_statistics_without_dropout
from .precision import Precision
from .step import Snapshot

SETTLE_BATCHES = 16  # batches whose batch-norm statistics, at the current weights, replace the running ones


def settle_statistics(nets: list[torch.nn.Module], snapshot: Snapshot, images: Callable[[], np.ndarray],
                      precision: Precision, device: torch.device, memory: torch.memory_format) -> None:
    """Replace the running statistics of ``nets`` by their cumulative average over ``SETTLE_BATCHES`` batches of
    ``images()`` (dropout off, batch statistics on); statistics that come out not finite leave the old ones
    (kept in ``snapshot``) in place. The networks' modes and momenta are left as they were."""
    norms = [m for net in nets for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    modes, momenta = [net.training for net in nets], [m.momentum for m in norms]
    snapshot.save()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
        for net in nets:
            batch_statistics_without_dropout(net)
        with torch.no_grad(), precision.autocast(device):
            for _ in range(SETTLE_BATCHES):
                x = torch.from_numpy(images()).to(device).contiguous(memory_format=memory)
                for net in nets:
                    net(x)
        snapshot.restore(~snapshot.finite())
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for net, mode in zip(nets, modes):
            net.train(mode)
