"""`arcpoint replay`: a user's trace through the routers, bad records reported, JSON as promised."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arcpoint.cli import main
from evals.replay import RUN_KEYS


def _trace(path: Path, n: int = 800) -> Path:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(0.25, n)) * 1000.0  # relative milliseconds
    lines = ["timestamp,input_length,output_length"]
    for i, ts in enumerate(t):
        lines.append(f"{ts:.1f},{rng.integers(50, 3000)},{rng.integers(5, 400)}")
        if i == 100:
            lines.append("12.5,not-a-number,10")
        if i == 200:
            lines.append(f"{ts + 1:.1f},100,0")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_runs_every_chosen_policy_over_seeds_and_writes_the_json(
    tmp_path: Path, capsys
) -> None:
    trace = _trace(tmp_path / "t.csv")
    out = tmp_path / "r.json"
    code = main(
        [
            "replay", "--trace", str(trace), "--load", "0.6", "--seeds", "2",
            "--policies", "round_robin,least_request", "--chaos", "backend_failure",
            "--json", str(out), "--jobs", "1",
        ]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "800 requests" in captured.err and "2 rejected" in captured.err
    assert "line 103: input tokens missing or not a positive integer" in captured.err
    assert "least_request" in captured.out and "backend_failure" in captured.out
    doc = json.loads(out.read_text())
    assert set(doc) == {"policies"} and set(doc["policies"]) == {"round_robin", "least_request"}
    for cell in doc["policies"].values():
        assert set(cell) == {*RUN_KEYS, "seeds"} and cell["seeds"] == [0, 1]
        assert 0 <= cell["sla_violation_pct"] <= 100
    # least-request beats blind round robin when a backend hangs on a mixed fleet
    p = doc["policies"]
    assert p["least_request"]["sla_violation_pct"] < p["round_robin"]["sla_violation_pct"]


def test_a_trace_that_cannot_be_read_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("when,prompt\n1,2\n")
    assert main(["replay", "--trace", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no column for timestamp, input, output" in err and "Traceback" not in err
    assert main(["replay", "--trace", str(tmp_path / "none.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
