"""Training settings; the defaults are the paper's."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """'background', 'class 1', ..."""
    return ("background",) + tuple(f"class {c}" for c in range(1, num_classes))


@dataclass
class TrainConfig:
    """Hyper-parameters of a DMD run. Sizes are in array axis order (z, y, x)."""

    num_classes: int = 2
    class_names: tuple[str, ...] = ()
    iterations: int = 6000
    lr: float = 0.01
    lr_step: int = 2500
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lambda_distill: float = 4.0
    lambda_rampup: int = 0
    temperature: float = 2.0
    patch_size: tuple[int, ...] | None = None
    labeled_batch: int = 2
    unlabeled_batch: int = 2
    foreground_fraction: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names) or default_class_names(self.num_classes)
        if self.patch_size is not None:
            self.patch_size = tuple(int(s) for s in self.patch_size)
        problems = []
        if self.num_classes < 2:
            problems.append("num_classes must be at least 2 (background and one structure)")
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if self.lambda_rampup < 0:
            problems.append("lambda_rampup must not be negative")
        if self.iterations < 1 or self.labeled_batch < 1 or self.unlabeled_batch < 0:
            problems.append("iterations and labeled_batch must be positive, unlabeled_batch not negative")
        if self.lr <= 0 or self.temperature <= 0 or self.lambda_distill < 0:
            problems.append("lr and temperature must be positive, lambda_distill not negative")
        if self.lr_step < 1 or self.checkpoint_every < 1:
            problems.append("lr_step and checkpoint_every must be at least 1 iteration")
        if not (0 < self.lr_gamma <= 1 and 0 <= self.momentum < 1 and self.weight_decay >= 0):
            problems.append("lr_gamma must be in (0, 1], momentum in [0, 1), weight_decay not negative")
        if not 0 <= self.foreground_fraction <= 1:
            problems.append("foreground_fraction must be between 0 and 1")
        if self.patch_size is not None and any(s < 1 for s in self.patch_size):
            problems.append(f"patch size {self.patch_size} must be positive")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"precision {self.precision!r} is not one of auto, fp32, bf16, fp16")
        if problems:
            from .errors import DataError

            raise DataError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints and run folders."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["patch_size"] = list(self.patch_size) if self.patch_size else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
