"""`arcpoint eval agents` as a user runs it: one case through the command line (issue 14,
point 12), with its exit status, table and report files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli_runs import REPO

CASE = REPO / "evals" / "agent_cases" / "drift_status.yaml"


def _eval_agents(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arcpoint", "eval", "agents", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"},
    )


@pytest.mark.slow
def test_eval_agents_scores_a_case_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "agents"
    done = _eval_agents(str(CASE), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "drift_status" in done.stdout and "offline: 1/1 cases" in done.stdout
    report = json.loads((out / "agents.json").read_text())
    assert report["passed"] is True
    assert [(r["case"], r["model"], r["passed"]) for r in report["runs"]] == [
        ("drift_status", "offline", True)
    ]
    assert (out / "agents.md").is_file()


@pytest.mark.slow
def test_eval_agents_exits_1_when_a_case_fails(tmp_path: Path) -> None:
    case = yaml.safe_load(CASE.read_text())
    case["name"] = "claims_forbidden"
    case["state"]["scenario"] = str(CASE.parent / case["state"]["scenario"])
    case["must_not_claim"] = [{"pattern": "drift", "why": "a case the answer must fail"}]
    bad = tmp_path / "claims_forbidden.yaml"
    bad.write_text(yaml.safe_dump(case))
    done = _eval_agents(str(bad), "--out", str(tmp_path / "agents"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((tmp_path / "agents" / "agents.json").read_text())
    assert report["passed"] is False


def test_eval_agents_refuses_a_missing_case_file(tmp_path: Path) -> None:
    done = _eval_agents(str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "agents"))
    assert done.returncode == 2
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_a_lost_scenario_stays_visible_when_the_gate_passes() -> None:
    from evals.gate import lost_to_baselines
    from evals.results import EntryResult

    def entry(name: str, gain: float | None) -> EntryResult:
        metrics = {
            "sla_violation_pct": 38.5,
            "best_baseline_sla_violation_pct": 26.3,
            "sla_improvement_vs_best_baseline_pct": gain,
        }
        detail = {"best_baseline": "peak_ewma"}
        return EntryResult(name, "scenario", None, "", metrics, detail, [], 1.0)

    lines = lost_to_baselines([entry("cascading", -46.0), entry("spike", 24.0), entry("x", None)])
    assert lines == ["cascading: LOST to peak_ewma (38.5 vs 26.3 % SLA violations)"]


def test_the_thresholds_header_says_what_the_gate_gates() -> None:
    """Every scenario named in the file with a baseline comparison gated either requires no
    loss to the best baseline, or is one of the known losses the header names."""
    path = REPO / "evals" / "thresholds.yaml"
    header = "".join(line for line in path.read_text().splitlines(True) if line.startswith("#"))
    entries = yaml.safe_load(path.read_text())["entries"]
    assert "no worse than" not in header.split("What is gated")[0]
    for name, block in entries.items():
        if "*" in name or block.get("kind") not in (None, "scenario"):
            continue
        if name.startswith("ci_") or "min_sla_improvement_vs_best_baseline_pct" in block:
            continue
        if any(k.startswith("min_nab") or "false_alarms" in k for k in block):
            continue  # benchmarks, not routed scenarios
        if set(block) <= {"min_anomaly_recall"}:
            continue  # observe-only telemetry
        assert name in header, f"{name} is not gated against the baselines; say so in the header"
