"""The eval harness: replay each entry end to end, the same way every time, and score it.

A simulated scenario is replayed once per policy through `evals.replay.run_policy` (the
request-level simulation, `tools.sim`; the predictive router through the production `Router`,
request by request). The predictive run is the full loop: the fleet monitor
(streaming Isolation Forest per backend, alerts through the AlertService into a store), the
router's escalation when the replay supports it (`agents.escalation.Escalator` with the chosen
model), drift detection over the forecaster's errors, and everything written to a SQLite store
in the out dir (`work/<name>.db`, readable by `arcpoint ask --db`). Baselines run bare. Runs are
independent, so they are spread over forked workers (trained forecasters are inherited, never
serialised). Scores and their definitions: `evals.scoring`.

A telemetry scenario is replayed observe-only through the monitor and a drift detector and scored
against its labelled windows. Benchmark entries run `arcpoint nab` and
`benchmarks/bench_drift.py` as subprocesses and read their JSON.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.monitors.routing_drift import SIGNAL_TEXT, RoutingDriftConfig
from agents.monitors.routing_drift import replay as replay_routing_drift
from context_api.runs import Terminated, mark_running_interrupted
from evals.scenario_file import (
    BASELINE_NAMES,
    DriftBenchmarkFile,
    EvalEntry,
    NabBenchmarkFile,
    ScenarioFile,
    ScenarioFileError,
    load_telemetry,
)
from evals.scoring import (
    GRACE_S,
    count_flaps,
    label_windows,
    leave_delay_s,
    merge_windows,
    page_hinkley_alarms,
    percent_better,
    score_detections,
    score_drift,
    traffic_shares,
)
from evals.workers import run_tasks
from tools.sim.scenario import Built, Scenario
from tools.telemetry import TICK_SECONDS

log = logging.getLogger(__name__)

START_TS = 1_700_000_000.0
"""Every simulated scenario starts here, so runs of one scenario line up tick for tick."""

LLM = Literal["offline", "claude", "none"]
Progress = Callable[[str], None]
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class HarnessConfig:
    out_dir: Path
    llm: LLM = "offline"
    """The router agent's model for escalations; `none` runs the deterministic policy alone."""
    jobs: int = 2
    record: bool = True
    """Write the predictive run (telemetry, decisions, outcomes, anomalies, alerts) to a store."""
    claude_model_id: str | None = None
    """The Claude model for `llm="claude"` (default: the client's default)."""


@dataclass(frozen=True)
class PropertyResult:
    """One expected property (or threshold): passed, failed, or None when it cannot apply."""

    name: str
    passed: bool | None
    detail: str
    value: float | None = None
    limit: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "value": _round(self.value),
            "limit": self.limit,
        }


@dataclass
class PolicyRun:
    """One scenario under one policy, reduced to what scoring and plotting need (picklable)."""

    policy: str
    summary: dict[str, float | int]
    requests: int
    ts: np.ndarray
    counts: dict[str, np.ndarray]
    p95_ms: dict[str, np.ndarray]
    error_rate: dict[str, np.ndarray]
    forecast_ms: dict[str, np.ndarray]
    violations: np.ndarray
    tick_requests: np.ndarray
    seconds: float
    chaos: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    """Per backend, per tick: the chaos kinds the simulator applied (the ground truth)."""
    residuals: list[dict[str, tuple[int, float, float]]] = field(default_factory=list)
    """Per tick: the routing model's residuals per backend (`agents.router.tick_residuals`)."""
    anomalies: list[tuple[float, str, float]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    """Outcomes of ambiguous (escalated) and routine decisions."""
    escalation: dict[str, Any] | None = None
    loop: dict[str, Any] | None = None
    db: str | None = None


@dataclass
class EntryResult:
    """What one entry produced: flat metrics (what thresholds gate), details, properties."""

    name: str
    kind: str
    source: str | None
    description: str
    metrics: dict[str, float | int | None]
    detail: dict[str, Any]
    expectations: list[PropertyResult]
    seconds: float
    runs: dict[str, PolicyRun] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)
    """Series for the detection-timeline plot: windows, anomalies, drift alarms, alerts."""
    error: str | None = None
    thresholds: list[PropertyResult] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The gate's verdict: the entry ran and broke no threshold."""
        return self.error is None and all(p.passed is not False for p in self.thresholds)

    @property
    def expectations_passed(self) -> int:
        return sum(p.passed is True for p in self.expectations)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "description": self.description,
            "passed": self.passed,
            "expectations_passed": f"{self.expectations_passed}/{len(self.expectations)}",
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "expectations": [p.to_json() for p in self.expectations],
            "thresholds": [p.to_json() for p in self.thresholds],
            "detail": self.detail,
            "plots": self.plots,
        }


