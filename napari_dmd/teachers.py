"""Mean teachers of the pair: an exponential moving average (EMA) of each network's weights, as the target the
other network is distilled towards (``TrainConfig.distill_target`` 'ema', as mean-teacher methods such as BCP and
AD-MT use one) instead of the other network itself.

A teacher starts as a copy of its network at the start of a run (a resumed or warm-started run too: teachers are
not kept in checkpoints) and follows it after every step with the decay ``min(1 - 1/(n + 1), ema_decay)`` of the
mean teacher (n: the steps so far), so it starts as the network and averages over about ``1 / (1 - ema_decay)``
steps once past that. It runs without gradients, with batch-norm statistics of the batch as its network does and
without dropout, so its output is the averaged network's, not a noisy sample of it.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .networks import batch_statistics_without_dropout
from .precision import reset_fp32_layers
from .views import View


class MeanTeachers:
    """One EMA copy per network of ``owned``; ``running`` are the copies as the step runs them (wrapped as the
    networks are for split batch-norm statistics: the trainer sets it)."""

    def __init__(self, owned: list[nn.Module], decay: float):
        self.decay, self.updates = decay, 0
        self.nets = [batch_statistics_without_dropout(copy.deepcopy(net).requires_grad_(False)) for net in owned]
        self.running: list[nn.Module] = list(self.nets)
        self._teacher_params = [p for net in self.nets for p in net.parameters()]
        self._owned_params = [p for net in owned for p in net.parameters()]

    @torch.no_grad()
    def outputs(self, views: list[View]) -> list[torch.Tensor]:
        """Each teacher's logits of its network's view, in the batch's frame."""
        return [view.back(net(view.image)) for net, view in zip(self.running, views)]

    @torch.no_grad()
    def update(self) -> None:
        """Move every teacher towards its network after a step (a skipped step left the network as it was)."""
        keep = min(1.0 - 1.0 / (self.updates + 1), self.decay)
        torch._foreach_lerp_(self._teacher_params, self._owned_params, 1.0 - keep)
        self.updates += 1

    def fall_back(self) -> None:
        """Compute in fp32 from now on, as the networks (``step.DMDStep.fall_back``)."""
        for net in self.nets:
            reset_fp32_layers(net)
