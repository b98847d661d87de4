"""Training settings and run options, each declared once with its help, level and range.

``TrainConfig`` holds what is learned and how (the defaults are the paper's); ``RunOptions`` how a run
is driven (when the dock refreshes its results, when a run stops). The command line's options, the
dock's form and the benchmarks' reuse key are generated from these declarations (``declared_settings``),
so a new setting is one ``setting(...)`` line here plus its use in the engine. Values the engine and the
dock share (the prediction batch, the ranking's slab) have their one home here too.
"""
from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any

from .augment import ROTATION_DEGREES, SCALE
from .channels import SINGLE

CHECKPOINT_NAME = "model.pt"  # what a run folder holds: the checkpoint, the settings and the per-step log
CONFIG_NAME = "config.json"
LOG_NAME = "log.csv"
LEVELS = ("basic", "advanced")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILES = ("auto", "on", "off")  # torch.compile of the networks a training step runs (napari_dmd/compiling.py)
MIN_PATCH = 16  # the networks' smallest input for isotropic data (fewer along the axes of thick slices)
PREDICT_BATCH = 4  # windows per forward pass when predicting
RANKING_SLAB = 5  # slices of one 'label this next' suggestion (the slab around the suggested slice)
WEIGHTINGS = ("uniform", "gaussian")  # how a prediction weighs the voxels of each sliding window
WEIGHTING = "uniform"  # measured better than nnU-Net's Gaussian on la_half and hippocampus (benchmarks/weighting.py)
COMBINES = ("a", "mean")  # a prediction's labels: network A's probabilities, or the mean of both networks'
COMBINE = "mean"
SAMPLINGS = ("uniform", "reviewed")  # how labeled crops are drawn (TrainConfig.labeled_sampling)
VIEWS = ("same", "own")  # what each network sees of an unlabeled patch (TrainConfig.unlabeled_views)
DISTILL_TARGETS = ("mutual", "ema")  # what each network is distilled towards (TrainConfig.distill_target)
BATCH_NORMS = ("auto", "split", "joint")  # how a batch's patches share batch-norm statistics (TrainConfig.batch_norm)
REFRESH_WHOLE_MVOXELS = 16  # a refresh during training predicts the image in view whole up to this many megavoxels


def setting(default: Any, help: str, *, level: str = "advanced", label: str | None = None,
            minimum: float | None = None, maximum: float | None = None, choices: tuple[str, ...] | None = None,
            flag: str | None = None, affects_model: bool = True, cpu_default: Any = None,
            cli: bool = True) -> Any:
    """A ``TrainConfig`` field a user can set, with what the CLI, the dock and the benchmarks need to know.

    ``minimum``/``maximum`` are inclusive bounds (checked in ``TrainConfig.__post_init__``);
    ``affects_model=False`` marks settings that do not change what is learned (device, precision,
    checkpointing); ``flag`` is the CLI option (default ``--`` + the name with dashes), ``cli=False`` keeps it
    off the command line; ``cpu_default`` replaces the default where training runs on a CPU.
    """
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {LEVELS}")
    return field(default=default, metadata={
        "help": help, "level": level, "label": label, "minimum": minimum, "maximum": maximum,
        "choices": choices, "flag": flag, "affects_model": affects_model, "cpu_default": cpu_default, "cli": cli})


def declared_settings(level: str | None = None, of: type | None = None) -> list[Field]:
    """The fields of ``of`` (default ``TrainConfig``) declared with ``setting()``, in declaration order (only
    those of ``level``, if given)."""
    return [f for f in fields(of or TrainConfig) if "help" in f.metadata and level in (None, f.metadata["level"])]


def default_of(f: Field, cpu: bool) -> Any:
    """A declared setting's default on a CPU (``cpu=True``) or a GPU."""
    return f.metadata["cpu_default"] if cpu and f.metadata["cpu_default"] is not None else f.default


