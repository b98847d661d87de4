"""Training batches, made one step ahead.

The next batch (crops, augmentation, copy-paste, normalisation: NumPy on the CPU) is drawn in a background
thread while the current step runs, into pinned memory where the device is CUDA, and copied to the device
without the host waiting. One thread draws the batches in turn from the run's generator, so a seeded run gets
the same batches in the same order as when they are made one at a time; a checkpoint keeps the generator's
state from before the batch made ahead, so a resumed run draws that batch again.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .step import Batch

Arrays = dict[str, np.ndarray]


class BatchMaker:
    """Batches of ``draw(iteration)`` (arrays ``image``, ``label``, ``mask``; it draws from ``rng``) as tensors on
    ``device``; with ``ahead``, the next iteration's batch is drawn while the caller computes."""

    def __init__(self, draw: Callable[[int], Arrays], rng: np.random.Generator, device: torch.device,
                 memory: torch.memory_format, ahead: bool):
        self.draw, self.rng, self.device, self.memory, self.ahead = draw, rng, device, memory, ahead
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[int, dict, Future] | None = None  # iteration, generator state before it, its batch

    def take(self, iteration: int, more: bool = True) -> Batch:
        """The batch of ``iteration`` on the device; with ``ahead`` and ``more``, the next one is drawn meanwhile."""
        arrays = self._claim(iteration)
        if self.ahead and more:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="napari-dmd-batches")
            state = self.rng.bit_generator.state
            self._pending = (iteration + 1, state, self._pool.submit(self._host, iteration + 1))
        return self._to_device(arrays)

    def _claim(self, iteration: int) -> dict[str, torch.Tensor]:
        """The batch made ahead if it is this iteration's; else (none, or another's) drawn now, the generator
        first put back to where it was before the batch made ahead."""
        pending, self._pending = self._pending, None
        if pending is not None:
            made, state, future = pending
            arrays = future.result()
            if made == iteration:
                return arrays
            self.rng.bit_generator.state = state
        return self._host(iteration)

    def _host(self, iteration: int) -> dict[str, torch.Tensor]:
        """``draw(iteration)`` as host tensors, pinned for a CUDA device."""
        out = {k: torch.from_numpy(v) for k, v in self.draw(iteration).items()}
        return {k: v.pin_memory() for k, v in out.items()} if self.device.type == "cuda" else out

    def _to_device(self, arrays: dict[str, torch.Tensor]) -> Batch:
        cuda = self.device.type == "cuda"
        image, label, mask = (arrays[k].to(self.device, non_blocking=cuda) for k in ("image", "label", "mask"))
        return Batch(image.contiguous(memory_format=self.memory), label, mask)

    def rng_state(self) -> dict:
        """The generator's state before the batch made ahead (its state now when there is none): where a resumed
        run continues."""
        return self._pending[1] if self._pending is not None else self.rng.bit_generator.state

    def wait(self) -> None:
        """Let the batch under way finish (before anything else draws from the generator or swaps it)."""
        if self._pending is not None:
            self._pending[2].result()

    def close(self) -> None:
        """Drop the batch made ahead (the generator back to before it) and end the thread."""
        if self._pending is not None:
            self.wait()
            self.rng.bit_generator.state = self._pending[1]
            self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
