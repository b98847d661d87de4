"""The simulated clinician of benchmarks/loop.py: one tiny loop on synthetic data, and its review strategies."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_dmd.review import Reviewed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import loop  # noqa: E402
from synthetic import make_case  # noqa: E402


def case(seed: int) -> "loop.Case":
    image, label = make_case(seed, shape=(16, 24, 24))
    return loop.Case(f"case{seed}", image, label)


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two threads wait on each other far longer than they compute."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def setup():
    return loop.Setup("synthetic", ("background", "box"), case(0), [case(s) for s in (1, 2, 3)], [case(4)])


def test_ranking_only_picks_unreviewed_slices():
    shape = (12, 4, 4)
    d = np.zeros(shape, np.float32)
    d[:6] = 1.0  # the networks disagree most on slices 0..5, of which 0..4 are reviewed
    rec = Reviewed(shape, slices={0, 1, 2, 3, 4})
    picks = loop.choose("ranking", 3, {"a": shape}, {"a": rec}, np.random.default_rng(0), {"a": d.mean(axis=(1, 2))})
    assert picks and all(not rec.is_reviewed(i) for _, i in picks)
    assert picks[0] == ("a", 5)


@pytest.mark.parametrize("strategy", ["random", "even"])
def test_blind_strategies_pick_distinct_unreviewed_slices(strategy):
    shapes = {"a": (10, 4, 4), "b": (10, 4, 4)}
    reviewed = {"a": Reviewed(shapes["a"], slices=set(range(8))), "b": Reviewed(shapes["b"])}
    picks = loop.choose(strategy, 4, shapes, reviewed, np.random.default_rng(1))
    assert len(picks) == len(set(picks)) == 4
    assert all(not reviewed[n].is_reviewed(i) for n, i in picks)
    if strategy == "even":  # a volume not reviewed yet, slices spread over it
        assert [i for _, i in picks] == [1, 3, 6, 8] and {n for n, _ in picks} == {"b"}


def test_even_entropy_spreads_slices_over_the_most_uncertain_unreviewed_volume():
    shapes = {"a": (10, 4, 4), "b": (10, 4, 4), "c": (10, 4, 4)}
    reviewed = {"a": Reviewed(shapes["a"], slices={0}), "b": Reviewed(shapes["b"]), "c": Reviewed(shapes["c"])}
    scores = {"a": np.full(10, 9.0), "b": np.full(10, 1.0), "c": np.full(10, 2.0)}  # a: most uncertain, but begun
    picks = loop.choose(f"even-{loop.MEASURE}", 4, shapes, reviewed, np.random.default_rng(0), scores)
    assert picks == [("c", 1), ("c", 3), ("c", 6), ("c", 8)]


def test_one_tiny_loop_records_rounds_and_reuses_them(setup, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "loop_synthetic.json"
    args = ["--rounds", "2", "--slices", "3", "--iterations", "1", "--start-iterations", "1", "--seeds", "0",
            "--patch", "16", "16", "16", "--precision", "fp32", "--methods", "dmd", "supervised",
            "--strategies", "ranking-structure", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    results = loop.run(setup, loop.parse(args))
    assert set(results) == {"dmd/start/seed0", "supervised/start/seed0",
                            "dmd/ranking-structure/seed0", "supervised/ranking-structure/seed0"}
    assert json.loads(out.read_text()) == results
    rounds = results["dmd/ranking-structure/seed0"]["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["slices_reviewed"] for r in rounds] == [0, 3, 6]
    picked = [tuple(p) for r in rounds for p in r["new"]]
    assert len(picked) == len(set(picked)) == 6  # never chosen twice
    for r in rounds:
        assert 0 <= r["dice"] <= 1 and {"review", "train", "refresh", "evaluate"} <= set(r["seconds"])
        assert r["precision"].startswith("fp32")  # the precision that ran, as asked
        assert [m["class"] for m in r["per_class"]] == [1]
    assert rounds[1]["seconds"]["refresh"] > 0  # the ranking's disagreement maps of the pool
    # the supervised pair trains on the same reviews and predicts no pool
    replay = results["supervised/ranking-structure/seed0"]["rounds"]
    assert [r["new"] for r in replay] == [r["new"] for r in rounds] and replay[1]["seconds"]["refresh"] == 0
    assert "ranking-structure | dmd" in loop.report(results)

    def no_training(*a, **k):
        raise AssertionError("a recorded round was trained again")

    monkeypatch.setattr(loop, "train", no_training)
    assert loop.run(setup, loop.parse(args)) == results


def test_results_split_over_files_merge_per_data_set(tmp_path):
    def entry(data, strategy, seed, rounds=3):
        rounds = [{"slices_reviewed": 5 * i, "dice": 0.1 * i + 0.01 * seed, "hd95": 1.0, "asd": 1.0,
                   "seconds": {"review": 0, "train": 1, "refresh": 0}} for i in range(rounds)]
        return {"method": "dmd", "strategy": strategy, "seed": seed, "settings": {"data": data}, "rounds": rounds}

    (tmp_path / "loop_a_part1.json").write_text(json.dumps({"dmd/random/seed0": entry("a", "random", 0)}))
    (tmp_path / "loop_a_part2.json").write_text(json.dumps({"dmd/random/seed0": entry("a", "random", 0, 2),
                                                            "dmd/random/seed1": entry("a", "random", 1, 2)}))
    (tmp_path / "loop_b.json").write_text(json.dumps({"dmd/even/seed0": entry("b", "even", 0)}))
    sets = loop.gather(tmp_path)
    assert set(sets) == {"a", "b"} and set(sets["a"]) == {"dmd/random/seed0", "dmd/random/seed1"}
    assert len(sets["a"]["dmd/random/seed0"]["rounds"]) == 3  # the record that got further
    c = loop.curves(sets["a"])["random", "dmd"]
    assert list(c["seeds"]) == [2, 2, 1]  # each round: the seeds that reached it
    assert np.allclose(c["mean"], [0.5, 10.5, 20.0])
    assert "20.0 (10) [1]" in loop.report(sets["a"])