def flag_of(f: Field) -> str:
    """The command-line option of a declared setting."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def label_of(f: Field) -> str:
    """The short human label of a declared setting (for a form)."""
    return f.metadata["label"] or f.name.replace("_", " ")


def model_settings(config: TrainConfig) -> dict[str, Any]:
    """The values of the declared settings that change what is learned (a run's reuse key)."""
    values = config.to_dict()
    return {f.name: values[f.name] for f in declared_settings() if f.metadata["affects_model"]}


def check_declared(obj: Any) -> list[str]:
    """What is wrong with the declared settings of ``obj`` (bounds, finiteness, choices)."""
    problems = []
    for f in declared_settings(of=type(obj)):
        value, low, high = getattr(obj, f.name), f.metadata["minimum"], f.metadata["maximum"]
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{f.name} must be a finite number, got {value}")
        elif low is not None and value < low or high is not None and value > high:
            bounds = f"at least {low}" if high is None else f"at most {high}" if low is None else \
                f"between {low} and {high}"
            problems.append(f"{f.name} must be {bounds}, got {value}")
        if f.metadata["choices"] and value not in f.metadata["choices"]:
            problems.append(f"{f.name} {value!r} is not one of {', '.join(f.metadata['choices'])}")
    return problems


def raise_problems(problems: list[str]) -> None:
    """``DataError`` listing ``problems``, if any."""
    if problems:
        from .errors import DataError

        raise DataError("; ".join(problems))


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """'background', 'class 1', ..."""
    return ("background",) + tuple(f"class {c}" for c in range(1, num_classes))


@dataclass
class TrainConfig:
    """Hyper-parameters of a DMD run. Sizes are in array axis order (z, y, x).

    ``num_classes``, ``class_names``, ``channels`` (the names of the input channels, one per channel) and
    ``spacing`` come from the data, not from a form or a flag.
    """

    num_classes: int = 2
    class_names: tuple[str, ...] = ()
    channels: tuple[str, ...] = SINGLE
    spacing: tuple[float, ...] | None = None  # the data's voxel spacing (z y x), which sets the pooling per axis
    iterations: int = setting(6000, "training iterations (steps); a resumed run may raise it", level="basic",
                              minimum=1)
    lr: float = setting(0.01, "SGD learning rate", label="learning rate")
    lr_step: int = setting(2500, "multiply the learning rate by the LR factor every this many iterations",
                           label="LR step (iterations)", minimum=1)
    lr_gamma: float = setting(0.1, "factor applied to the learning rate every LR step, in (0, 1]",
                              label="LR factor per step", maximum=1.0)
    momentum: float = setting(0.9, "SGD momentum, in [0, 1)", minimum=0.0)
    weight_decay: float = setting(1e-4, "SGD weight decay", label="weight decay", minimum=0.0)
    lambda_distill: float = setting(4.0, "weight λ of the distillation loss", label="λ (distillation weight)",
                                    minimum=0.0, flag="--lambda")
    lambda_rampup: int = setting(300, "ramp λ up over the model's first this many iterations (0: constant, as in "
                                      "the paper; the ramp-up measured better with few labels, see README)",
                                 label="λ ramp-up (iterations)", minimum=0)
    temperature: float = setting(2.0, "temperature T that softens the outputs compared by distillation",
                                 label="T (temperature)")
    patch_size: tuple[int, ...] | None = setting(
        None, f"patch size in array order (z y x), at least {MIN_PATCH} per axis (fewer along thick slices); "
              "default: from the data",
        label="patch size", flag="--patch")
    labeled_batch: int = setting(2, "labeled patches per batch", label="labeled patches per batch", minimum=1)
    unlabeled_batch: int = setting(2, "unlabeled patches per batch", label="unlabeled patches per batch",
                                   minimum=0)
    foreground_fraction: float = setting(
        0.0, "share of labeled crops centred on a labeled voxel (0: uniform crops, as in the paper); "
             "raise it, e.g. to 0.33, for structures small next to the patch",
        label="foreground-centred share", minimum=0.0, maximum=1.0)
    labeled_sampling: str = setting(
        "uniform", "how labeled crops are drawn: 'uniform': every labeled image as often; 'reviewed': images in "
                   "proportion to their reviewed voxels, every crop (foreground-centred ones too) centred on a "
                   "reviewed voxel", label="labeled crops", choices=SAMPLINGS)
    augment_spatial: float = setting(
        0.0, f"probability of an in-plane rotation (up to ±{ROTATION_DEGREES:g}°) and, apart, of a scaling "
             f"({SCALE[0]:g}-{SCALE[1]:g}) of a patch, its labels alike (0: off; nnU-Net: 0.2)",
        label="rotation/scaling probability", minimum=0.0, maximum=1.0)
    augment_intensity: float = setting(
        0.0, "probability of each intensity augmentation of a patch: brightness, contrast, gamma, noise, blur "
             "(0: off; nnU-Net: 0.1-0.3)", label="intensity augmentation probability", minimum=0.0, maximum=1.0)
    mix_probability: float = setting(
        0.0, "share of steps whose batch is mixed by bidirectional copy-paste (BCP): a box of each labeled patch "
             "pasted into an unlabeled one and the reverse, the pasted labeled voxels supervised by their labels "
             "(0: off; needs unlabeled patches)", label="copy-paste share", minimum=0.0, maximum=1.0)
    mix_ratio: float = setting(0.67, "side of the pasted box as a fraction of the patch's side along every axis "
                                     "(BCP: 2/3)", label="copy-paste box side", minimum=0.0, maximum=1.0)
    mix_start: int = setting(0, "copy-paste only from this iteration of the model on (counted as the λ ramp-up)",
                             label="copy-paste from iteration", minimum=0)
    ce_weight: float = setting(
        0.0, "weight of a cross-entropy term added to each network's Dice loss on the labeled voxels (0: Dice only, "
             "as in the paper; nnU-Net: 1)", label="cross-entropy weight", minimum=0.0)
    pseudo_weight: float = setting(
        0.0, "weight of cross pseudo-supervision: where no label is (unlabeled patches, unreviewed voxels, the "
             "unlabeled part of a copy-paste patch) each network is also trained towards the other's hard prediction, "
             "the weight ramped up as λ (0: off)", label="pseudo-label weight", minimum=0.0)
    unlabeled_views: str = setting(
        "same", "what each network sees of an unlabeled patch: 'same': the same patch, as the paper; 'own': its own "
                "random flips, brightness, contrast and noise of it, the outputs compared after the flips are undone "
                "(consistency across perturbations, as cross pseudo-supervision)", label="unlabeled views",
        choices=VIEWS)
    distill_target: str = setting(
        "mutual", "what each network's output is distilled towards: 'mutual': the other network's, both getting "
                  "gradients (the paper); 'ema': the other network's mean teacher, an average of its weights over "
                  "about 1/(1 - EMA decay) steps (BCP, AD-MT)", label="distillation target", choices=DISTILL_TARGETS)
    ema_decay: float = setting(0.99, "decay of the mean teachers' weight average (distillation target 'ema')",
                               label="EMA decay", minimum=0.0, maximum=0.9999)
    distill_confidence: float = setting(
        0.0, "distil only the voxels whose target (the pair's mean, or the mean teachers') gives its class at "
             "least this probability (0: every voxel, as the paper)", label="distillation confidence",
        minimum=0.0, maximum=0.99)
    batch_norm: str = setting(
        "auto", "batch-norm statistics of a training batch: 'split': the labeled patches and the unlabeled ones "
                "normalised apart (measured far better with one labeled image); 'joint': all together, as the "
                "authors' code (measured better with several labeled images); 'auto': split where one image holds "
                "more than half of the reviewed voxels, else joint (README)", label="batch-norm statistics",
        choices=BATCH_NORMS)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", affects_model=False)
    precision: str = setting("auto", "numeric precision of training and prediction", choices=PRECISIONS,
                             affects_model=False)
    compile: str = setting("auto", "torch.compile the networks for training ('auto': on CUDA, with CUDA graphs; off on "
                                   "a CPU, where compiling took 2 minutes for a 1.13x faster step: 'on' pays "
                                   "in long runs; a failing compile falls back to eager, said in the log)",
                           label="compile networks", choices=COMPILES, affects_model=False)
    checkpoint_every: int = setting(500, "write the checkpoint every this many iterations",
                                    label="checkpoint every", minimum=1, affects_model=False)
    seed: int = setting(0, "random seed of the initialisation, the crops and the augmentation", minimum=0)

    def __post_init__(self) -> None:
        self.class_names = tuple(self.class_names) or default_class_names(self.num_classes)
        self.channels = tuple(self.channels) or SINGLE
        if self.patch_size is not None:
            self.patch_size = tuple(int(s) for s in self.patch_size)
        problems = []
        if self.num_classes < 2:
            problems.append("num_classes must be at least 2 (background and one structure)")
        if len(self.class_names) != self.num_classes:
            problems.append(f"{len(self.class_names)} class names for {self.num_classes} classes")
        problems += check_declared(self)
        problems += [f"{name} must be positive, got {getattr(self, name)}"
                     for name in ("lr", "temperature", "lr_gamma") if getattr(self, name) <= 0]
        if self.momentum >= 1:
            problems.append(f"momentum must be below 1, got {self.momentum}")
        spacing_ok = True
        if self.spacing is not None:
            self.spacing = tuple(float(s) for s in self.spacing)
            spacing_ok = all(math.isfinite(s) and s > 0 for s in self.spacing)
            if not spacing_ok:
                problems.append(f"spacing {self.spacing} must be positive numbers")
        if self.patch_size is not None and spacing_ok:
            problems += self._patch_problems()
        raise_problems(problems)

    def _patch_problems(self) -> list[str]:
        from .spacing import divisors, pooling

        patch = self.patch_size
        if not patch or self.spacing is not None and len(self.spacing) != len(patch):
            return [f"patch size {patch} does not match the spacing {self.spacing}"]
        least = divisors(pooling(self.spacing, len(patch)))
        if any(p < m for p, m in zip(patch, least)):
            at_least = f"{least[0]} voxels along every axis" if len(set(least)) == 1 else \
                f"{' × '.join(map(str, least))} voxels (the networks' multiples for spacing {self.spacing})"
            return [f"patch size {patch} must be at least {at_least}"]
        return []

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints and run folders."""
        d = asdict(self)
        d["class_names"] = list(self.class_names)
        d["channels"] = list(self.channels)
        d["patch_size"] = list(self.patch_size) if self.patch_size else None
        d["spacing"] = list(self.spacing) if self.spacing else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class RunOptions:
    """How a training run is driven: when the dock refreshes its results and when the run stops. On a CPU
    the defaults give a first look early and a time limit; on a GPU a run is fast enough without."""

    refresh_every: int = setting(500, "predict and refresh the result layers every this many iterations",
                                 level="basic", label="refresh results every", minimum=1, cpu_default=100, cli=False)
    first_refresh: int = setting(0, "an earlier first look at the results, at this iteration (0: none)",
                                 level="basic", label="first refresh at", minimum=0, cpu_default=50, cli=False)
    minutes: float = setting(0.0, "end training after this much time, whatever the iterations (0: no limit)",
                             level="basic", label="stop after (minutes)", minimum=0.0, cpu_default=10.0)
    threads: int = setting(0, "CPU threads of a training run (0: auto, PyTorch's default less one, at least 1: "
                           "the viewer keeps a core; benchmarks/threads.py)", label="training threads",
                           minimum=0, cli=False)
    autosave: int = setting(10, "on a workspace: no stroke older than this many seconds is lost; the labels of the "
                            "case in view are saved every half of it while they hold unsaved strokes (and on moving "
                            "on, a merge, Start and closing)", label="autosave within (s)", minimum=1, cli=False)

    def __post_init__(self) -> None:
        raise_problems(check_declared(self))

    @classmethod
    def defaults(cls, cpu: bool) -> RunOptions:
        """The defaults where training runs on a CPU (``cpu=True``) or a GPU."""
        return cls(**{f.name: default_of(f, cpu) for f in declared_settings(of=cls)})

    def refresh_due(self, iteration: int, total: int) -> bool:
        """Whether predictions are refreshed after ``iteration`` of ``total``."""
        return iteration == total or iteration == self.first_refresh or iteration % self.refresh_every == 0

    @property
    def seconds(self) -> float | None:
        """The time limit in seconds (None: none)."""
        return 60 * self.minutes if self.minutes else None
