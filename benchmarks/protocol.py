"""Shared protocol of the accuracy benchmarks: train DMD and the supervised baseline, score their predictions.

The supervised baseline is the same pair of networks with lambda = 0 and no unlabeled batch: the two
networks then train independently on the labeled patches, and are scored as DMD is: labels from the pair's mean
(``config.COMBINE``), or from network A with ``--combine a`` (how every result before that default was scored).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from napari_dmd.checkpoint import load_model
from napari_dmd.config import COMBINE, COMBINES, WEIGHTING, TrainConfig, model_settings
from napari_dmd.data import Volume
from napari_dmd.inference import largest_components, predict
from napari_dmd.io import read_image
from napari_dmd.metrics import evaluate_case, summarize
from napari_dmd.training import CHECKPOINT_NAME, Trainer

from datasets import Dataset, Split
from results_file import load_results, save_result

METRICS = ("dice", "jaccard", "hd95", "asd")
SUPERVISED = {"lambda_distill": 0.0, "unlabeled_batch": 0, "mix_probability": 0.0}  # the supervised pair's settings
OPTIONS = ("labeled_sampling", "augment_spatial", "augment_intensity", "mix_probability", "mix_ratio", "mix_start",
           "pseudo_weight", "ce_weight", "unlabeled_views", "batch_norm", "lr", "lr_step", "lr_gamma", "lambda_rampup",
           "temperature", "distill_target", "ema_decay", "distill_confidence")


def options_tag(cfg: TrainConfig) -> str:
    """The low-label options, the cross-entropy weight, the batch-norm statistics, the learning rate and its schedule
    that ``cfg`` sets away from their defaults, as a suffix of its mode's name ('' when none; the mixing's ratio and
    start only with mixing on): runs of other options get their own run folder and result."""
    default = TrainConfig()
    return "".join(f"+{name}={getattr(cfg, name)}" for name in OPTIONS if getattr(cfg, name) != getattr(default, name)
                   and not (name in ("mix_ratio", "mix_start") and cfg.mix_probability == 0))


def add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """How the test cases are predicted (``inference.predict``): labels from network A or the pair's mean, mirrored
    or not. Runs already trained are reused, so changing only these scores the same models again."""
    parser.add_argument("--combine", choices=COMBINES, default=COMBINE, help="labels from network A or both")
    parser.add_argument("--mirror", action="store_true", help="average each network over the in-plane flips")


def prediction_tag(combine: str, mirror: bool) -> str:
    """The prediction options away from their defaults, as a suffix of a result's mode ('' when none)."""
    return (f"@{combine}" if combine != COMBINE else "") + ("@mirror" if mirror else "")


def load(pairs: list[tuple[Path, Path | None]]) -> list[Volume]:
    """Volumes of (image, label-or-None) paths."""
    out = []
    for image_path, label_path in pairs:
        image, geom = read_image(image_path)
        label = read_image(label_path)[0] if label_path else None
        out.append(Volume.create(image, label, name=image_path.name, spacing=geom.scale))
    return out


def train(mode: str, split: Split, cfg: TrainConfig, run_dir: Path) -> float:
    """Train one run unless a finished checkpoint of the same settings exists; returns training seconds
    (0 if reused). The same settings: every declared setting that changes what is learned
    (``config.model_settings``), so a new setting joins the key where it is declared."""
    ckpt = run_dir / CHECKPOINT_NAME
    if ckpt.exists():
        done = load_model(ckpt, "cpu")
        if done.iteration == cfg.iterations and model_settings(done.config) == model_settings(cfg):
            return 0.0
    unlabeled = load([(p, None) for p in split.unlabeled]) if mode == "dmd" else []
    t0 = time.perf_counter()
    for p in Trainer(load(split.labeled), unlabeled, cfg, run_dir=run_dir).run():
        if p.iteration % 100 == 0:
            print(f"  {mode} it {p.iteration}/{p.total} sup {p.sup_loss:.3f} dis {p.distill_loss:.3f} "
                  f"{p.its_per_s:.2f} it/s eta {p.eta / 60:.0f} min", flush=True)
    return time.perf_counter() - t0


