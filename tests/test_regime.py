"""The measured regimes: their figures are the committed grid's, and the command line says them where DMD was weaker."""
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import FAST, run

from napari_dmd import regime
from napari_dmd.regime import MEASURED, Measured, measured, weaker_dmd

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from low_label import differences  # noqa: E402

from results_file import load_results  # noqa: E402


@pytest.mark.parametrize("m", MEASURED, ids=lambda m: f"l{m.labeled}_it{m.iterations}")
def test_the_measured_figures_are_those_of_the_committed_grid(m):
    diffs = differences(load_results(BENCHMARKS / "results" / "cpu" / "low_label.json"), m.iterations)
    per_choice = [np.mean(list(s.values())) for c, s in diffs.items() if len(c) == m.labeled]
    assert len(per_choice) == m.choices
    assert sum(len(s) for c, s in diffs.items() if len(c) == m.labeled) == m.runs
    assert m.mean == pytest.approx(np.mean(per_choice), abs=0.005)
    assert m.worst == pytest.approx(min(per_choice), abs=0.005)


def test_a_regime_covers_runs_of_its_labeled_volumes_no_longer_than_measured(monkeypatch):
    short, long = Measured(1, 300, -2.0, -4.0, 4, 2, "x"), Measured(1, 1000, 1.5, -0.5, 4, 2, "x")
    monkeypatch.setattr(regime, "MEASURED", (long, short))
    assert measured(1, 300) is short and measured(1, 100) is short
    assert measured(1, 301) is long and measured(1, 5000) is None and measured(2, 300) is None
    assert weaker_dmd(1, 5, 200, 4.0, 2) is short and weaker_dmd(1, 5, 600, 4.0, 2) is None  # DMD ahead at 1000
    assert weaker_dmd(1, 0, 200, 4.0, 2) is None and weaker_dmd(1, 5, 200, 0.0, 2) is None  # no distillation
    assert weaker_dmd(1, 5, 200, 4.0, 0) is None
    assert "2.0 Dice points below the supervised pair" in short.describe()


def test_train_says_what_was_measured_where_dmd_was_weaker(data, capsys, monkeypatch):
    monkeypatch.setattr(regime, "MEASURED", (Measured(2, 300, -2.0, -4.0, 4, 2, "hippocampus MRI"),))
    images, labels = data / "images", data / "labels"  # two of three images labeled
    out, _ = run(["train", "--images", images, "--labels", labels, "--out", data / "run", *FAST], capsys)
    note = [line for line in out.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and "2.0 Dice points below" in note[0] and "--lambda 0 --unlabeled-batch 0" in note[0]
