"""The correction loop, measured: does reviewing where the two networks disagree save a clinician's effort?

A simulated clinician over the engine (no Qt). Start: one training volume labeled whole, plus a pool of
unlabeled training volumes the clinician has loaded (``--pool``; predicting every training volume each
round is far too slow on a CPU). The start model trains from scratch for ``--start-iterations``. Then
each round:

1. review: the clinician reviews ``--slices`` (K) more slices of the pool (axis 0), their labels copied
   from the ground truth, all-background slices included, chosen by a strategy:
   - ``ranking-entropy``: the dock's "label this next" list (``napari_dmd.ranking.suggest``, slab 5, over
     the per-slice score ``ranking.MEASURE``: network A's entropy; the code the dock runs);
   - ``ranking``, ``ranking-structure``, ``ranking-peak``: the same list over another per-slice score
     (``napari_dmd.ranking.slice_scores``): the pair's mean disagreement (the dock's score before these
     measurements), the disagreement near the predicted structure, or its 99th percentile per slice;
   - ``random``: unreviewed slices of the pool, drawn at random;
   - ``even``: K evenly spaced slices of a random pool volume not reviewed yet (how people label by hand);
   - ``even-entropy``: K evenly spaced slices of the pool volume not reviewed yet whose unreviewed slices have
     the highest mean score (``ranking.MEASURE``): the ranking's choice of volume, ``even``'s spread in it;
   - ``none``: the control arm: no review at all, the rounds train the same iterations from the same start
     on the same data (the start volume labeled, the pool unlabeled), so a strategy's Dice minus this one's
     at the same round is what its reviews add, not the extra iterations;
2. train: training resumes warm from the last model (``Trainer(init=...)``, as the dock's retraining) for
   ``--iterations`` (R); each reviewed volume is a labeled volume whose mask is its reviewed slices
   (``Reviewed.mask()``), the unreviewed pool volumes are the unlabeled data;
3. refresh: the pool is predicted again, giving the ranking its disagreement maps (only where a
   strategy needs them).

After every round the prediction (``inference.predict``'s defaults: labels from the pair's mean, network A's
before ``config.COMBINE``) is scored on the test volumes (the first ``--test`` of the fixed test split):
Dice, 95HD and ASD in voxels, mean over the foreground classes. Methods:

- ``dmd``: the dock's defaults: λ = 4 ramped up over the model's first ``--rampup`` iterations (default: the
  training settings' ``lambda_rampup``), counted over its own iterations, batch norm ``auto`` (labeled and
  unlabeled patches normalised apart while the start volume holds most of the reviewed voxels);
- ``dmd-before``: the defaults before the batch-norm change: one batch-norm pass over labeled and unlabeled patches
  (``batch_norm`` joint), the running statistics as training leaves them (``Trainer.settle_statistics`` skipped);
- ``supervised``: the same pair with λ = 0 on the labeled data only (no unlabeled batch).

The first method given (``dmd`` by default) chooses the reviews of each strategy and seed (the ranking
uses its disagreement); the other methods train on the same reviewed slices, round by round, so every
round compares the methods on identical labels. Loops advance round-robin (a run stopped early leaves all
curves at about the same round); each round is merged into ``benchmarks/results/loop_<data>.json`` as it
ends (atomically), and a re-run continues every loop from its last recorded round when its settings are
unchanged (``--runs`` keeps the last checkpoint of each loop).

Defaults (``DEFAULTS``): 2 seeds, strategies ranking-entropy (the dock's), random, even and none (the other
rankings with ``--strategies``), dmd-before with random reviews only, pool 8, K 5, 8
rounds, stride half the patch (the dock's default), precision auto (bf16 on this CPU), batch 2 labeled + 2
unlabeled; hippocampus the data's patch (the dock's: 32x48x32), 300 start iterations + 40 per round, the first 10
of the 39 test cases; la_half patch 32x64x64, 300 start + 50 per round, the first 5 of the 20 test cases. The
hippocampus start was 150 iterations at patch 16x32x32 before: README, "Batch-norm statistics", for why that
under-trained start scored 14-30 Dice. ``--minutes`` stops starting rounds after a
time; ``--threads 1`` is steadier than two threads on a CPU shared with other jobs.

Measured on the 2-core development CPU (bf16), the defaults end to end: la_half 100 minutes (start trainings
190-322 s, a round 20-53 s, scoring 3-4 s), hippocampus 15 minutes a seed (start trainings 36-45 s, a round
9-13 s on average). On one H200 with 12-18 loop processes sharing it, rounds took 6-13 s.

    python benchmarks/loop.py --data hippocampus --seeds 0 1
    python benchmarks/loop.py --data la_half --seeds 0 1
    python benchmarks/loop.py --plot-only          # docs/loop.png from every results/loop_*.json
"""
from __future__ import annotations

