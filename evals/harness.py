"""The eval harness: run a suite of entries, the same way every time, and score each.

A simulated scenario is replayed once per policy (`evals.scenario_runs`; the predictive router
as the full loop through the production `Router`, baselines bare) and scored against the chaos
it injected (`evals.scenario_scores`). A telemetry scenario is replayed observe-only through the
monitor and a drift detector and scored against its labelled windows. Runs are independent, so
they are spread over forked workers (`evals.workers`; trained forecasters, from
`evals.forecaster_training`, are inherited, never serialised). Benchmark entries run
`arcpoint nab` and `benchmarks/bench_drift.py` (`evals.benchmark_entries`). A failure is
recorded on its entry, never raised, so one broken run loses nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from context_api.runs import Terminated, mark_running_interrupted
from evals.benchmark_entries import run_drift_benchmark, run_nab_benchmark
from evals.forecaster_training import Progress, train_forecaster, warm_up
from evals.results import EntryResult, HarnessConfig, PolicyRun, SuiteResult
from evals.scenario_file import (
    DriftBenchmarkFile,
    EvalEntry,
    NabBenchmarkFile,
    ScenarioFile,
    ScenarioFileError,
    load_telemetry,
)
from evals.scenario_runs import run_policy_task, run_series_task, shared_with_workers
from evals.scenario_scores import score_scenario, score_telemetry
from evals.workers import run_tasks
from tools.sim.scenario import Built


def run_suite(
    entries: Sequence[EvalEntry],
    config: HarnessConfig,
    progress: Progress = lambda _m: None,
) -> SuiteResult:
    """Run every entry; per-entry failures are recorded on the entry, not raised."""
    t_start = time.perf_counter()
    config.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, EntryResult] = {}
    scenarios: dict[int, Built] = {}
    series: dict[int, list[Any]] = {}
    forecasters: dict[str, Any] = {}
    fc_info: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    tasks: list[tuple[str, int, Any]] = []

    def broken(e: EvalEntry, msg: str) -> EntryResult:
        kind = (
            e.kind
            if not isinstance(e, ScenarioFile)
            else ("telemetry" if e.observe_only else "scenario")
        )
        source = str(e.source) if e.source else None
        return EntryResult(e.name, kind, source, e.description, {}, {}, [], 0.0, error=msg)

    for i, e in enumerate(entries):
        if not isinstance(e, ScenarioFile):
            continue
        try:
            if e.observe_only:
                series[i] = load_telemetry(e)
            else:
                scenarios[i] = e.build()
        except (ScenarioFileError, ValueError) as err:
            results[i] = broken(e, str(err))
            progress(f"{e.name}: cannot run: {err}")
            continue
        if e.observe_only:
            tasks += [("series", i, k) for k in range(len(series[i]))]
            continue
        key = e.forecaster.model_dump_json()
        if key not in forecasters:
            forecasters[key], fc_info[key] = train_forecaster(e.forecaster, progress)
            if len(forecasters) == 1 and config.jobs > 1:
                warm_up(forecasters[key])
        # predictive first: it is the slowest run of a scenario
        tasks += [("policy", i, p) for p in sorted(e.policies, key=lambda p: p != "predictive")]

    runs: dict[int, dict[str, PolicyRun]] = {}
    parts: dict[int, list[dict[str, Any]]] = {}
    errors: dict[int, list[str]] = {}
    jobs = max(1, min(config.jobs, len(tasks), os.cpu_count() or 1))
    t0 = time.perf_counter()
    work = [
        (run_series_task, (i, what)) if kind == "series" else (run_policy_task, (i, what))
        for kind, i, what in tasks
    ]
    with shared_with_workers(
        entries=list(entries),
        scenarios=scenarios,
        series=series,
        forecasters=forecasters,
        config=config,
    ):
        try:
            for k, (n, (_, out, err)) in enumerate(run_tasks(_call, work, jobs), 1):
                kind, i, what = tasks[n]
                if out is None:
                    errors.setdefault(i, []).append(err or "failed")
                elif kind == "series":
                    parts.setdefault(i, []).append(out)
                else:
                    runs.setdefault(i, {})[what] = out
                done = _task_done(entries[i].name, kind, what, out, err, time.perf_counter() - t0)
                progress(f"[{k}/{len(tasks)}] {done}")
        except (KeyboardInterrupt, Terminated):
            # The workers are stopped; their stores still say `running`: say what happened.
            for db in sorted((config.out_dir / "work").glob("*.db")):
                mark_running_interrupted(db)
            raise

    for i, e in enumerate(entries):
        if i in results:
            continue
        if isinstance(e, ScenarioFile):
            if i in errors:
                results[i] = broken(e, "; ".join(errors[i]))
            elif e.observe_only:
                results[i] = score_telemetry(e, parts[i])
            else:
                ordered = {p: runs[i][p] for p in e.policies}
                seconds = sum(r.seconds for r in ordered.values())
                results[i] = score_scenario(e, scenarios[i].scenario, ordered, seconds)
        elif isinstance(e, NabBenchmarkFile):
            progress(f"{e.name}: running the NAB benchmark (arcpoint nab)")
            results[i] = run_nab_benchmark(e, config.out_dir)
        elif isinstance(e, DriftBenchmarkFile):
            progress(f"{e.name}: running the drift benchmark (benchmarks/bench_drift.py)")
            results[i] = run_drift_benchmark(e, config.out_dir)
    return SuiteResult(
        entries=[results[i] for i in range(len(entries))],
        config=config,
        seconds=time.perf_counter() - t_start,
        forecasters={v["version"]: v for v in fc_info.values()},
        notes=notes,
    )


def _task_done(name: str, kind: str, what: Any, out: Any, err: str | None, elapsed: float) -> str:
    """The progress line for a finished task: its figures, or why it failed."""
    if out is None:
        label = f"{name} series {what}" if kind == "series" else f"{name} x {what}"
        return f"{label}: FAILED {err}"
    if kind == "series":
        return (
            f"{name} {out['backend']}: {out['points']} points, "
            f"{len(out['anomalies'])} anomalies ({elapsed:.0f} s)"
        )
    return (
        f"{name} x {what}: {out.summary['sla_violation_pct']:.1f}% over SLO, "
        f"TTFT p95 {out.summary['p95_latency_ms'] or 0:.0f} ms ({elapsed:.0f} s)"
    )


def _call(work: tuple[Callable[[Any], Any], Any]) -> Any:
    fn, arg = work
    return fn(arg)
