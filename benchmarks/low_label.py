"""One or two labeled hippocampus volumes and a short run: DMD against the supervised pair, per labeled choice.

The shared hippocampus set (``datasets.HIPPOCAMPUS``: 156 training cases, 39 test, sorted by name) with a fixed
grid that does not rest on one lucky volume: each labeled choice (by default 4 single volumes and 2 pairs, indices
into the training split) trains DMD and the supervised pair (λ 0, no unlabeled batch) with everything else equal,
today's defaults but the patch (32×48×32) and what the command line adds, for every seed. The unlabeled images are
the first ``--unlabeled`` training cases that no choice labels (the same for every choice); the test cases the first
``--test`` of the test split. Each run's score is the test Dice of the pair's mean prediction, averaged over the
structures (classes 1 and 2) and the test cases; the table gives DMD minus the supervised pair per labeled choice
(the mean over seeds, and each seed's), their mean and the worst choice.

Every run is merged into ``--out`` as it finishes and skipped when it is there already, so a killed grid continues
where it stopped (one training thread per process by default: run at most two processes side by side).

    python benchmarks/low_label.py --iterations 300 --seeds 0 1 --out benchmarks/results/cpu/low_label.json
    python benchmarks/low_label.py --iterations 300 --seeds 0 1 --unlabeled-views own \
        --out benchmarks/results/cpu/low_label_views.json          # a lever: its own grid, the same pairing
    python benchmarks/low_label.py --table --out benchmarks/results/cpu/low_label.json   # the table only
    python benchmarks/low_label.py --levers        # one row per lever: against the pair and against today's DMD
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_dmd.config import TrainConfig

from datasets import HIPPOCAMPUS, Split, add_training_options, settings_of
from protocol import SUPERVISED, evaluate, options_tag, train
from results_file import load_results, save_result

CHOICES = ((0,), (39,), (78,), (117,), (19, 58), (97, 136))  # labeled training cases (indices), spread over the set
PATCH = (32, 48, 32)
MODES = ("dmd", "supervised")


def choice_name(choice: tuple[int, ...]) -> str:
    """'l0' for the single volume 0, 'l19+58' for the pair 19 and 58."""
    return "l" + "+".join(map(str, choice))


def grid_split(root: Path, choice: tuple[int, ...], unlabeled: int, test: int,
               choices: tuple[tuple[int, ...], ...] = CHOICES) -> Split:
    """The cases of one labeled ``choice``: those labeled, the first ``unlabeled`` training cases no choice of
    ``choices`` labels, the first ``test`` test cases."""
    train_pairs = HIPPOCAMPUS.train_pairs(root)
    taken = {i for c in choices for i in c}
    free = [image for k, (image, _) in enumerate(train_pairs) if k not in taken]
    return Split([train_pairs[i] for i in choice], free[:unlabeled], HIPPOCAMPUS.test_pairs(root)[:test])


def structure_dice(result: dict) -> float:
    """The mean Dice (%) of a result over the structures (every class but background) and the test cases."""
    return 100 * float(np.mean([m["dice"] for m in result["per_class"] if m["class"] != 0]))


def run_key(choice: tuple[int, ...], mode: str, iterations: int, seed: int) -> str:
    """Where a run's result is kept in the results file."""
    return f"{choice_name(choice)}/{mode}/it{iterations}/seed{seed}"


def run_grid(args: argparse.Namespace) -> None:
    """Train and score every (seed, choice, mode) not in ``args.out`` yet, each merged into it as it finishes."""
    base = {**settings_of(args), "patch_size": PATCH, "num_classes": len(HIPPOCAMPUS.class_names),
            "class_names": HIPPOCAMPUS.class_names}
    for seed in args.seeds:
        for choice in args.choices:
            split = grid_split(args.data, choice, args.unlabeled, args.test)  # the whole grid's pool, any --choices
            for mode in args.modes:
                cfg = TrainConfig(**{**base, "seed": seed, **({} if mode == "dmd" else SUPERVISED)})
                name = mode + options_tag(cfg)
                key = run_key(choice, name, cfg.iterations, seed)
                if key in load_results(args.out):
                    continue
                folder = f"low_label_{choice_name(choice)}_u{args.unlabeled}_{name}_it{cfg.iterations}_s{seed}"
                run_dir = args.runs / folder
                seconds = train(mode, split if mode == "dmd" else Split(split.labeled, [], split.test), cfg, run_dir)
                res = evaluate(run_dir, split, cfg.patch_size, HIPPOCAMPUS.stride)
                res.update(mode=name, choice=list(choice), seed=seed, config=cfg.to_dict(), train_seconds=seconds,
                           unlabeled=len(split.unlabeled) if mode == "dmd" else 0, test=len(split.test),
                           unlabeled_cases=[Path(p).name for p in split.unlabeled] if mode == "dmd" else [])
                save_result(args.out, key, res)
                print(f"{key}: Dice {structure_dice(res):.2f} ({seconds:.0f} s)", flush=True)


def scores(results: dict, iterations: int) -> dict[tuple[tuple[int, ...], str, int], float]:
    """The structures' Dice (%) of every run of ``iterations``: {(choice, mode, seed): dice}."""
    return {(tuple(r["choice"]), r["mode"], r["seed"]): structure_dice(r) for r in results.values()
            if r["config"]["iterations"] == iterations}


