"""The main job: train the forecaster on simulated fleet history, replay every scenario through
the predictive router and every baseline over several seeds, and gather one table.

Each (scenario, policy, seed) run is independent, so runs are spread over worker processes
(`evals.workers`, forked: the trained forest and the traces read by the parent are inherited,
never serialised; Ctrl-C stops them within seconds). Policies raced on one seed see the same
build of the scenario (common random numbers). The predictive router runs with the fleet
monitor (primed with the last hour of the training history, as a monitor that has been watching
the fleet would be) and the router agent's escalation (offline reasoner); its first seed of each
scenario writes its decisions, outcomes, telemetry, chaos events, anomalies, alerts and
escalation traces to the SQLite store, on one continuous timeline (scenario after scenario).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.escalation import Escalator
from agents.fleet_monitor import FleetMonitor
from agents.offline import OfflineModel
from context_api.alerting import AlertService
from context_api.model_store import artifact_dir_for, register_forecaster
from context_api.runs import RunLog
from context_api.store import Store
from context_api.traces import TraceStore, TraceWriter
from evals.replay import POLICIES, RUN_KEYS, RunResult, run_policy
from evals.store_sink import StoreSink
from evals.workers import run_tasks
from evals.workload_files import trace_for
from tools.forecaster import Forecaster, TrainReport, train
from tools.sim.history import simulate_history
from tools.sim.metrics import mean_interval, paired_difference
from tools.sim.run import SimConfig
from tools.sim.scenario import SCENARIOS, build
from tools.sim.spec import DEFAULT_FLEET
from tools.telemetry import TelemetryPoint

DEMO_SCENARIOS: tuple[str, ...] = tuple(SCENARIOS)
TIMELINE_START_TS = 1_700_000_000.0
"""The demo's scenarios run back to back from here (after the training history), so the store
holds one continuous timeline: an operator's "last hour" is the last scenarios."""
MONITOR_PRIME_TICKS = 360


@dataclass(frozen=True)
class DemoConfig:
    db: str = "arcpoint.db"
    history_hours: float = 6.0
    n_estimators: int = 100
    seed: int = 0
    seeds: int = 3
    scenarios: tuple[str, ...] = DEMO_SCENARIOS
    policies: tuple[str, ...] = POLICIES
    jobs: int = 2
    record_decisions: bool = True
    escalation_mode: str = "advisory"
    """advisory: the router agent's choice is recorded and scored, the policy's pick routes;
    override: the agent's accepted choice routes (how the README's override figure is measured)."""


