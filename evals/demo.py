"""The main job: train the forecaster on simulated history, replay every chaos scenario through
the predictive router and each baseline, and gather one table.

Runs are independent, so they are spread over worker processes (`evals.workers`, forked: the
trained forest is inherited, never serialised; Ctrl-C stops them within seconds). Each worker
writes the predictive router's decisions and their outcomes to the SQLite store itself (WAL
lets the writers take turns), under the demo's run id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.escalation import Escalator
from agents.fleet_monitor import FleetMonitor
from agents.offline import OfflineModel
from context_api.alerting import AlertService
from context_api.runs import RunLog
from context_api.store import Store
from context_api.traces import TraceStore, TraceWriter
from evals.replay import POLICIES, RunResult, run_scenario
from evals.store_sink import StoreSink
from evals.workers import run_tasks
from tools.chaos import SCENARIOS
from tools.fleet import DEFAULT_FLEET
from tools.forecaster import Forecaster, TrainReport, train
from tools.simulator import simulate_history

DEMO_SCENARIOS = (
    "latency_spike",
    "backend_failure",
    "cascading_failure",
    "traffic_surge",
    "gradual_drift",
    "anomaly_burst",
)


@dataclass(frozen=True)
class DemoConfig:
    db: str = "arcpoint.db"
    history_hours: float = 12.0
    n_estimators: int = 100
    seed: int = 0
    scenarios: tuple[str, ...] = DEMO_SCENARIOS
    policies: tuple[str, ...] = POLICIES
    jobs: int = 2
    record_decisions: bool = True


@dataclass
class DemoResult:
    forecaster: Forecaster
    report: TrainReport
    runs: list[RunResult]
    run_id: str
    decisions_written: int
    outcomes_written: int
    seconds: dict[str, float]

    def table(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for r in self.runs:
            out.setdefault(r.scenario, {})[r.policy] = r.summary()
        return out

    def to_json(self) -> dict[str, Any]:
        rep = self.report
        return {
            "forecaster": {
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
            },
            "scenarios": self.table(),
            "monitor": {r.scenario: r.monitor for r in self.runs if r.monitor is not None},
            "escalation": {
                r.scenario: {"escalated_pct": round(r.escalated_pct, 3), **r.escalation}
                for r in self.runs
                if r.escalation is not None
            },
            "run_id": self.run_id,
            "decisions_written": self.decisions_written,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


# Set in the parent before forking; the workers read it.
_JOB: dict[str, Any] = {}


TIMELINE_START_TS = 1_700_000_000.0
"""The demo's scenarios run back to back from here, so the store holds one continuous timeline
(an operator's "last hour" is the last scenario)."""


def scenario_start_ts(scenarios: Sequence[str], name: str) -> float:
    ts = TIMELINE_START_TS
    for s in scenarios:
        if s == name:
            return ts
        ts += SCENARIOS[s].effective_duration_s
    raise ValueError(f"{name!r} is not among {list(scenarios)}")


def _run_one(task: tuple[str, str]) -> tuple[RunResult, int, int]:
    scenario, policy = task
    forecaster: Forecaster = _JOB["forecaster"]
    start_ts = scenario_start_ts(_JOB["scenarios"], scenario)
    sink = None
    store = None
    monitor = None
    escalator = None
    writer = None
    if _JOB["record"] and policy == "predictive":
        store = Store(_JOB["db"])
        sink = StoreSink(store, _JOB["run_id"], source=f"demo:{scenario}")
        sink.chaos(SCENARIOS[scenario], start_ts)
        names = (
            [b.name for b in SCENARIOS[scenario].backends()]
            if SCENARIOS[scenario].fleet
            else [b.name for b in DEFAULT_FLEET]
        )
        monitor = FleetMonitor(names, store, run_id=_JOB["run_id"])
        monitor.alerts = AlertService(store, clock=lambda: monitor.now)
        writer = TraceWriter(TraceStore(store))
        escalator = Escalator(OfflineModel(), traces=writer)
    try:
        result = run_scenario(
            SCENARIOS[scenario],
            policy,
            forecaster,
            seed=_JOB["seed"],
            sink=sink,
            id_prefix=f"{_JOB['run_id']}:{scenario}:",
            start_ts=start_ts,
            on_tick=sink.tick if sink else None,
            monitor=monitor,
            escalator=escalator,
        )
        if monitor is not None:
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
                        "end_ts": start_ts + ev.start_s + ev.duration_s,
                    }
                    for ev in SCENARIOS[scenario].chaos
                ],
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
    result.ticks = []  # per-tick series stay in the worker: the table needs only the summary
    return result, (sink.decisions if sink else 0), (sink.outcomes if sink else 0)


Progress = Callable[[str], None]


