"""One task of an eval suite, run in a forked worker: a simulated scenario under one policy, or
one recorded telemetry series observe-only.

The predictive run is the full loop: the fleet monitor (streaming Isolation Forest per backend,
alerts through the AlertService into a store), the router's escalation when an LLM is chosen
(`agents.escalation.Escalator`), the closed loop when the entry asks for it, and everything
written to a SQLite store in the out dir (`work/<name>.db`, readable by `arcpoint ask --db`).
Baselines run bare. Each run is reduced to a picklable `PolicyRun` (or a dict per series) for
the parent to score. What the workers read (entries, built scenarios, trained forecasters) is
set with `shared_with_workers` before forking: inherited, never serialised.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from evals.results import START_TS, HarnessConfig, PolicyRun
from evals.scenario_file import ScenarioFile
from evals.scoring import page_hinkley_alarms
from tools.sim.scenario import Built

log = logging.getLogger(__name__)

_JOB: dict[str, Any] = {}
"""Set in the parent before forking: entries, built scenarios, forecasters, config."""


@contextmanager
def shared_with_workers(**job: Any) -> Iterator[None]:
    """Hold what the workers read (entries, scenarios, series, forecasters, config) while a
    suite's tasks run; forked workers inherit it."""
    _JOB.clear()
    _JOB.update(job)
    try:
        yield
    finally:
        _JOB.clear()


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


def run_policy_task(task: tuple[int, str]) -> tuple[int, PolicyRun | None, str | None]:
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


def run_series_task(task: tuple[int, int]) -> tuple[int, dict[str, Any] | None, str | None]:
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