import argparse
import shutil
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from napari_dmd.checkpoint import ModelPair, load_model
from napari_dmd.config import PRECISIONS, RANKING_SLAB, TrainConfig, model_settings
from napari_dmd.data import Volume
from napari_dmd.inference import predict
from napari_dmd.io import read_image
from napari_dmd.metrics import evaluate_case, summarize
from napari_dmd.precision import machine_name
from napari_dmd.ranking import MEASURE, MEASURES, suggest
from napari_dmd.review import Reviewed
from napari_dmd.runtime import resolve_device
from napari_dmd.training import CHECKPOINT_NAME, Trainer

from datasets import DATASETS
from results_file import load_results, save_result

RANKINGS = {"ranking": "mean", **{f"ranking-{m}": m for m in MEASURES if m != "mean"}}  # strategy: its measure
SCORED = {**RANKINGS, f"even-{MEASURE}": MEASURE}  # the strategies that read per-slice scores, and their measure
CONTROL = "none"  # the control arm: the same rounds of training, without reviews
STRATEGIES = (*SCORED, "random", "even", CONTROL)
METHODS = ("dmd", "dmd-before", "supervised")
VARIANTS = ("dmd-before",)  # run with --variant-strategies only
AXIS = 0
DEFAULTS = {
    "hippocampus": {"patch": None, "start_iterations": 300, "iterations": 40, "test": 10},
    "la_half": {"patch": (32, 64, 64), "start_iterations": 300, "iterations": 50, "test": 5},
}


@dataclass
class Case:
    """One volume of the benchmark with its ground-truth labels."""

    name: str
    image: np.ndarray
    label: np.ndarray


@dataclass
class Setup:
    """The clinician's data: the volume labeled at the start, the loaded pool, the test cases."""

    name: str
    class_names: tuple[str, ...]
    start: Case
    pool: list[Case]
    test: list[Case]
    unlabeled: dict[str, Volume] = field(init=False)  # the pool's volumes, normalised once
    start_volume: Volume = field(init=False)

    def __post_init__(self) -> None:
        self.unlabeled = {c.name: Volume.create(c.image, name=c.name) for c in self.pool}
        self.start_volume = Volume.create(self.start.image, self.start.label, name=self.start.name)


@dataclass
class Loop:
    """One simulated clinician: a method, a review strategy and a seed, round after round."""

    method: str
    strategy: str
    seed: int
    folder: Path
    reviewed: dict[str, Reviewed]
    rounds: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    scores: dict[str, np.ndarray] | None = None  # per-slice scores of the pool as the last model predicts it

    @property
    def key(self) -> str:
        return f"{self.method}/{self.strategy}/seed{self.seed}"


def read_case(image_path: Path, label_path: Path) -> Case:
    image, _ = read_image(image_path)
    label, _ = read_image(label_path)
    return Case(image_path.name, image, np.asarray(label).astype(np.uint8))


def load_setup(data: str, root: Path, pool: int, test: int) -> Setup:
    """The fixed split of the data set's benchmark (``datasets.DATASETS``): start = the first training volume,
    pool = the next ``pool`` ones, test = the first ``test`` of the test split."""
    dataset = DATASETS[data]
    train, tests = dataset.train_pairs(root), dataset.test_pairs(root)
    return Setup(data, dataset.class_names, read_case(*train[0]), [read_case(*p) for p in train[1:1 + pool]],
                 [read_case(*p) for p in tests[:test]])


