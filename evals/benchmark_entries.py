"""Benchmark entries of an eval suite: `arcpoint nab` and `benchmarks/bench_drift.py` run as
subprocesses, their JSON read back into an `EntryResult` with the entry's expectations.

They run in the parent after the simulated scenarios, one at a time, so they never compete with
the suite's workers for the cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from evals.expectations import at_least, at_most
from evals.results import EntryResult
from evals.scenario_file import DriftBenchmarkFile, NabBenchmarkFile

REPO_ROOT = Path(__file__).resolve().parents[1]


def _subprocess(cmd: list[str], log_path: Path) -> int:
    """Run a benchmark, its stderr (progress) passed through, its stdout kept in a log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=None, cwd=REPO_ROOT, check=False)
    return proc.returncode


def nab_command_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("arcpoint.commands.nab") is not None


def run_nab_benchmark(entry: NabBenchmarkFile, out_dir: Path) -> EntryResult:
    t0 = time.perf_counter()
    base = out_dir / "benchmarks" / entry.name
    data, labels = entry.resolve(entry.data), entry.resolve(entry.labels)

    def failed(msg: str) -> EntryResult:
        return EntryResult(
            entry.name,
            "nab_benchmark",
            str(entry.source) if entry.source else None,
            entry.description,
            {},
            {},
            [],
            time.perf_counter() - t0,
            error=msg,
        )

    if not data.is_dir():
        return failed(f"NAB data folder not found: {data}")
    if not labels.is_file():
        return failed(f"NAB labels file not found: {labels}")
    if not nab_command_available():
        return failed("`arcpoint nab` is not available in this build")
    json_path = base / "nab.json"
    cmd = [
        sys.executable,
        "-m",
        "arcpoint",
        "nab",
        "--data",
        str(data),
        "--labels",
        str(labels),
        "--out",
        str(base / "results"),
        "--json",
        str(json_path),
    ]
    if entry.detector:
        cmd += ["--detector", entry.detector]
    code = _subprocess(cmd, base / "nab.log")
    if code != 0 or not json_path.exists():
        return failed(f"arcpoint nab exited with {code} (log: {base / 'nab.log'})")
    result = json.loads(json_path.read_text())

    def score(profile: str) -> float | None:
        v = result.get(profile)
        if isinstance(v, dict):
            v = v.get("score", v.get("normalised"))
        return float(v) if isinstance(v, int | float) else None

    metrics = {
        "nab_standard": score("standard"),
        "nab_reward_low_fp": score("reward_low_fp"),
        "nab_reward_low_fn": score("reward_low_fn"),
        "files": len(result.get("files") or []),
    }
    ex = entry.expect
    expectations = [
        at_least(f"min_{k}", metrics[f"nab_{k}"], lim)
        for k, lim in (
            ("standard", ex.min_standard),
            ("reward_low_fp", ex.min_reward_low_fp),
            ("reward_low_fn", ex.min_reward_low_fn),
        )
        if lim is not None
    ]
    return EntryResult(
        entry.name,
        "nab_benchmark",
        str(entry.source) if entry.source else None,
        entry.description,
        metrics,
        {"command": " ".join(cmd[1:]), "json": str(json_path)},
        expectations,
        time.perf_counter() - t0,
    )


def run_drift_benchmark(entry: DriftBenchmarkFile, out_dir: Path) -> EntryResult:
    t0 = time.perf_counter()
    base = out_dir / "benchmarks" / entry.name
    script = REPO_ROOT / "benchmarks" / "bench_drift.py"
    json_path = base / "drift.json"
    cmd = [sys.executable, str(script), "--json", str(json_path), "--seeds", str(entry.seeds)]
    code = _subprocess(cmd, base / "drift.log") if script.exists() else -1
    if code != 0 or not json_path.exists():
        return EntryResult(
            entry.name,
            "drift_benchmark",
            str(entry.source) if entry.source else None,
            entry.description,
            {},
            {},
            [],
            time.perf_counter() - t0,
            error=f"bench_drift.py exited with {code} (log: {base / 'drift.log'})",
        )
    fig = json.loads(json_path.read_text())
    overall = fig.get("drift_streams", {}).get("overall", {})
    ours = overall.get("arcpoint_ph_calibrated", {})
    verdict = fig.get("drift_verdict", {}).get("arcpoint_ph_calibrated", {})
    drifts = ours.get("drifts") or 0
    metrics = {
        "ph_speedup": fig.get("ph_speedup"),
        "stationary_false_alarms": fig.get("stationary_false_alarms"),
        "river_stationary_false_alarms": fig.get("river_stationary_false_alarms"),
        "detected_pct": 100.0 * ours.get("detected", 0) / drifts if drifts else None,
        "mean_delay_penalised": ours.get("mean_delay_penalised"),
        "stream_false_alarms": ours.get("false_alarms"),
        "delay_vs_river_best": verdict.get("delay_vs_river_best"),
        "false_alarms_vs_river_best": verdict.get("false_alarms_vs_river_best"),
    }
    ex = entry.expect
    expectations = []
    if ex.max_stationary_false_alarms is not None:
        expectations.append(
            at_most(
                "max_stationary_false_alarms",
                metrics["stationary_false_alarms"],
                ex.max_stationary_false_alarms,
            )
        )
    if ex.min_detected_pct is not None:
        expectations.append(
            at_least("min_detected_pct", metrics["detected_pct"], ex.min_detected_pct, "%")
        )
    if ex.max_false_alarms_vs_river_best is not None:
        expectations.append(
            at_most(
                "max_false_alarms_vs_river_best",
                metrics["false_alarms_vs_river_best"],
                ex.max_false_alarms_vs_river_best,
            )
        )
    if ex.max_delay_vs_river_best is not None:
        expectations.append(
            at_most(
                "max_delay_vs_river_best",
                metrics["delay_vs_river_best"],
                ex.max_delay_vs_river_best,
            )
        )
    return EntryResult(
        entry.name,
        "drift_benchmark",
        str(entry.source) if entry.source else None,
        entry.description,
        metrics,
        {
            "command": " ".join(["python", *cmd[1:]]),
            "json": str(json_path),
            "per_stream": fig.get("drift_streams", {}).get("per_stream"),
        },
        expectations,
        time.perf_counter() - t0,
    )