def differences(results: dict, iterations: int, dmd: str = "dmd", supervised: str = "supervised") -> dict:
    """Per labeled choice, DMD minus the supervised pair (Dice points) for each seed both ran: {choice: {seed: d}}."""
    runs = scores(results, iterations)
    out: dict[tuple[int, ...], dict[int, float]] = {}
    for (choice, mode, seed), dice in sorted(runs.items()):
        if mode == dmd and (choice, supervised, seed) in runs:
            out.setdefault(choice, {})[seed] = dice - runs[(choice, supervised, seed)]
    return out


def table(results: dict, iterations: int, dmd: str = "dmd", supervised: str = "supervised") -> str:
    """Markdown: per labeled choice the two methods' Dice and DMD minus the supervised pair, per seed and on their
    mean (the seeds both ran); then, for one and for two labeled volumes, the mean over the choices, the worst
    choice and the largest spread over seeds."""
    runs, diffs = scores(results, iterations), differences(results, iterations, dmd, supervised)
    lines = [f"| labeled | {dmd} Dice % | {supervised} Dice % | difference per seed | difference |",
             "|---|---|---|---|---|"]
    for choice, per_seed in diffs.items():
        dice = [np.mean([runs[(choice, mode, seed)] for seed in per_seed]) for mode in (dmd, supervised)]
        seeds = " / ".join(f"{d:+.2f}" for d in per_seed.values())
        lines.append(f"| {choice_name(choice)} | {dice[0]:.2f} | {dice[1]:.2f} | {seeds} | "
                     f"{np.mean(list(per_seed.values())):+.2f} |")
    for size, what in ((1, "one labeled volume"), (2, "two labeled volumes")):
        means = [np.mean(list(s.values())) for c, s in diffs.items() if len(c) == size]
        if means:
            spread = [max(s.values()) - min(s.values()) for c, s in diffs.items() if len(c) == size]
            lines.append(f"| **{what}** ({len(means)} choices) | | | largest spread over seeds {max(spread):.2f} | "
                         f"mean {np.mean(means):+.2f}, worst {min(means):+.2f} |")
    return "\n".join(lines)


def levers(results: dict, iterations: int) -> str:
    """Markdown: one row per DMD variant (today's default and every lever of ``results``) and number of labeled
    volumes: its difference to the supervised pair and to today's DMD (the mean over the choices, the worst choice,
    the runs it won), over the choices and seeds both ran, and its largest spread over seeds against the pair."""
    lines = ["| DMD run | labeled | choices × seeds | − supervised pair: mean, worst | − today's DMD: mean, worst, "
             "runs won | largest spread over seeds |", "|---|---|---|---|---|---|"]
    names = sorted({r["mode"] for r in results.values() if r["mode"].startswith("dmd")}, key=lambda n: (n != "dmd", n))
    for name in names:
        pair, today = differences(results, iterations, name), differences(results, iterations, name, "dmd")
        for size in (1, 2):
            chosen = {c: s for c, s in pair.items() if len(c) == size}
            if not chosen:
                continue
            means = [np.mean(list(s.values())) for s in chosen.values()]
            runs = sum(len(s) for s in chosen.values())
            vs = "—"
            if name != "dmd" and (versus := [s for c, s in today.items() if len(c) == size]):
                won = sum(d > 0 for s in versus for d in s.values())
                means_today = [np.mean(list(s.values())) for s in versus]
                vs = (f"{np.mean(means_today):+.2f}, {min(means_today):+.2f}, "
                      f"{won} of {sum(len(s) for s in versus)}")
            spread = max(max(s.values()) - min(s.values()) for s in chosen.values())
            lines.append(f"| {name} | {size} | {len(chosen)} × {runs // len(chosen)} | {np.mean(means):+.2f}, "
                         f"{min(means):+.2f} | {vs} | {spread:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HIPPOCAMPUS.root)
    ap.add_argument("--choices", type=lambda s: tuple(int(i) for i in s.split("+")), nargs="+", default=list(CHOICES),
                    help="labeled choices as training-case indices, a pair joined by '+' (default: 0 39 78 117 19+58 "
                         "97+136)")
    ap.add_argument("--unlabeled", type=int, default=40, help="unlabeled training cases")
    ap.add_argument("--test", type=int, default=20, help="test cases (the first of the test split)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--threads", type=int, default=1, help="training threads of this process")
    ap.add_argument("--runs", type=Path, default=Path("benchmarks/runs"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu/low_label.json"))
    ap.add_argument("--table", action="store_true", help="print the table of --out and train nothing")
    ap.add_argument("--compare", nargs=2, metavar=("DMD", "SUPERVISED"),
                    help="the table between two other result names of --out")
    ap.add_argument("--levers", action="store_true", help="print one row per DMD variant of --out and train nothing")
    add_training_options(ap, {"iterations": 300}, replaced=("seed",))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.levers:
        print(levers(load_results(args.out), args.iterations))
        return
    if not args.table:
        run_grid(args)
    names = args.compare or ("dmd", "supervised")
    print(table(load_results(args.out), args.iterations, *names))


if __name__ == "__main__":
    main()