def choose(strategy: str, count: int, shapes: Mapping[str, Sequence[int]], reviewed: Mapping[str, Reviewed],
           rng: np.random.Generator, scores: Mapping[str, np.ndarray] | None = None) -> list[tuple[str, int]]:
    """The next ``count`` unreviewed (volume, slice) pairs of the pool under ``strategy`` (a scored strategy takes
    the per-slice ``scores`` of its measure along ``AXIS``)."""
    if strategy == CONTROL:
        return []
    if strategy in RANKINGS:
        return [(s.image, s.index) for s in suggest(scores or {}, reviewed, count=count, slab=RANKING_SLAB, axis=AXIS)]
    free = {n: [i for i in range(shapes[n][AXIS]) if not reviewed[n].is_reviewed(i)] for n in sorted(shapes)}
    if strategy == "random":
        pairs = [(n, i) for n, idx in free.items() for i in idx]
        picks = rng.choice(len(pairs), size=min(count, len(pairs)), replace=False)
        return [pairs[k] for k in sorted(int(k) for k in picks)]
    if strategy not in ("even", f"even-{MEASURE}"):
        raise ValueError(f"unknown strategy {strategy!r}")
    names = list(free)
    if strategy == "even":
        order = [names[k] for k in rng.permutation(len(names))]
    else:  # the most uncertain volume first: mean score of its unreviewed slices
        mean = {n: float(np.mean(np.asarray(scores[n])[free[n]])) if free[n] else -np.inf for n in names}
        order = sorted(names, key=lambda n: -mean[n])
    order = [n for n in order if not reviewed[n].slices] + [n for n in order if reviewed[n].slices]
    out: list[tuple[str, int]] = []
    for n in order:
        want = min(count - len(out), len(free[n]))
        out += [(n, free[n][int((j + 0.5) * len(free[n]) / want)]) for j in range(want)]
        if len(out) == count:
            break
    return out


def strategy_rng(seed: int, strategy: str, round_: int) -> np.random.Generator:
    """The same draws for every method and on a re-run: seeded by seed, strategy and round."""
    return np.random.default_rng([seed, zlib.crc32(strategy.encode()), round_])


def volumes(setup: Setup, reviewed: Mapping[str, Reviewed], method: str) -> tuple[list[Volume], list[Volume]]:
    """Labeled (the start volume and every reviewed pool volume, masked to its reviewed slices) and unlabeled
    (the unreviewed pool; none for the supervised pair) training volumes."""
    labeled = [setup.start_volume]
    unlabeled = []
    for c in setup.pool:
        rec = reviewed[c.name]
        if rec.slices:
            labeled.append(Volume.create(c.image, c.label, mask=rec.mask(), name=c.name))
        elif method != "supervised":
            unlabeled.append(setup.unlabeled[c.name])
    return labeled, unlabeled


def method_config(base: TrainConfig, method: str, iterations: int, seed: int) -> TrainConfig:
    """The settings of one training run of ``method``."""
    dmd = method != "supervised"
    return replace(base, iterations=iterations, checkpoint_every=iterations, seed=seed,
                   lambda_distill=base.lambda_distill if dmd else 0.0,
                   unlabeled_batch=base.unlabeled_batch if dmd else 0,
                   batch_norm="joint" if method == "dmd-before" else base.batch_norm)


def train(labeled: list[Volume], unlabeled: list[Volume], cfg: TrainConfig, run_dir: Path,
          init: Path | None, method: str) -> tuple[ModelPair, float, str]:
    """One training run of ``method`` (warm from ``init`` when given); the trained pair, its seconds and the
    precision it ran."""
    t0 = time.perf_counter()
    trainer = Trainer(labeled, unlabeled, cfg, run_dir=run_dir, init=init)
    if method == "dmd-before":
        trainer.settle_statistics = lambda iteration: None  # the running statistics as training leaves them
    for _ in trainer.run():
        pass
    return trainer.model, time.perf_counter() - t0, trainer.precision.describe()


def refresh(model: ModelPair, setup: Setup, strategy: str) -> dict[str, np.ndarray]:
    """The pool's per-slice scores under ``strategy``'s measure as ``model`` predicts it (the dock's refresh, at the
    model's patch)."""
    out = {}
    for c in setup.pool:
        pred = predict(model, c.image, batch_size=8, measures=(SCORED[strategy],))  # along axis 0 (AXIS)
        out[c.name] = pred.scores[SCORED[strategy]]
    return out


def score(model: ModelPair, setup: Setup) -> dict:
    """The prediction of ``inference.predict``'s defaults on the test cases (windows of the model's patch): metrics
    per class and their mean over the foreground classes."""
    rows = []
    for c in setup.test:
        rows += evaluate_case(predict(model, c.image, batch_size=8).labels, c.label, len(setup.class_names))
    per_class = summarize(rows)
    return {"per_class": per_class, **{k: float(np.mean([m[k] for m in per_class])) for k in ("dice", "hd95", "asd")}}


