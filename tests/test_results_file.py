"""The benchmarks' result files: parallel processes merging into one file keep every result."""
import json
import multiprocessing
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from results_file import fcntl, load_results, save_report, save_result  # noqa: E402


def _write(out: Path, name: str, count: int) -> None:
    for i in range(count):
        save_result(out, f"{name}/{i}", {"i": i, "payload": "x" * 2000})


@pytest.mark.skipif(fcntl is None, reason="no advisory locks on this platform")
def test_parallel_processes_keep_each_others_results(tmp_path):
    out = tmp_path / "results" / "run.json"
    save_result(out, "before", {"kept": True})
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write, args=(out, f"p{n}", 40)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    results = load_results(out)
    assert set(results) == {"before"} | {f"p{n}/{i}" for n in range(3) for i in range(40)}
    assert results["before"] == {"kept": True}
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_report_is_replaced_whole(tmp_path):
    out = tmp_path / "a" / "report.json"
    assert load_results(out) == {}
    save_report(out, {"x": 1, "y": [1, 2]})
    save_report(out, {"z": 2})
    assert json.loads(out.read_text(encoding="utf-8")) == {"z": 2}
