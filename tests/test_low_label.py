"""The low-label grid's split and its paired table (benchmarks/low_label.py), on file names and made-up scores."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from low_label import differences, grid_split, levers, table  # noqa: E402


def test_every_choice_shares_the_unlabeled_and_test_cases_and_none_is_labeled_elsewhere(tmp_path):
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for k in range(50):
            (tmp_path / folder / f"case_{k:03d}.nii.gz").touch()
    choices = ((0,), (5,), (1, 7))
    splits = [grid_split(tmp_path, c, 6, 3, choices) for c in choices]
    labeled = {p for s in splits for p, _ in s.labeled}
    assert [len(s.labeled) for s in splits] == [1, 1, 2]
    assert all(s.unlabeled == splits[0].unlabeled and s.test == splits[0].test for s in splits)
    assert len(splits[0].unlabeled) == 6 and len(splits[0].test) == 3
    assert not labeled & set(splits[0].unlabeled)
    assert not {p for p, _ in splits[0].test} & (labeled | set(splits[0].unlabeled))


def result(choice, mode, seed, dice_1, dice_2, iterations=300):
    return {"choice": list(choice), "mode": mode, "seed": seed, "config": {"iterations": iterations},
            "per_class": [{"class": 1, "dice": dice_1}, {"class": 2, "dice": dice_2}]}


def test_the_table_pairs_dmd_with_the_supervised_run_of_the_same_choice_and_seed():
    runs = [result((0,), "dmd", 0, 0.70, 0.80), result((0,), "supervised", 0, 0.74, 0.80),
            result((0,), "dmd", 1, 0.76, 0.80), result((0,), "supervised", 1, 0.74, 0.78),
            result((9,), "dmd", 0, 0.60, 0.60), result((9,), "supervised", 0, 0.70, 0.70),
            result((9,), "dmd", 1, 0.50, 0.50),  # no supervised partner: left out
            result((9,), "dmd", 0, 0.10, 0.10, iterations=1000)]
    results = {str(k): r for k, r in enumerate(runs)}
    diffs = differences(results, 300)
    assert diffs[(0,)] == {0: pytest.approx(-2.0), 1: pytest.approx(2.0)}
    assert diffs[(9,)] == {0: pytest.approx(-10.0)}
    text = table(results, 300)
    assert "| l0 | 76.50 | 76.50 | -2.00 / +2.00 | +0.00 |" in text
    assert "mean -5.00, worst -10.00" in text and "largest spread over seeds 4.00" in text


def test_the_levers_table_gives_each_variant_against_the_pair_and_against_today():
    runs = [result((0,), "supervised", 0, 0.70, 0.70), result((0,), "supervised", 1, 0.70, 0.70),
            result((5,), "supervised", 0, 0.60, 0.60), result((5,), "supervised", 1, 0.60, 0.60),
            result((0,), "dmd", 0, 0.74, 0.74), result((0,), "dmd", 1, 0.72, 0.72),
            result((5,), "dmd", 0, 0.64, 0.64), result((5,), "dmd", 1, 0.66, 0.66),
            result((0,), "dmd+x=1", 0, 0.75, 0.75), result((0,), "dmd+x=1", 1, 0.70, 0.70),
            result((5,), "dmd+x=1", 0, 0.70, 0.70), result((5,), "dmd+x=1", 1, 0.68, 0.68)]
    text = levers({str(k): r for k, r in enumerate(runs)}, 300)
    # dmd − pair: l0 +4, +2 (mean +3); l5 +4, +6 (mean +5); spread 2
    assert "| dmd | 1 | 2 × 2 | +4.00, +3.00 | — | 2.00 |" in text
    # the lever − pair: l0 +5, 0 (+2.5); l5 +10, +8 (+9); against today: l0 +1, −2 (−0.5); l5 +6, +2 (+4); 3 won
    assert "| dmd+x=1 | 1 | 2 × 2 | +5.75, +2.50 | +1.75, -0.50, 3 of 4 | 5.00 |" in text