def saved_entry(out: Path, key: str, settings: dict) -> dict | None:
    """The recorded entry ``key`` if it was made with the same settings."""
    entry = load_results(out).get(key)
    return entry if entry and entry.get("settings") == settings else None


def start_model(setup: Setup, base: TrainConfig, method: str, seed: int, opts: argparse.Namespace,
                settings: dict) -> tuple[Path, dict]:
    """The model trained from scratch on the start volume (and the pool, unlabeled, for DMD), shared by the
    strategies; reused when recorded with the same settings. Returns its checkpoint and its round-0 record."""
    cfg = method_config(base, method, opts.start_iterations, seed)
    folder = opts.runs / f"loop_{setup.name}" / f"{method}_start_s{seed}"
    key, settings = f"{method}/start/seed{seed}", {**settings, "config": model_settings(cfg)}
    done = saved_entry(opts.out, key, settings)
    if done and (folder / CHECKPOINT_NAME).exists():
        return folder / CHECKPOINT_NAME, done["round"]
    print(f"{setup.name} {method} seed {seed}: start training, {cfg.iterations} iterations", flush=True)
    model, seconds, precision = train(
        *volumes(setup, {c.name: Reviewed(c.image.shape, AXIS) for c in setup.pool}, method), cfg, folder, None,
        method)
    t0 = time.perf_counter()
    record = {"round": 0, "slices_reviewed": 0, "new": [], **score(model, setup), "precision": precision,
              "seconds": {"review": 0.0, "train": seconds, "refresh": 0.0}}
    record["seconds"]["evaluate"] = time.perf_counter() - t0
    save_result(opts.out, key, {"method": method, "seed": seed, "settings": settings, "round": record})
    return folder / CHECKPOINT_NAME, record


def entry(loop: Loop, settings: dict) -> dict:
    return {"method": loop.method, "strategy": loop.strategy, "seed": loop.seed, "settings": settings,
            "machine": machine_name(resolve_device()), "rounds": loop.rounds}


def advance(loop: Loop, setup: Setup, base: TrainConfig, opts: argparse.Namespace, driver: Loop | None,
            settings: dict) -> None:
    """One round of ``loop``: review K slices (or those the driver reviewed), train R iterations warm, refresh."""
    r = len(loop.rounds)
    refresh_s = 0.0
    ranks = driver is None and loop.strategy in SCORED
    if ranks and loop.scores is None:  # after the start, or continued
        t0 = time.perf_counter()
        loop.scores = refresh(load_model(loop.checkpoint), setup, loop.strategy)
        refresh_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if driver is None:
        shapes = {c.name: c.image.shape for c in setup.pool}
        new = choose(loop.strategy, opts.slices, shapes, loop.reviewed, strategy_rng(loop.seed, loop.strategy, r),
                     loop.scores)
    else:
        new = [tuple(p) for p in driver.rounds[r]["new"]]
    if not new and loop.strategy != CONTROL:
        raise SystemExit(f"{loop.key}: every slice of the pool is reviewed; lower --rounds or raise --pool")
    for name, index in new:
        if loop.reviewed[name].is_reviewed(index):
            raise AssertionError(f"{loop.key}: slice {index} of {name} reviewed twice")
        loop.reviewed[name].mark(index)
    review_s = time.perf_counter() - t0
    cfg = method_config(base, loop.method, opts.iterations, loop.seed * 1000 + r)
    run_dir = loop.folder / f"round_{r:02d}"
    model, train_s, precision = train(*volumes(setup, loop.reviewed, loop.method), cfg, run_dir, loop.checkpoint,
                                      loop.method)
    if ranks:
        t0 = time.perf_counter()
        loop.scores = refresh(model, setup, loop.strategy)
        refresh_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = score(model, setup)
    record = {"round": r, "slices_reviewed": loop.rounds[-1]["slices_reviewed"] + len(new),
              "new": [[n, int(i)] for n, i in new], **metrics, "precision": precision,
              "seconds": {"review": review_s, "train": train_s, "refresh": refresh_s,
                          "evaluate": time.perf_counter() - t0}}
    loop.rounds.append(record)
    previous, loop.checkpoint = loop.checkpoint, run_dir / CHECKPOINT_NAME
    save_result(opts.out, loop.key, entry(loop, settings))
    if previous is not None and previous.parent.parent == loop.folder:  # keep one checkpoint per loop
        previous.unlink(missing_ok=True)
    print(f"{setup.name} {loop.key} round {r}: {record['slices_reviewed']} slices, Dice {100 * metrics['dice']:.2f} "
          f"95HD {metrics['hd95']:.2f} ASD {metrics['asd']:.2f}, train {train_s:.0f} s, refresh {refresh_s:.0f} s, "
          f"score {record['seconds']['evaluate']:.0f} s", flush=True)