@dataclass
class DemoResult:
    forecaster: Forecaster
    report: TrainReport
    runs: list[RunResult]
    run_id: str
    decisions_written: int
    outcomes_written: int
    seconds: dict[str, float]
    seeds: dict[str, list[int]] = field(default_factory=dict)
    escalation_mode: str = "advisory"

    def by_cell(self) -> dict[str, dict[str, list[RunResult]]]:
        """scenario -> policy -> its runs, in seed order."""
        out: dict[str, dict[str, list[RunResult]]] = {}
        for r in self.runs:
            out.setdefault(r.scenario, {}).setdefault(r.policy, []).append(r)
        for by_policy in out.values():
            for runs in by_policy.values():
                runs.sort(key=lambda r: r.seed)
        return out

    def table(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each figure's mean over seeds, and the seeds (`--json`'s `scenarios`)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for scenario, by_policy in self.by_cell().items():
            for policy, runs in by_policy.items():
                cell: dict[str, Any] = {}
                for k in RUN_KEYS:
                    iv = mean_interval(r.metrics.get(k) for r in runs)
                    cell[k] = None if iv is None else float(f"{iv.mean:.6g}")
                cell["seeds"] = [r.seed for r in runs]
                out.setdefault(scenario, {})[policy] = cell
        return out

    def intervals(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each figure's mean and 95% interval over seeds."""

        def one(runs: list[RunResult], k: str) -> dict[str, Any] | None:
            iv = mean_interval(r.metrics.get(k) for r in runs)
            return iv.to_json() if iv is not None else None

        return {
            s: {p: {k: one(runs, k) for k in RUN_KEYS} for p, runs in by_policy.items()}
            for s, by_policy in self.by_cell().items()
        }

    def versus_best(self) -> dict[str, dict[str, Any]]:
        """Per scenario: the predictive router's SLO violations minus the best baseline's (the
        baseline with the lowest mean), paired by seed, with its 95% interval."""
        out = {}
        for scenario, by_policy in self.by_cell().items():
            pred = by_policy.get("predictive")
            base = {p: r for p, r in by_policy.items() if p != "predictive"}
            if not pred or not base:
                continue

            def mean(runs: list[RunResult]) -> float:
                return sum(r.sla_violation_pct for r in runs) / len(runs)

            best = min(base, key=lambda p: mean(base[p]))
            seeds = {r.seed for r in pred} & {r.seed for r in base[best]}
            a = [r.sla_violation_pct for r in pred if r.seed in seeds]
            b = [r.sla_violation_pct for r in base[best] if r.seed in seeds]
            diff = paired_difference(a, b)
            ratio = (mean(pred) - mean(base[best])) / mean(base[best]) if mean(base[best]) else None
            out[scenario] = {
                "best_baseline": best,
                "predictive_pct": round(mean(pred), 3),
                "best_baseline_pct": round(mean(base[best]), 3),
                "relative": None if ratio is None else round(ratio, 4),
                "difference": diff.to_json() if diff else None,
                "verdict": _verdict(diff),
            }
        return out

    def forecaster_json(self) -> dict[str, Any]:
        rep = self.report
        return {
            "version": self.forecaster.version_id,
            "mae_ms": round(rep.forest.mae_ms, 2),
            "rmse_ms": round(rep.forest.rmse_ms, 2),
            "r2": round(rep.forest.r2, 4),
            "mape_pct": round(rep.forest.mape_pct, 2),
            "persistence_mae_ms": round(rep.persistence.mae_ms, 2),
            "moving_average_mae_ms": round(rep.moving_average.mae_ms, 2),
            "mae_improvement_vs_persistence": round(rep.mae_improvement_vs_persistence, 4),
            "interval_coverage": round(rep.interval.holdout_coverage, 4),
            "interval_nominal": rep.interval.nominal_coverage,
            "holdout_rows": rep.n_holdout,
        }

    def to_json(self) -> dict[str, Any]:
        """What `arcpoint demo --json` writes (the issue's format: nothing else)."""
        return {"forecaster": self.forecaster_json(), "scenarios": self.table()}

    def summary(self) -> dict[str, Any]:
        """The run's record in the store: the JSON plus intervals, comparisons and bookkeeping."""
        return {
            **self.to_json(),
            "intervals": self.intervals(),
            "versus_best_baseline": self.versus_best(),
            "monitor": {r.scenario: r.monitor for r in self.runs if r.monitor is not None},
            "escalation_mode": self.escalation_mode,
            "escalation": {
                f"{r.scenario}:{r.seed}": {
                    "escalated_pct": r.metrics["escalated_pct"],
                    **r.escalation,
                }
                for r in self.runs
                if r.escalation is not None
            },
            "run_id": self.run_id,
            "decisions_written": self.decisions_written,
            "outcomes_written": self.outcomes_written,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def _verdict(diff: Any) -> str:
    if diff is None or diff.low is None:
        return "one seed: no interval"
    if diff.high < 0:
        return "predictive better"
    if diff.low > 0:
        return "predictive worse"
    return "no significant difference"


# Set in the parent before forking; the workers read it.
_JOB: dict[str, Any] = {}


def scenario_start_ts(scenarios: Sequence[str], name: str) -> float:
    ts = TIMELINE_START_TS
    for s in scenarios:
        if s == name:
            return ts
        ts += SCENARIOS[s].duration_s
    raise ValueError(f"{name!r} is not among {list(scenarios)}")


def replicate_seed(scenario: str, base_seed: int, k: int) -> int:
    """The k-th seed of a scenario: its own seed, shifted by 1000 per demo `--seed`."""
    return SCENARIOS[scenario].seed + 1000 * base_seed + k


def prime(monitor: FleetMonitor, history: Sequence[TelemetryPoint]) -> None:
    """Feed the detectors the end of the training history (no alerts, nothing stored)."""
    for p in history[-MONITOR_PRIME_TICKS * len(monitor.detectors) :]:
        det = monitor.detectors.get(p.backend)
        if det is not None:
            det.update(math.log(max(p.p95_ms, 1e-3)))


def _run_one(task: tuple[str, str, int]) -> tuple[RunResult, int, int]:
    scenario_name, policy, k = task
    scenario = SCENARIOS[scenario_name]
    seed = replicate_seed(scenario_name, _JOB["seed"], k)
    trace = _JOB["traces"].get(scenario.trace_source) if scenario.trace_source else None
    built = build(scenario, seed, trace)
    start_ts = scenario_start_ts(_JOB["scenarios"], scenario_name)
    names = [s.name for s in built.fleet]
    store = sink = monitor = escalator = writer = None
    record = _JOB["record"] and policy == "predictive" and k == 0
    if policy == "predictive":
        if record:
            store = Store(_JOB["db"])
            sink = StoreSink(store, _JOB["run_id"], source=f"demo:{scenario_name}")
            sink.chaos(scenario, start_ts)
            monitor = FleetMonitor(names, store, run_id=_JOB["run_id"])
            monitor.alerts = AlertService(store, clock=lambda: monitor.now)
            writer = TraceWriter(TraceStore(store))
        else:
            monitor = FleetMonitor(names)
        prime(monitor, _JOB["history"])
        escalator = Escalator(
            OfflineModel(), traces=writer, keep_records=record, mode=_JOB["escalation_mode"]
        )
    try:
        result = run_policy(
            built,
            policy,
            forecaster=_JOB["forecaster"],
            sim_config=SimConfig(start_ts=start_ts),
            sink=sink,
            on_tick=sink.tick if sink is not None else None,
            monitor=monitor,
            escalator=escalator,
            id_prefix=f"{_JOB['run_id']}:{scenario_name}:{seed}:",
        )
        if record and monitor is not None:
            result.monitor = {
                "anomalies": [
                    {"ts": ts, "backend": b, "severity": round(sev, 4)}
                    for ts, b, sev in monitor.stats.anomalies
                ],
                "alerts_sent": monitor.stats.alerts_sent,
                "alerts_suppressed": monitor.stats.alerts_suppressed,
                "chaos": [
                    {
                        "kind": ev.kind,
                        "backend": ev.backend,
                        "start_ts": start_ts + ev.start_s,
                        "end_ts": start_ts + ev.end_s,
                    }
                    for ev in scenario.chaos
                ],
                "cascaded": result.cascaded,
            }
        if sink is not None:
            sink.flush()
    finally:
        if escalator is not None:
            escalator.close()
        if writer is not None:
            writer.close()
        if store is not None:
            store.close()
    result.ticks = []  # per-tick series stay in the worker: the table needs only the figures
    return result, (sink.decisions if sink else 0), (sink.outcomes if sink else 0)


Progress = Callable[[str], None]


def run_demo(config: DemoConfig, progress: Progress = lambda _msg: None) -> DemoResult:
    unknown = [s for s in config.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    bad = [p for p in config.policies if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown policies {bad}; known: {', '.join(POLICIES)}")
    if config.seeds < 1:
        raise ValueError("seeds must be at least 1")
    seconds: dict[str, float] = {}
    # Traces are read before forking, so every worker shares them.
    traces = {
        s.trace_source: trace_for(s.trace_source)
        for s in (SCENARIOS[n] for n in config.scenarios)
        if s.trace_source
    }

    t0 = time.perf_counter()
    hours = config.history_hours
    progress(f"simulating {hours:g} h of fleet history (request by request) for training")
    history = simulate_history(
        hours * 3600.0, seed=config.seed + 1000, start_ts=TIMELINE_START_TS - hours * 3600.0
    )
    seconds["history"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress(f"training the forecaster ({config.n_estimators} trees) on {len(history):,} points")
    forecaster, report = train(
        history, n_estimators=config.n_estimators, seed=config.seed, n_jobs=config.jobs
    )
    seconds["train"] = time.perf_counter() - t0

    # One clock: the model is trained on the simulated history that ends where the timeline
    # starts, registered and activated then, and saved beside the database (arrays + JSON) so
    # the monitors can judge challengers against it and `arcpoint models` can roll back to it.
    store = Store(config.db)
    try:
        register_forecaster(
            store,
            forecaster,
            artifact_dir=artifact_dir_for(config.db),
            at=TIMELINE_START_TS,
            note="trained by arcpoint demo on simulated history",
        )
        store.activate_model_version(forecaster.version_id, reason="demo", at=TIMELINE_START_TS)
    finally:
        store.close()
    params = {
        "history_hours": config.history_hours,
        "n_estimators": config.n_estimators,
        "seed": config.seed,
        "seeds": config.seeds,
        "scenarios": list(config.scenarios),
        "policies": list(config.policies),
        "forecaster": forecaster.version_id,
        # The engines, so a what-if (`ContextAPI.what_if`) simulates this very fleet.
        "fleet_specs": [spec.model_dump(mode="json") for spec in DEFAULT_FLEET],
    }
    # A rerun replaces the previous demo's rows (one simulated timeline per file, so answers
    # never count two runs); Ctrl-C or SIGTERM leave this run marked interrupted.
    with RunLog(config.db, "demo", params, replace_previous=True) as run:
        for old in run.replaced:
            progress(f"replaced the previous demo run {old.run_id} ({old.status})")
        # Slow runs first (the predictive router's and the probing ones), so the pool ends even.
        slow = {"predictive": 0, "prequal": 1, "llmd": 2, "c3": 3}
        tasks = sorted(
            (
                (s, p, k)
                for s in config.scenarios
                for p in config.policies
                for k in range(config.seeds)
            ),
            key=lambda t: (slow.get(t[1], 9), t[2]),
        )
        _JOB.update(
            forecaster=forecaster,
            history=history,
            traces=traces,
            db=config.db,
            run_id=run.run_id,
            seed=config.seed,
            record=config.record_decisions,
            scenarios=config.scenarios,
            escalation_mode=config.escalation_mode,
        )
        t0 = time.perf_counter()
        results: list[RunResult] = []
        decisions = outcomes = 0
        jobs = max(1, min(config.jobs, len(tasks), os.cpu_count() or 1))
        for i, (_, (result, d, o)) in enumerate(run_tasks(_run_one, tasks, jobs), 1):
            results.append(result)
            decisions += d
            outcomes += o
            elapsed = time.perf_counter() - t0
            progress(
                f"[{i}/{len(tasks)}] {result.scenario} x {result.policy} (seed {result.seed}): "
                f"{result.sla_violation_pct:.1f}% over SLO ({elapsed:.0f} s)"
            )
        seconds["replay"] = time.perf_counter() - t0
        order = {(s, p): i for i, (s, p) in enumerate(
            (s, p) for s in config.scenarios for p in config.policies
        )}  # fmt: skip
        results.sort(key=lambda r: (order[(r.scenario, r.policy)], r.seed))
        demo = DemoResult(forecaster, report, results, run.run_id, decisions, outcomes, seconds)
        demo.escalation_mode = config.escalation_mode
        run.summary = demo.summary()
    return demo