@dataclass
class SuiteResult:
    entries: list[EntryResult]
    config: HarnessConfig
    seconds: float
    forecasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)


def _round(v: Any) -> Any:
    """Six significant digits: enough for a cost per request in dollars, no float noise."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return float(f"{v:.6g}")
    return v


# --- forecasters ---------------------------------------------------------------------------


def train_forecaster(spec: Any, progress: Progress) -> tuple[Any, dict[str, Any]]:
    """Train the forecaster a scenario asks for, on simulated history (as `arcpoint demo`)."""
    from tools.forecaster import train
    from tools.sim.history import simulate_history

    t0 = time.perf_counter()
    progress(
        f"training a forecaster: {spec.n_estimators} trees on {spec.history_hours:g} h of "
        "simulated history"
    )
    history = simulate_history(
        spec.history_hours * 3600.0,
        seed=spec.history_seed,
        start_ts=START_TS - spec.history_hours * 3600.0 - 600.0,
    )
    forecaster, report = train(
        history,
        n_estimators=spec.n_estimators,
        max_depth=spec.max_depth,
        seed=spec.seed,
        n_jobs=min(2, os.cpu_count() or 1),
    )
    info = {
        "version": forecaster.version_id,
        "spec": spec.model_dump(),
        "mae_ms": round(report.forest.mae_ms, 2),
        "persistence_mae_ms": round(report.persistence.mae_ms, 2),
        "interval_coverage": round(report.interval.holdout_coverage, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return forecaster, info


def warm_up(forecaster: Any) -> None:
    """Replay two simulated minutes in this process, so compiled code (the numba feature loop,
    compiled on first use) is inherited by the forked workers instead of compiled in each."""
    from evals.replay import run_policy
    from tools.sim.scenario import build

    warm = build(Scenario(name="warm-up", duration_s=120.0))
    run_policy(warm, "predictive", forecaster=forecaster)


# --- one policy run (in a worker) -------------------------------------------------------------

_JOB: dict[str, Any] = {}
"""Set in the parent before forking: entries, built scenarios, forecasters, config."""


def _fresh_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(path) + suffix)
        if p.exists():
            p.unlink()


def _make_model(llm: str, claude_model_id: str | None = None) -> Any:
    if llm == "claude":
        from agents.llm.claude import ClaudeConfig, ClaudeModel

        return ClaudeModel(ClaudeConfig(model_id=claude_model_id) if claude_model_id else None)
    from agents.offline import OfflineModel

    return OfflineModel()


class _DecisionTap:
    """Sees each tick's decisions with their outcomes and counts SLA violations by kind:
    routine, ambiguous, escalated (sent to the router agent: its answer or the fallback), and
    decided by the agent; then passes them on to the store sink (if any)."""

    KINDS = ("routine", "ambiguous", "escalated", "agent_decided")

    def __init__(self, forward: Callable[..., None] | None) -> None:
        self.forward = forward
        self.n = dict.fromkeys(self.KINDS, 0)
        self.bad = dict.fromkeys(self.KINDS, 0)

    def __call__(
        self, decisions: list[Any], latency_ms: np.ndarray, ok: np.ndarray, violated: np.ndarray
    ) -> None:
        n, bad = self.n, self.bad
        for d, viol in zip(decisions, violated.tolist(), strict=True):
            kinds = ["ambiguous"] if d.ambiguous else ["routine"]
            if d.policy == "router_agent":
                kinds += ["escalated", "agent_decided"]
            elif ";agent_fallback=" in d.reason:
                kinds.append("escalated")
            for k in kinds:
                n[k] += 1
                bad[k] += viol
        if self.forward is not None:
            self.forward(decisions, latency_ms, ok, violated)

    def summary(self) -> dict[str, Any]:
        return {
            k: {
                "requests": self.n[k],
                "violations": self.bad[k],
                "violation_pct": round(100.0 * self.bad[k] / self.n[k], 3) if self.n[k] else None,
            }
            for k in self.KINDS
        }


def _run_policy(task: tuple[int, str]) -> tuple[int, PolicyRun | None, str | None]:
    i, policy = task
    try:
        return i, _run_policy_inner(i, policy), None
    except Exception as err:  # one broken run must not lose the others: report it
        log.exception("run %s x %s failed", _JOB["entries"][i].name, policy)
        return i, None, f"{policy}: {type(err).__name__}: {err}"


def _run_policy_inner(i: int, policy: str) -> PolicyRun:
    from agents.fleet_monitor import FleetMonitor
    from context_api.alerting import AlertService
    from context_api.store import Store
    from evals.replay import run_policy
    from evals.store_sink import StoreSink
    from tools.sim.run import SimConfig

    entry: ScenarioFile = _JOB["entries"][i]
    built: Built = _JOB["scenarios"][i]
    scenario = built.scenario
    forecaster = _JOB["forecasters"][entry.forecaster.model_dump_json()]
    config: HarnessConfig = _JOB["config"]
    names = [b.name for b in built.fleet]
    full = policy == "predictive"

    store = sink = monitor = escalator = writer = None
    db_path: Path | None = None
    tap = _DecisionTap(None)
    use_loop = full and entry.loop is not None
    loop_info: dict[str, Any] | None = None
    if full:
        if config.record or use_loop:  # the loop keeps its state in a store
            db_path = config.out_dir / "work" / f"{entry.name}.db"
            db_path.parent.mkdir(parents=True, exist_ok=True)
            _fresh_db(db_path)
            store = Store(db_path)
            if not use_loop:  # the loop registers and activates its own champion
                store.register_model_version(
                    forecaster.version_id,
                    "forecaster",
                    created_at=START_TS - 600.0,
                    trained_from_ts=forecaster.trained_from_ts,
                    trained_to_ts=forecaster.trained_to_ts,
                    note=f"trained by arcpoint eval for {entry.name}",
                )
                store.activate_model_version(
                    forecaster.version_id, reason="eval", at=START_TS - 600.0
                )
            run = store.start_run("eval", params={"scenario": entry.name}, started_at=START_TS)
            sink = StoreSink(store, run.run_id, source=f"eval:{entry.name}")
            sink.chaos(scenario, START_TS)
            # The loop stores its own (sampled) decisions, outcomes and telemetry.
            tap = _DecisionTap(None if use_loop else sink)
            monitor = FleetMonitor(names, store, run_id=run.run_id)
            monitor.alerts = AlertService(store, clock=lambda: monitor.now, restore=False)
        else:
            monitor = FleetMonitor(names)
        if config.llm != "none":
            from agents.escalation import Escalator

            if store is not None:
                from context_api.traces import TraceStore, TraceWriter

                writer = TraceWriter(TraceStore(store))
            escalator = Escalator(_make_model(config.llm, config.claude_model_id), traces=writer)

    def on_tick(tick: Any) -> None:
        if sink is not None and not use_loop:
            sink.tick(tick)

    t0 = time.perf_counter()
    try:
        if use_loop:
            from evals.loop_replay import loop_summary, run_with_loop

            assert store is not None and entry.loop is not None
            res, loop = run_with_loop(
                built,
                forecaster,
                store,
                start_ts=START_TS,
                loop_config=entry.loop.config,
                run_id=run.run_id,
                alerts=AlertService(store, clock=lambda: monitor.now, restore=False),
                artifact_dir=config.out_dir / "work" / f"{entry.name}.models",
                sink=tap,
                monitor=monitor,
                escalator=escalator,
            )
            loop_info = loop_summary(loop, START_TS)
        else:
            res = run_policy(
                built,
                policy,
                forecaster=forecaster,
                sim_config=SimConfig(start_ts=START_TS),
                sink=tap if full else None,
                on_tick=on_tick,
                monitor=monitor,
                escalator=escalator,
                id_prefix=f"{entry.name}:{policy}:",
            )
        if sink is not None:
            sink.flush()
        alerts = []
        if store is not None:
            alerts = [
                {
                    "ts": a.created_at,
                    "kind": a.kind,
                    "subject": a.subject,
                    "severity": a.severity,
                    "suppressed": a.suppressed,
                }
                for a in store.list_alerts(include_suppressed=True, limit=None)
            ]
            store.finish_run(run.run_id, summary=res.summary())
    finally:
        if escalator is not None:
            escalator.close()
        if writer is not None:
            writer.close()
        if store is not None:
            store.close()
    seconds = time.perf_counter() - t0

    ticks = res.ticks
    ts = np.array([t.ts for t in ticks])

    def series(attr: str) -> dict[str, np.ndarray]:
        return {
            n: np.array([getattr(t, attr).get(n, math.nan) for t in ticks], dtype=float)
            for n in names
        }

    escalation = None
    if escalator is not None:
        escalation = escalator.stats.summary()
        escalation["escalated_pct"] = res.metrics.get("escalated_pct", 0.0)
    return PolicyRun(
        policy=policy,
        summary=res.summary(),
        requests=res.requests,
        ts=ts,
        counts=series("counts"),
        p95_ms=series("p95_ms"),
        error_rate=series("error_rate"),
        forecast_ms=series("forecast_ms"),
        violations=np.array([t.violations for t in ticks], dtype=float),
        tick_requests=np.array([t.requests for t in ticks], dtype=float),
        seconds=seconds,
        chaos={n: [tuple(t.chaos.get(n, ())) for t in ticks] for n in names},
        residuals=[t.residuals for t in ticks] if full else [],
        anomalies=list(monitor.stats.anomalies) if monitor is not None else [],
        alerts=alerts,
        decisions=tap.summary() if full else {},
        escalation=escalation,
        loop=loop_info,
        db=str(db_path) if db_path else None,
    )


def _run_series(task: tuple[int, int]) -> tuple[int, dict[str, Any] | None, str | None]:
    i, k = task
    try:
        return i, _run_series_inner(i, k), None
    except Exception as err:
        log.exception("telemetry replay %s[%d] failed", _JOB["entries"][i].name, k)
        return i, None, f"series {k}: {type(err).__name__}: {err}"


def _run_series_inner(i: int, k: int) -> dict[str, Any]:
    """One recorded series through the fleet monitor and a change detector, point by point."""
    from agents.fleet_monitor import FleetMonitor

    entry: ScenarioFile = _JOB["entries"][i]
    s = _JOB["series"][i][k]
    t0 = time.perf_counter()
    monitor = FleetMonitor([s.backend])
    for p in s.points:
        monitor.observe([p])
    ts = np.array([p.ts for p in s.points])
    values = np.log(np.maximum(np.array([p.p95_ms for p in s.points]), 1e-3))
    alarms = page_hinkley_alarms(
        values,
        ts,
        warmup=entry.drift.warmup_ticks,
        threshold_sigmas=entry.drift.threshold_sigmas,
        delta_sigmas=entry.drift.delta_sigmas,
        mode="both",
    )
    return {
        "k": k,
        "backend": s.backend,
        "path": str(s.path),
        "points": len(s.points),
        "rejected_rows": s.rejected,
        "windows": s.windows,
        "anomalies": [(t, b) for t, b, _sev in monitor.stats.anomalies],
        "change_points": [(t, s.backend) for t in alarms],
        "start_ts": float(ts[0]),
        "end_ts": float(ts[-1]),
        "seconds": time.perf_counter() - t0,
    }


def score_telemetry(entry: ScenarioFile, parts: Sequence[dict[str, Any]]) -> EntryResult:
    """Combine the series of an observe-only telemetry entry into its scores.

    Ground truth is the labelled windows as given (no grace: NAB's windows are already wide).
    The timeline puts every series on its own clock (hours from its first point)."""
    parts = sorted(parts, key=lambda p: p["k"])
    labelled = all(p["windows"] is not None for p in parts)
    windows = {p["backend"]: list(p["windows"]) for p in parts if p["windows"] is not None}
    detections = [d for p in parts for d in p["anomalies"]]
    changes = [c for p in parts for c in p["change_points"]]
    score = score_detections(detections, windows, grace_s=0.0) if labelled else None
    in_windows = sum(1 for t, b in changes if any(a <= t <= e for a, e in windows.get(b, [])))
    per_series = []
    rel: dict[str, Any] = {"windows": {}, "anomalies": [], "drift_alarms": [], "alerts": []}
    for p in parts:
        one = score_detections(p["anomalies"], {p["backend"]: p["windows"] or []}, grace_s=0.0)
        per_series.append(
            {
                "backend": p["backend"],
                "path": p["path"],
                "points": p["points"],
                "rejected_rows": p["rejected_rows"],
                "windows": len(p["windows"] or []),
                "anomalies": len(p["anomalies"]),
                "change_points": len(p["change_points"]),
                "anomaly": one.to_json() if p["windows"] is not None else None,
            }
        )
        t0 = p["start_ts"]
        rel["windows"][p["backend"]] = [(a - t0, e - t0) for a, e in p["windows"] or []]
        rel["anomalies"] += [(t - t0, b) for t, b in p["anomalies"]]
        rel["drift_alarms"] += [(t - t0, b) for t, b in p["change_points"]]
    rel["start_ts"] = 0.0
    rel["end_ts"] = max((p["end_ts"] - p["start_ts"] for p in parts), default=0.0)
    metrics: dict[str, float | int | None] = {
        "anomalies": len(detections),
        "anomaly_precision": score.precision if score else None,
        "anomaly_recall": score.recall if score else None,
        "anomaly_delay_s": score.mean_delay_s if score else None,
        "change_points": len(changes),
        "change_points_in_windows": in_windows if labelled else None,
    }
    ex = entry.expect
    expectations = []
    if ex.min_anomaly_recall is not None:
        expectations.append(
            _at_least("min_anomaly_recall", metrics["anomaly_recall"], ex.min_anomaly_recall)
        )
    if ex.min_anomaly_precision is not None:
        expectations.append(
            _at_least(
                "min_anomaly_precision", metrics["anomaly_precision"], ex.min_anomaly_precision
            )
        )
    return EntryResult(
        name=entry.name,
        kind="telemetry",
        source=str(entry.source) if entry.source else None,
        description=entry.description,
        metrics=metrics,
        detail={
            "traffic": "telemetry",
            "observe_only": True,
            "series": per_series,
            "anomaly": score.to_json() if score else None,
            "ground_truth": "labelled windows (no grace)" if labelled else "none",
        },
        expectations=expectations,
        seconds=sum(p["seconds"] for p in parts),
        timeline=rel,
    )


# --- scoring a simulated scenario -------------------------------------------------------------


def _at_most(name: str, value: Any, limit: float, unit: str = "") -> PropertyResult:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return PropertyResult(name, False, f"no value to compare with {limit:g}{unit}", None, limit)
    ok = value <= limit
    return PropertyResult(
        name, ok, f"{value:.4g}{unit} {'<=' if ok else '>'} {limit:g}{unit}", float(value), limit
    )


def _at_least(name: str, value: Any, limit: float, unit: str = "") -> PropertyResult:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return PropertyResult(name, False, f"no value to compare with {limit:g}{unit}", None, limit)
    ok = value >= limit
    return PropertyResult(
        name, ok, f"{value:.4g}{unit} {'>=' if ok else '<'} {limit:g}{unit}", float(value), limit
    )


def ground_truth(
    scenario: Scenario, run: PolicyRun
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, float, list[str]]]]:
    """Per-backend chaos windows (labelled ticks plus fleet-wide events) and drift events."""
    names = list(run.counts)
    windows: dict[str, list[tuple[float, float]]] = {}
    for n in names:
        labelled = np.array([bool(k) for k in run.chaos.get(n, [])], dtype=bool)
        found = label_windows(run.ts[: labelled.size], labelled) if labelled.size else []
        windows[n] = found
    for ev in scenario.chaos:
        if ev.backend is None and ev.kind == "traffic_surge":
            w = (START_TS + ev.start_s, START_TS + ev.end_s)
            for n in names:
                windows[n] = merge_windows([*windows[n], w])
    drifts = [
        (
            START_TS + ev.start_s,
            START_TS + min(ev.end_s, scenario.duration_s),
            [ev.backend] if ev.backend else names,
        )
        for ev in scenario.chaos
        if ev.kind == "gradual_drift"
    ]
    return windows, drifts


def routing_drift_config(entry: ScenarioFile) -> RoutingDriftConfig:
    """The routing drift detector's settings: the loop's own when the entry runs the loop."""
    if entry.loop is not None:
        from agents.feedback_loop import LoopConfig

        return LoopConfig.model_validate(entry.loop.config).routing_drift
    return RoutingDriftConfig()


def score_scenario(
    entry: ScenarioFile, scenario: Scenario, runs: Mapping[str, PolicyRun], seconds: float = 0.0
) -> EntryResult:
    """Scores, expected properties and the detection timeline of one replayed scenario."""
    pred = runs["predictive"]
    policies: dict[str, dict[str, Any]] = {}
    for name, r in runs.items():
        flaps = count_flaps(r.counts, r.ts)
        policies[name] = {
            **r.summary,
            "flaps": sum(flaps.values()),
            "flaps_by_backend": flaps,
            "requests": r.requests,
            "seconds": round(r.seconds, 2),
        }
    windows, drifts = ground_truth(scenario, pred)
    anomaly = score_detections([(t, b) for t, b, _ in pred.anomalies], windows)
    every = merge_windows(w for ws in windows.values() for w in ws)
    during_chaos = sum(
        1 for t, _b, _s in pred.anomalies if any(s <= t <= e + GRACE_S for s, e in every)
    )
    fleet_precision = during_chaos / len(pred.anomalies) if pred.anomalies else None
    # Drift: the routing model's detector (agents.monitors.routing_drift), per backend. The
    # closed loop runs it live; a plain replay runs the same monitor over the recorded ticks.
    routing = routing_drift_config(entry)
    if pred.loop is not None:
        drift_alarms = [(float(t), str(b)) for t, b in pred.loop["routing_drift_alarms"]]
    else:
        drift_alarms = [
            (a.ts, a.backend)
            for a in replay_routing_drift(
                pred.ts, pred.residuals, list(pred.counts), routing, start_ts=START_TS
            )
        ]
    drift = score_drift(drift_alarms, drifts, windows)
    forecaster_drift = None
    if pred.loop is not None:
        # The loop's forecaster detector judges the 5-minute forecaster (which no longer
        # routes), not a backend: scored fleet-wide, reported beside the routing model's.
        fleet_windows = {"fleet": merge_windows(w for ws in windows.values() for w in ws)}
        loop_alarms = [(t, "fleet") for t in pred.loop["drift_detected_ts"]]
        forecaster_drift = score_drift(
            loop_alarms, [(a, b, ["fleet"]) for a, b, _ in drifts], fleet_windows
        )
    baselines = [p for p in runs if p != "predictive"]
    best = min(baselines, key=lambda p: runs[p].summary["sla_violation_pct"], default=None)
    esc = pred.escalation
    escalation_pct = esc["escalated_pct"] if esc is not None else pred.summary["ambiguous_pct"]
    sent = [a for a in pred.alerts if not a["suppressed"]]
    p = policies["predictive"]
    metrics: dict[str, float | int | None] = {
        "sla_violation_pct": p["sla_violation_pct"],
        "p95_latency_ms": p["p95_latency_ms"],
        "mean_cost": p["mean_cost"],
        "flaps": p["flaps"],
        "escalation_pct": escalation_pct,
        "anomalies": anomaly.detections,
        "anomaly_precision": anomaly.precision,
        "anomaly_recall": anomaly.recall,
        "anomaly_delay_s": anomaly.mean_delay_s,
        "anomaly_precision_fleet": fleet_precision,
        "drift_delay_s": drift.delay_s,
        "drift_false_alarms": drift.false_alarms,
        "drift_alarms": drift.alarms,
        "forecaster_drift_delay_s": forecaster_drift.delay_s if forecaster_drift else None,
        "alerts_sent": len(sent),
    }
    if best is not None:
        b = policies[best]
        metrics["best_baseline_sla_violation_pct"] = b["sla_violation_pct"]
        metrics["sla_improvement_vs_best_baseline_pct"] = percent_better(
            p["sla_violation_pct"], b["sla_violation_pct"]
        )
    if pred.loop is not None:
        st = pred.loop["stats"]
        for k in ("retrains", "experiments", "promotions", "rollbacks", "outcomes_accepted"):
            metrics[f"loop_{k}"] = st.get(k, 0)
    expectations = check_expectations(entry, runs, policies, metrics, drift.delay_s)
    detail = {
        "traffic": entry.traffic.kind,
        "duration_s": scenario.duration_s,
        "seed": entry.seed,
        "chaos": [
            {
                "kind": ev.kind,
                "backend": ev.backend,
                "start_s": ev.start_s,
                "end_s": ev.end_s,
                "magnitude": ev.magnitude,
            }
            for ev in scenario.chaos
        ],
        "policies": policies,
        "best_baseline": best,
        "anomaly": {**anomaly.to_json(), "during_any_chaos": during_chaos},
        "drift": drift.to_json(),
        "drift_forecaster": forecaster_drift.to_json() if forecaster_drift else None,
        "drift_detector": f"calibrated Page-Hinkley (up, warm-up {routing.warmup_ticks} ticks "
        f"after {routing.burn_in_s:g} s, h={routing.threshold_sigmas:g} sigma, "
        f"k={routing.delta_sigmas:g} sigma) per backend on the routing model's per-tick mean "
        + SIGNAL_TEXT[routing.signal]
        + (" (run live by the closed loop)" if pred.loop is not None else ""),
        "alerts": {
            "sent": len(sent),
            "suppressed": len(pred.alerts) - len(sent),
            "by_kind": _count(a["kind"] for a in sent),
        },
        "escalation": {
            "wired": esc is not None,
            "rate_pct": round(escalation_pct, 3),
            "agent": esc,
            "outcomes": pred.decisions,
            "note": None
            if esc is not None
            else "the replay has no escalation hook yet: the rate is the share of ambiguous "
            "requests (those that would be escalated), and their outcomes are the policy's",
        },
        "loop": pred.loop,
        "db": pred.db,
        "ground_truth_windows": {n: len(w) for n, w in windows.items()},
    }
    return EntryResult(
        name=entry.name,
        kind="scenario",
        source=str(entry.source) if entry.source else None,
        description=entry.description,
        metrics=metrics,
        detail=detail,
        expectations=expectations,
        seconds=seconds,
        runs=dict(runs),
        timeline={
            "windows": windows,
            "anomalies": [(t, b) for t, b, _ in pred.anomalies],
            "drift_alarms": drift_alarms,
            "alerts": [(a["ts"], a["subject"], a["kind"]) for a in sent],
            "start_ts": START_TS,
            "end_ts": START_TS + scenario.duration_s,
        },
    )


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def check_expectations(
    entry: ScenarioFile,
    runs: Mapping[str, PolicyRun],
    policies: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any],
    drift_delay: float | None,
) -> list[PropertyResult]:
    ex = entry.expect
    out: list[PropertyResult] = []
    pred = runs["predictive"]
    shares = traffic_shares(pred.counts)
    for leave in ex.traffic_leaves:
        if isinstance(leave.after, str):
            idx = leave.event
            if idx is None:
                idx = next(
                    (k for k, ev in enumerate(entry.chaos) if ev.backend == leave.backend), 0
                )
            ev = entry.chaos[idx]
            t0 = START_TS + (ev.start_s if leave.after == "chaos_start" else ev.end_s)
            anchor = f"{ev.kind} {leave.after.split('_')[1]}"
        else:
            t0 = START_TS + leave.after
            anchor = f"t={leave.after:g} s"
        delay = leave_delay_s(shares[leave.backend], pred.ts, t0, leave.max_share)
        name = f"traffic_leaves {leave.backend}"
        if delay is None:
            out.append(
                PropertyResult(
                    name,
                    False,
                    f"{leave.backend}'s share never fell to {leave.max_share:.0%} after {anchor}",
                    None,
                    leave.within_s,
                )
            )
        else:
            ok = delay <= leave.within_s
            out.append(
                PropertyResult(
                    name,
                    ok,
                    f"share <= {leave.max_share:.0%} {delay:.0f} s after {anchor} "
                    f"({'within' if ok else 'later than'} {leave.within_s:g} s)",
                    delay,
                    leave.within_s,
                )
            )
    if ex.drift_detected_within_s is not None:
        lim = ex.drift_detected_within_s
        if drift_delay is None:
            out.append(PropertyResult("drift_detected", False, "drift not detected", None, lim))
        else:
            ok = drift_delay <= lim
            out.append(
                PropertyResult(
                    "drift_detected",
                    ok,
                    f"detected {drift_delay:.0f} s after onset ({'<=' if ok else '>'} {lim:g} s)",
                    drift_delay,
                    lim,
                )
            )
    if ex.max_drift_false_alarms is not None:
        out.append(
            _at_most(
                "max_drift_false_alarms", metrics["drift_false_alarms"], ex.max_drift_false_alarms
            )
        )
    if ex.max_escalation_pct is not None:
        out.append(
            _at_most("max_escalation_pct", metrics["escalation_pct"], ex.max_escalation_pct, "%")
        )
    if ex.max_sla_violation_pct is not None:
        out.append(
            _at_most(
                "max_sla_violation_pct", metrics["sla_violation_pct"], ex.max_sla_violation_pct, "%"
            )
        )
    if ex.max_p95_latency_ms is not None:
        out.append(
            _at_most("max_p95_latency_ms", metrics["p95_latency_ms"], ex.max_p95_latency_ms, " ms")
        )
    if ex.max_flaps is not None:
        out.append(_at_most("max_flaps", metrics["flaps"], ex.max_flaps))
    if ex.min_anomaly_recall is not None:
        out.append(
            _at_least("min_anomaly_recall", metrics["anomaly_recall"], ex.min_anomaly_recall)
        )
    if ex.min_anomaly_precision is not None:
        out.append(
            _at_least(
                "min_anomaly_precision", metrics["anomaly_precision"], ex.min_anomaly_precision
            )
        )
    if ex.loop_promotes is not None:
        promotions = int(metrics.get("loop_promotions") or 0)
        ok = (promotions > 0) == ex.loop_promotes
        want = "a promotion" if ex.loop_promotes else "no promotion"
        out.append(
            PropertyResult(
                "loop_promotes",
                ok,
                f"expected {want}; the loop promoted {promotions} challenger(s)",
                promotions,
                None,
            )
        )
    for beat in ex.beats_baselines:
        names = beat.baselines or [p for p in runs if p in BASELINE_NAMES]
        ours = policies["predictive"][beat.metric]
        worst_gap = None
        failed = []
        for b in names:
            theirs = policies[b][beat.metric]
            gain = percent_better(ours, theirs)
            if gain is None:
                ok = ours <= theirs and beat.by_pct == 0
            else:
                ok = gain >= beat.by_pct - 1e-9
            if not ok:
                failed.append(f"{b} ({theirs:.4g})")
            if gain is not None and (worst_gap is None or gain < worst_gap):
                worst_gap = gain
        req = f"{beat.by_pct:g}% lower" if beat.by_pct else "no higher"
        out.append(
            PropertyResult(
                f"beats_baselines {beat.metric}",
                not failed,
                f"predictive {ours:.4g} vs {', '.join(names)}: needs {req}"
                + (f"; not met against {', '.join(failed)}" if failed else "")
                + (f"; smallest margin {worst_gap:.1f}%" if worst_gap is not None else ""),
                worst_gap,
                beat.by_pct,
            )
        )
    return out


# --- real benchmarks ---------------------------------------------------------------------------


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
        _at_least(f"min_{k}", metrics[f"nab_{k}"], lim)
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
            _at_most(
                "max_stationary_false_alarms",
                metrics["stationary_false_alarms"],
                ex.max_stationary_false_alarms,
            )
        )
    if ex.min_detected_pct is not None:
        expectations.append(
            _at_least("min_detected_pct", metrics["detected_pct"], ex.min_detected_pct, "%")
        )
    if ex.max_false_alarms_vs_river_best is not None:
        expectations.append(
            _at_most(
                "max_false_alarms_vs_river_best",
                metrics["false_alarms_vs_river_best"],
                ex.max_false_alarms_vs_river_best,
            )
        )
    if ex.max_delay_vs_river_best is not None:
        expectations.append(
            _at_most(
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


# --- the suite ---------------------------------------------------------------------------------


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

    def broken(i: int, e: EvalEntry, msg: str, seconds: float = 0.0) -> EntryResult:
        kind = (
            e.kind
            if not isinstance(e, ScenarioFile)
            else ("telemetry" if e.observe_only else "scenario")
        )
        source = str(e.source) if e.source else None
        return EntryResult(e.name, kind, source, e.description, {}, {}, [], seconds, error=msg)

    for i, e in enumerate(entries):
        if not isinstance(e, ScenarioFile):
            continue
        try:
            if e.observe_only:
                series[i] = load_telemetry(e)
            else:
                scenarios[i] = e.build()
        except (ScenarioFileError, ValueError) as err:
            results[i] = broken(i, e, str(err))
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

    _JOB.clear()
    _JOB.update(
        entries=list(entries),
        scenarios=scenarios,
        series=series,
        forecasters=forecasters,
        config=config,
    )
    runs: dict[int, dict[str, PolicyRun]] = {}
    parts: dict[int, list[dict[str, Any]]] = {}
    errors: dict[int, list[str]] = {}
    jobs = max(1, min(config.jobs, len(tasks), os.cpu_count() or 1))
    t0 = time.perf_counter()
    work = [
        (_run_series, (i, what)) if kind == "series" else (_run_policy, (i, what))
        for kind, i, what in tasks
    ]
    try:
        for k, (n, (_, out, err)) in enumerate(run_tasks(_call, work, jobs), 1):
            kind, i, what = tasks[n]
            name = entries[i].name
            elapsed = time.perf_counter() - t0
            label = f"{name} series {what}" if kind == "series" else f"{name} x {what}"
            if out is None:
                errors.setdefault(i, []).append(err or "failed")
                progress(f"[{k}/{len(tasks)}] {label}: FAILED {err}")
            elif kind == "series":
                parts.setdefault(i, []).append(out)
                progress(
                    f"[{k}/{len(tasks)}] {name} {out['backend']}: {out['points']} points, "
                    f"{len(out['anomalies'])} anomalies ({elapsed:.0f} s)"
                )
            else:
                runs.setdefault(i, {})[what] = out
                progress(
                    f"[{k}/{len(tasks)}] {label}: {out.summary['sla_violation_pct']:.1f}% over "
                    f"SLO, TTFT p95 {out.summary['p95_latency_ms'] or 0:.0f} ms ({elapsed:.0f} s)"
                )
    except (KeyboardInterrupt, Terminated):
        # The workers are stopped; their stores still say `running`: say what happened.
        for db in sorted((config.out_dir / "work").glob("*.db")):
            mark_running_interrupted(db)
        raise
    finally:
        _JOB.clear()

    for i, e in enumerate(entries):
        if i in results:
            continue
        if isinstance(e, ScenarioFile):
            if i in errors:
                results[i] = broken(i, e, "; ".join(errors[i]))
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


def _call(work: tuple[Callable[[Any], Any], Any]) -> Any:
    fn, arg = work
    return fn(arg)


__all__ = [
    "GRACE_S",
    "TICK_SECONDS",
    "EntryResult",
    "HarnessConfig",
    "PolicyRun",
    "PropertyResult",
    "SuiteResult",
    "check_expectations",
    "ground_truth",
    "run_suite",
    "score_scenario",
]
