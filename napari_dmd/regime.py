"""What was measured of DMD against the supervised pair (the same two networks with λ 0 and no unlabeled patches)
by labeled volumes and run length, and what to say where a user decides to train.

The figures are those of ``benchmarks/low_label.py`` (benchmarks/README.md, "Few labels and a short run"; a test
checks them against the committed results file). A measured regime covers runs of its labeled volumes no longer than
it was measured: in a shorter run the ramped-up distillation weighs less still; longer runs are not covered.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measured:
    """DMD minus the supervised pair (Dice points, structures averaged) with ``labeled`` volumes and ``iterations``:
    the ``mean`` over ``choices`` labeled choices (each the mean of its seeds; ``runs`` paired runs in all), and the
    ``worst`` choice."""

    labeled: int
    iterations: int
    mean: float
    worst: float
    choices: int
    runs: int
    data: str

    def describe(self) -> str:
        """One sentence of what was measured."""
        volumes = "volume" if self.labeled == 1 else "volumes"
        side = "below" if self.mean < 0 else "above"
        return (f"with {self.labeled} labeled {volumes} and {self.iterations} iterations DMD measured "
                f"{abs(self.mean):.1f} Dice points {side} the supervised pair (mean of {self.choices} labeled "
                f"choices, {self.runs} paired runs on {self.data}; worst choice {self.worst:+.1f})")


MEASURED = (
    Measured(labeled=1, iterations=300, mean=3.89, worst=-0.14, choices=4, runs=8, data="hippocampus MRI"),
    Measured(labeled=2, iterations=300, mean=9.05, worst=3.29, choices=2, runs=4, data="hippocampus MRI"),
)


def measured(labeled: int, iterations: int) -> Measured | None:
    """The measured regime covering a run of ``iterations`` (the model's, warm starts included) on ``labeled``
    volumes: the shortest measured run of that many volumes at least as long (None: nothing measured covers it)."""
    covering = [m for m in MEASURED if m.labeled == labeled and iterations <= m.iterations]
    return min(covering, key=lambda m: m.iterations, default=None)


def weaker_dmd(labeled: int, unlabeled: int, iterations: int, lambda_distill: float,
               unlabeled_batch: int) -> Measured | None:
    """Where a run distilling on ``unlabeled`` images (λ ``lambda_distill``, ``unlabeled_batch`` patches a step) of
    ``iterations`` (the model's, warm starts included) on ``labeled`` volumes falls in a measured regime in which
    DMD was below the supervised pair on the mean, that regime (None: the run does not distil, DMD was level or
    ahead there, or nothing measured covers it): what the CLI's ``train`` and the dock say before training,
    offering the supervised pair."""
    if not (unlabeled and lambda_distill > 0 and unlabeled_batch > 0):
        return None
    m = measured(labeled, iterations)
    return m if m is not None and m.mean < 0 else None