def run_demo(config: DemoConfig, progress: Progress = lambda _msg: None) -> DemoResult:
    unknown = [s for s in config.scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    bad = [p for p in config.policies if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown policies {bad}; known: {', '.join(POLICIES)}")
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    progress(f"simulating {config.history_hours:g} h of fleet history for training")
    history = simulate_history(config.history_hours * 3600.0, seed=config.seed + 1000)
    seconds["history"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress(f"training the forecaster ({config.n_estimators} trees) on {len(history):,} points")
    forecaster, report = train(history, n_estimators=config.n_estimators, seed=config.seed)
    seconds["train"] = time.perf_counter() - t0

    store = Store(config.db)
    try:
        if store.get_model_version(forecaster.version_id) is None:
            store.register_model_version(
                forecaster.version_id,
                "forecaster",
                trained_from_ts=forecaster.trained_from_ts,
                trained_to_ts=forecaster.trained_to_ts,
                metrics=report.model_dump(mode="json"),
                note="trained by arcpoint demo on simulated history",
            )
        store.activate_model_version(forecaster.version_id, reason="demo")
    finally:
        store.close()
    params = {
        "history_hours": config.history_hours,
        "n_estimators": config.n_estimators,
        "seed": config.seed,
        "scenarios": list(config.scenarios),
        "policies": list(config.policies),
        "forecaster": forecaster.version_id,
    }
    # A rerun replaces the previous demo's rows (one simulated timeline per file, so answers
    # never count two runs); Ctrl-C or SIGTERM leave this run marked interrupted.
    with RunLog(config.db, "demo", params, replace_previous=True) as run:
        for old in run.replaced:
            progress(f"replaced the previous demo run {old.run_id} ({old.status})")
        tasks = [(s, p) for s in config.scenarios for p in config.policies]
        _JOB.update(
            forecaster=forecaster,
            db=config.db,
            run_id=run.run_id,
            seed=config.seed,
            record=config.record_decisions,
            scenarios=config.scenarios,
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
                f"[{i}/{len(tasks)}] {result.scenario} x {result.policy}: "
                f"{result.sla_violation_pct:.1f}% over SLA ({elapsed:.0f} s)"
            )
        seconds["replay"] = time.perf_counter() - t0
        order = {(s, p): i for i, (s, p) in enumerate(tasks)}
        results.sort(key=lambda r: order[(r.scenario, r.policy)])
        demo = DemoResult(forecaster, report, results, run.run_id, decisions, outcomes, seconds)
        run.summary = demo.to_json()
    return demo


def format_monitor(demo: DemoResult) -> str:
    """What the fleet monitor raised during each predictive run, against the chaos injected."""
    lines = []
    for r in demo.runs:
        m = r.monitor
        if m is None:
            continue
        chaos = m["chaos"]
        start = min((c["start_ts"] for c in chaos), default=None)
        where = ", ".join(f"{c['kind']} on {c['backend'] or 'fleet'}" for c in chaos) or "none"
        anomalies = m["anomalies"]
        if anomalies and start is not None:
            in_window = [
                a
                for a in anomalies
                if any(c["start_ts"] <= a["ts"] <= c["end_ts"] + 60 for c in chaos)
            ]
            first = min((a["ts"] for a in in_window), default=None)
            lag = f"first {first - start:+.0f} s from chaos start" if first else "none in window"
            found = (
                f"{len(anomalies)} anomalies ({len(in_window)} during chaos, {lag}; "
                f"backends {', '.join(sorted({a['backend'] for a in anomalies}))})"
            )
        else:
            found = f"{len(anomalies)} anomalies"
        lines.append(
            f"  {r.scenario:<18} chaos: {where:<32} {found}; "
            f"alerts {m['alerts_sent']} sent, {m['alerts_suppressed']} suppressed"
        )
    return "\n".join(lines)


def format_escalation(demo: DemoResult) -> str:
    """Escalations per scenario and how the escalated requests fared against the fallback."""
    lines = []
    for r in demo.runs:
        e = r.escalation
        if e is None:
            continue
        used, pick = e.get("violation_prob_used"), e.get("violation_prob_policy_pick")
        outcome = (
            f"P(miss SLA) {100 * used:.1f}% as routed vs {100 * pick:.1f}% for the policy's pick"
            if used is not None and pick is not None
            else "not scored"
        )
        lines.append(
            f"  {r.scenario:<18} escalated {r.escalated_pct:5.2f}% of requests "
            f"(ambiguous {r.ambiguous_pct:5.2f}%), {e['agent_runs']} agent runs, "
            f"{e['changed_backend']} moved, {e['fallback_total']} fallbacks; {outcome}"
        )
    return "\n".join(lines)


def format_table(demo: DemoResult, policies: Sequence[str]) -> str:
    """Scenario x policy, one block per scenario, the best SLA figure marked."""
    header = f"{'scenario':<18} {'policy':<17} {'SLA viol %':>10} {'p95 ms':>9} "
    header += f"{'mean cost':>10} {'reroutes':>9} {'ambig %':>8}"
    lines = [header, "-" * len(header)]
    for scenario, by_policy in demo.table().items():
        best = min(v["sla_violation_pct"] for v in by_policy.values())
        for j, p in enumerate(policies):
            v = by_policy.get(p)
            if v is None:
                continue
            mark = "*" if v["sla_violation_pct"] == best else " "
            lines.append(
                f"{scenario if j == 0 else '':<18} {p:<17} {v['sla_violation_pct']:>9.2f}{mark}"
                f" {v['p95_latency_ms']:>9.0f} {v['mean_cost'] * 1000:>9.3f}m"
                f" {v['reroutes']:>9} {v['ambiguous_pct']:>8.2f}"
            )
        lines.append("")
    return "\n".join(lines)