def resume_loop(loop: Loop, saved: dict | None, driver: Loop | None) -> bool:
    """Continue ``loop`` from its recorded rounds when their last checkpoint is there and (for a method that
    replays) they are the driver's reviews; True when it continues."""
    if not saved or len(saved["rounds"]) < 2:
        return False
    rounds = saved["rounds"]
    ckpt = loop.folder / f"round_{len(rounds) - 1:02d}" / CHECKPOINT_NAME
    if not ckpt.exists():
        return False
    if driver is not None and [r["new"] for r in rounds] != [r["new"] for r in driver.rounds[:len(rounds)]]:
        return False
    for r in rounds[1:]:
        for name, index in r["new"]:
            loop.reviewed[name].mark(index)
    loop.rounds, loop.checkpoint = rounds, ckpt
    return True


def run(setup: Setup, opts: argparse.Namespace) -> dict:
    """Every loop (seed x strategy x method) for ``opts.rounds`` rounds, round-robin; returns the results."""
    base = TrainConfig(num_classes=len(setup.class_names), class_names=setup.class_names, patch_size=opts.patch,
                       precision=opts.precision, lambda_rampup=opts.rampup)
    settings = {"data": setup.name, "start": setup.start.name, "pool": [c.name for c in setup.pool],
                "test": [c.name for c in setup.test], "slices_per_round": opts.slices,
                "iterations_per_round": opts.iterations, "start_iterations": opts.start_iterations,
                "rampup": opts.rampup, "patch": list(opts.patch) if opts.patch else "auto", "driver": opts.methods[0],
                "axis": AXIS, "slab": RANKING_SLAB, "config": model_settings(base)}
    deadline = time.time() + 60 * opts.minutes if opts.minutes else None
    loops: dict[tuple[int, str, str], Loop] = {}
    drivers: dict[tuple[int, str], Loop] = {}  # the loop choosing the reviews of each seed and strategy
    for seed in opts.seeds:
        starts = {m: start_model(setup, base, m, seed, opts, settings) for m in opts.methods}
        for strategy in opts.strategies:
            driver = None
            for method in opts.methods:
                if method in VARIANTS and strategy not in opts.variant_strategies:
                    continue
                loop = Loop(method, strategy, seed, opts.runs / f"loop_{setup.name}" / f"{method}_{strategy}_s{seed}",
                            {c.name: Reviewed(c.image.shape, AXIS) for c in setup.pool})
                if not resume_loop(loop, saved_entry(opts.out, loop.key, settings), driver):
                    if loop.folder.exists():
                        shutil.rmtree(loop.folder)  # rounds of other settings
                    loop.checkpoint, start = starts[method]
                    loop.rounds = [start]
                loops[seed, strategy, method] = loop
                driver = drivers.setdefault((seed, strategy), loop)
    for _ in range(opts.rounds):
        for (seed, strategy, _), loop in loops.items():
            if len(loop.rounds) > opts.rounds:
                continue
            if deadline and time.time() > deadline:
                print(f"time limit of {opts.minutes} min reached: stopping (re-run to continue)", flush=True)
                return load_results(opts.out)
            driver = drivers[seed, strategy]
            advance(loop, setup, base, opts, None if loop is driver else driver, settings)
    return load_results(opts.out)


