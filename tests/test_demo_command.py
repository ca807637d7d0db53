"""`arcpoint demo`, the main job, as a user runs it: a small, fast run, twice on one database
(issue 14, points 4 and 12). Options come from the demo's own parser (tests/cli_runs.py)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runs import REPO, fast_demo_args, run_statuses


def _demo(db: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arcpoint", *fast_demo_args(db), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("decisions", "outcomes", "telemetry", "anomalies", "alerts", "events")
        }
    finally:
        conn.close()


def _ask_fleet_state(db: Path) -> str:
    """`ask`'s evidence for a fleet-state question, with the run's id taken out."""
    out = subprocess.run(
        [sys.executable, "-m", "arcpoint", "ask", "--db", str(db), "--json", "fleet state?"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    conn = sqlite3.connect(db)
    try:
        (run_id,) = conn.execute(
            "SELECT run_id FROM runs WHERE status = 'finished' ORDER BY started_at DESC"
        ).fetchone()
    finally:
        conn.close()
    return json.dumps(json.loads(out.stdout)["evidence"]).replace(run_id, "RUN")


@pytest.mark.slow
def test_demo_runs_and_a_rerun_replaces_the_first(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    first = _demo(db, "--json", str(tmp_path / "demo.json"))
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert "SLO viol" in first.stdout and "predictive" in first.stdout
    # Alert lines appear only with --verbose (the alerts are stored either way).
    assert "CRITICAL" not in first.stderr and "ESCALATED" not in first.stderr
    doc = json.loads((tmp_path / "demo.json").read_text())
    # exactly the format: the forecaster, and per scenario and policy the mean figures
    assert set(doc) == {"forecaster", "scenarios"}
    cell = doc["scenarios"]["latency_spike"]["predictive"]
    assert set(cell) == {
        "sla_violation_pct", "goodput_rps", "ttft_p50_ms", "ttft_p99_ms", "tpot_p99_ms",
        "e2e_p99_ms", "error_pct", "mean_cost", "flaps_per_h", "escalated_pct", "seeds",
    }  # fmt: skip
    # Costs print in micro-dollars to one decimal, with digits that were not rounded away.
    cost = cell["mean_cost"]
    assert f"{cost * 1e6:.1f}" in first.stdout
    assert round(cost, 4) != cost
    once = _counts(db)
    assert once["decisions"] > 0 and once["telemetry"] > 0
    assert once["alerts"] > 0
    _one_clock(db)
    answer_once = _ask_fleet_state(db)

    second = _demo(db)
    assert second.returncode == 0, second.stderr
    assert "replaced the previous demo run" in second.stderr
    # The same run again: every table holds one run's rows, not two.
    assert _counts(db) == once
    assert run_statuses(db, "demo") == ["replaced", "finished"]
    # ... and the operator's answers count the requests once, as after the first run.
    assert _ask_fleet_state(db) == answer_once


def _one_clock(db: Path) -> None:
    """Issue 12, point 6: the demo's timeline is one simulated clock. No decision is stamped 0
    (every one carries its request's arrival), the model is trained on the history that ends
    where the timeline starts and activated then, and "now" is the newest telemetry."""
    from evals.demo import TIMELINE_START_TS

    conn = sqlite3.connect(db)
    try:
        first, last = conn.execute("SELECT MIN(ts), MAX(ts) FROM decisions").fetchone()
        now = conn.execute("SELECT MAX(ts) FROM telemetry").fetchone()[0]
        active = conn.execute(
            "SELECT activated_at, trained_to_ts, artifact_path FROM model_versions"
            " WHERE status = 'active'"
        ).fetchone()
        activations = [r[0] for r in conn.execute("SELECT ts FROM model_activations")]
        params = json.loads(
            conn.execute("SELECT params FROM runs WHERE command = 'demo'").fetchone()[0]
        )
    finally:
        conn.close()
    assert TIMELINE_START_TS <= first <= last <= now
    activated_at, trained_to, artifact = active
    assert activated_at == TIMELINE_START_TS and trained_to <= TIMELINE_START_TS
    assert all(TIMELINE_START_TS - 1 <= ts <= now for ts in activations)
    assert artifact and Path(artifact).is_file()  # the monitors can load the champion
    assert {s["name"] for s in params["fleet_specs"]} == {"b0", "b1", "b2", "b3"}