def evaluate(run_dir: Path, split: Split, patch: tuple[int, ...], stride: tuple[int, ...],
             weighting: str = WEIGHTING, combine: str = COMBINE, mirror: bool = False) -> dict:
    """The run's prediction (labels as ``combine`` and ``mirror`` say) scored on the test cases
    (voxel metrics, medpy definitions), as predicted and, under ``largest_component``, with each class cut to its
    largest connected component."""
    model = load_model(run_dir / CHECKPOINT_NAME, "auto")
    rows, lcc_rows, seconds = [], [], 0.0
    for image_path, label_path in split.test:
        image, _ = read_image(image_path)
        ref, _ = read_image(label_path)
        t0 = time.perf_counter()
        pred = predict(model, image, patch, stride, batch_size=8, weighting=weighting, combine=combine, mirror=mirror)
        seconds += time.perf_counter() - t0
        for out, labels in ((rows, pred.labels), (lcc_rows, largest_components(pred.labels))):
            out += [{"case": image_path.name, **r, "disagreement": pred.volume_score}
                    for r in evaluate_case(labels, ref, model.num_classes)]
    return {"per_class": summarize(rows), "cases": rows, "inference_s_per_volume": seconds / len(split.test),
            "largest_component": {"per_class": summarize(lcc_rows), "cases": lcc_rows}}


def run(data: Dataset, split: Split, base: dict, modes: list[str], seeds: list[int], runs: Path, out: Path,
        combine: str = COMBINE, mirror: bool = False) -> dict:
    """Train and score every (mode, seed) on ``data``; ``base`` holds the declared settings (``settings_of``,
    the patch among them) but the seed; ``combine`` and ``mirror`` say how the test cases are predicted (a result's
    mode ends in ``prediction_tag``). The supervised mode trains with λ = 0 and no unlabeled batch (so no
    copy-paste, which mixes labeled with unlabeled patches; the other options apply to it as to DMD). Each
    result is merged into the JSON file ``out`` as it comes (re-read before writing, so runs of other seeds
    in parallel processes keep theirs)."""
    for seed in seeds:
        for mode in modes:
            dmd = mode == "dmd"
            cfg = TrainConfig(**{**base, "num_classes": len(data.class_names), "class_names": data.class_names,
                                 "seed": seed, **({} if dmd else SUPERVISED)})
            if dmd and cfg.lambda_rampup:
                mode = f"dmd-rampup{cfg.lambda_rampup}"
            mode += options_tag(cfg)
            run_dir = runs / f"{data.name}_{mode}_l{len(split.labeled)}_it{cfg.iterations}_s{seed}"
            seconds = train(mode, split, cfg, run_dir)
            res = evaluate(run_dir, split, cfg.patch_size, data.stride, combine=combine, mirror=mirror)
            mode += prediction_tag(combine, mirror)
            res.update(mode=mode, seed=seed, config=cfg.to_dict(), labeled=len(split.labeled),
                       unlabeled=len(split.unlabeled) if dmd else 0, test=len(split.test), train_seconds=seconds)
            save_result(out, f"{mode}/seed{seed}", res)
            for m in res["per_class"]:
                print(f"{data.name} {mode} seed {seed} class {m['class']}: " + " ".join(
                    f"{k} {100 * m[k] if k in ('dice', 'jaccard') else m[k]:.2f}" for k in METRICS), flush=True)
    return load_results(out)


def disagreement_vs_dice(run: dict) -> float:
    """Spearman correlation of the test cases' mean disagreement with their Dice (all classes):
    negative where the images the two networks disagree on are those they segment worse."""
    return float(spearmanr([c["disagreement"] for c in run["cases"]], [c["dice"] for c in run["cases"]])[0])


def table(results: dict, largest_component: bool = False) -> str:
    """Markdown table of the mean metrics per mode and class, averaged over seeds (with
    ``largest_component``: of the predictions cut to their largest component, for the results
    that were scored that way)."""
    lines = ["| method | class | seeds | Dice % | Jaccard % | 95HD (vox) | ASD (vox) | ρ(disagreement, Dice) |",
             "|---|---|---|---|---|---|---|---|"]
    modes = sorted({r["mode"] for r in results.values()})
    for mode in modes:
        runs = [r["largest_component"] if largest_component else r for r in results.values()
                if r["mode"] == mode and (not largest_component or "largest_component" in r)]
        for c in sorted({m["class"] for r in runs for m in r["per_class"]}):
            vals = {k: np.mean([m[k] for r in runs for m in r["per_class"] if m["class"] == c]) for k in METRICS}
            rho = np.mean([disagreement_vs_dice(r) for r in runs])
            label = f"{mode} + largest component" if largest_component else mode
            lines.append(f"| {label} | {c} | {len(runs)} | {100 * vals['dice']:.2f} | {100 * vals['jaccard']:.2f} | "
                         f"{vals['hd95']:.2f} | {vals['asd']:.2f} | {rho:.2f} |")
    return "\n".join(lines)