def curves(results: dict) -> dict[tuple[str, str], dict]:
    """Per (strategy, method): slices reviewed and Dice % per round, mean/min/max over the seeds that reached the
    round (``seeds`` counts them per round)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in results.values():
        if "strategy" in e:
            groups.setdefault((e["strategy"], e["method"]), []).append(e)
    out = {}
    for k, runs in sorted(groups.items()):
        most = max(len(r["rounds"]) for r in runs)
        rounds = [[r["rounds"][i] for r in runs if i < len(r["rounds"])] for i in range(most)]
        dice = [np.array([100 * x["dice"] for x in rs]) for rs in rounds]
        later = [x["seconds"] for rs in rounds[1:] for x in rs]
        out[k] = {"slices": np.array([np.mean([x["slices_reviewed"] for x in rs]) for rs in rounds]),
                  "mean": np.array([d.mean() for d in dice]), "min": np.array([d.min() for d in dice]),
                  "max": np.array([d.max() for d in dice]), "seeds": np.array([len(d) for d in dice]),
                  "hd95": np.array([np.mean([x["hd95"] for x in rs]) for rs in rounds]),
                  "asd": np.array([np.mean([x["asd"] for x in rs]) for rs in rounds]),
                  "round_s": float(np.mean([t["review"] + t["train"] + t["refresh"] for t in later] or [0.0]))}
    return out


def report(results: dict) -> str:
    """Markdown: Dice % per round (mean over seeds) for each strategy x method, and the slices each strategy
    needs to reach the final Dice of random review (same method)."""
    cs = curves(results)
    if not cs:
        return "no loop results"
    n = max(len(c["mean"]) for c in cs.values())
    lines = ["| strategy | method | seeds | s/round | " + " | ".join(f"r{i}" for i in range(n)) + " |",
             "|---|---|---|---|" + "---|" * n]
    for (strategy, method), c in cs.items():
        top = c["seeds"][0]
        cells = [f"{d:.1f} ({s:.0f})" + ("" if k == top else f" [{k}]")
                 for d, s, k in zip(c["mean"], c["slices"], c["seeds"])]
        lines.append(f"| {strategy} | {method} | {top} | {c['round_s']:.0f} | " + " | ".join(cells) + " |")
    lines.append("\nDice % (slices reviewed) per round, mean over the seeds ([n]: only n seeds reached the round); "
                 "s/round = review + training + refresh.\n")
    for (strategy, method), c in cs.items():
        ref = cs.get(("random", method))
        if strategy in ("random", CONTROL) or ref is None:
            continue
        m = min(len(ref["mean"]), len(c["mean"]))
        target, budget = ref["mean"][m - 1], ref["slices"][m - 1]
        reached = [s for s, d in zip(c["slices"][:m], c["mean"][:m]) if d >= target]
        lines.append(f"- {method}: {strategy} reaches random's Dice {target:.1f} at {budget:.0f} slices "
                     + (f"with {reached[0]:.0f} slices ({100 * reached[0] / max(budget, 1):.0f}%)" if reached
                        else "not within its rounds"))
    lines += control_lines(cs)
    return "\n".join(lines)


def control_lines(cs: dict[tuple[str, str], dict]) -> list[str]:
    """What the reviews themselves add: each strategy's Dice minus the control arm's (same method, same rounds of
    training, no reviews) at their last common round, mean over the seeds."""
    out = []
    for (strategy, method), c in cs.items():
        ref = cs.get((CONTROL, method))
        if strategy == CONTROL or ref is None:
            continue
        m = min(len(ref["mean"]), len(c["mean"]))
        gain = c["mean"][m - 1] - ref["mean"][m - 1]
        out.append(f"- {method}: after round {m - 1}, {strategy}'s {c['slices'][m - 1]:.0f} reviewed slices add "
                   f"{gain:+.1f} Dice points over the same training without reviews "
                   f"({c['mean'][m - 1]:.1f} vs {ref['mean'][m - 1]:.1f})")
    return out


def gather(folder: Path) -> dict[str, dict]:
    """Every ``loop_*.json`` of ``folder`` merged per data set (runs split over several files, e.g. one per
    process, make one curve); a loop recorded in two files keeps the record that got further."""
    out: dict[str, dict] = {}
    for f in sorted(folder.glob("loop_*.json")):
        for key, e in load_results(f).items():
            merged = out.setdefault(e["settings"]["data"], {})
            if key not in merged or len(e.get("rounds", [])) > len(merged[key].get("rounds", [])):
                merged[key] = e
    return out


def plot(sets: dict[str, dict], path: Path) -> None:
    """Dice against slices reviewed, one column per data set: above, the review strategies under DMD; below, the
    methods (DMD, its ramp-up, the supervised pair) on the same reviews. Lines: the mean over seeds; bands: their
    range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"ranking": "tab:red", "random": "tab:blue", "even": "tab:green", "ranking-structure": "tab:orange",
              "ranking-peak": "tab:purple", "ranking-entropy": "tab:brown", f"even-{MEASURE}": "tab:olive",
              "dmd": "tab:red", "dmd-before": "tab:orange", "supervised": "tab:gray", CONTROL: "black"}
    styles = {"random": "-", "ranking-entropy": "--", "ranking": ":", "even": "-."}
    fig, axes = plt.subplots(2, len(sets), figsize=(6.5 * len(sets), 9), squeeze=False)
    for col, results in enumerate(sets.values()):
        settings = next(iter(results.values()))["settings"]
        seeds = sorted({e["seed"] for e in results.values()})
        cs = curves(results)
        for row, ax in enumerate(axes[:, col]):
            for (strategy, method), c in cs.items():
                if (row == 0 and method != "dmd") or (row == 1 and strategy not in styles):
                    continue
                key, style = (strategy, "-") if row == 0 else (method, styles[strategy])
                x, c = c["slices"], dict(c)
                if strategy == CONTROL:  # drawn at the rounds' slices of another strategy: same iterations
                    other = next((o["slices"] for (st, me), o in cs.items() if me == method and st != CONTROL), None)
                    if other is None:
                        continue
                    n = min(len(other), len(x))
                    x, c = other[:n], {k: c[k][:n] for k in ("mean", "min", "max", "seeds")}
                note = " (no reviews, same training)" if strategy == CONTROL else ""
                ax.plot(x, c["mean"], style, color=colors.get(key), marker=".", label=f"{strategy} · {method}{note}")
                if c["seeds"].max() > 1:
                    ax.fill_between(x, c["min"], c["max"], color=colors.get(key), alpha=0.08)
            what = "review strategies, DMD" if row == 0 else "methods on the same reviews"
            ax.set_title(f"{settings['data']}: {what} (K={settings['slices_per_round']}, "
                         f"R={settings['iterations_per_round']} it/round, {len(seeds)} seed(s))", fontsize=10)
            ax.set_xlabel(f"slices reviewed (pool of {len(settings['pool'])} volumes; plus 1 volume labeled whole)")
            ax.set_ylabel(f"test Dice % ({len(settings['test'])} test volumes)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    plt.close(fig)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=sorted(DEFAULTS), default="hippocampus")
    ap.add_argument("--root", type=Path, help="data folder (default ../shared/data/<data>)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES,
                    default=[f"ranking-{MEASURE}", "random", "even", CONTROL])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="the first one chooses the reviews, the others train on the same ones")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--slices", type=int, default=5, help="slices reviewed per round (K)")
    ap.add_argument("--iterations", type=int, help="training iterations per round (R)")
    ap.add_argument("--start-iterations", type=int, help="iterations of the start training")
    ap.add_argument("--rampup", type=int, help="λ ramp over the model's first N iterations (default: the training "
                                               "settings' lambda_rampup)")
    ap.add_argument("--pool", type=int, default=8, help="unlabeled training volumes loaded")
    ap.add_argument("--test", type=int, help="test volumes scored (the first of the test split)")
    ap.add_argument("--patch", type=int, nargs=3)
    ap.add_argument("--precision", choices=PRECISIONS, default="auto")
    ap.add_argument("--threads", type=int, help="CPU threads of torch (default torch's; 1 is steadier on a busy CPU)")
    ap.add_argument("--variant-strategies", nargs="+", choices=STRATEGIES, default=["random"],
                    help=f"run {' and '.join(VARIANTS)} only with these strategies (default: random)")
    ap.add_argument("--minutes", type=float, help="start no round after this many minutes (re-run to continue)")
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/loop_<data>.json)")
    ap.add_argument("--figure", type=Path, default=Path("docs/loop.png"))
    ap.add_argument("--plot-only", action="store_true",
                    help="only report and draw the figure from every loop_*.json beside --out")
    opts = ap.parse_args(argv)
    for k, v in DEFAULTS[opts.data].items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    opts.patch = tuple(opts.patch) if opts.patch else None
    opts.rampup = TrainConfig().lambda_rampup if opts.rampup is None else opts.rampup
    opts.root = opts.root or DATASETS[opts.data].root
    opts.out = opts.out or Path(f"benchmarks/results/loop_{opts.data}.json")
    return opts


def main(argv: Sequence[str] | None = None) -> None:
    opts = parse(argv)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if not opts.plot_only:
        run(load_setup(opts.data, opts.root, opts.pool, opts.test), opts)
    sets = gather(opts.out.parent)
    for data, results in sets.items():
        if opts.plot_only or data == opts.data:
            print(f"## {data}\n{report(results)}")
    if sets:
        plot(sets, opts.figure)


if __name__ == "__main__":
    main()
