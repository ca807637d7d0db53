"""Replay a scenario through the closed loop, scored exactly as `evals.replay.run_scenario` scores
a policy, with the fleet monitor and the router agent attached.

The request loop, latency sampling, SLA accounting, cost and reroute figures follow
`run_scenario` line for line (same tier mix, same random streams), so a loop run and a plain
predictive run of one scenario are directly comparable; the difference is who routes:
`FeedbackLoop.route` (the champion's router, or an experiment arm's), and what happens after each
tick: `FeedbackLoop.on_tick` records sampled decisions and late outcomes, detects drift,
retrains, runs experiments and promotes. The monitor's alarms reach the loop's router the same
way they reach the replay's (as the fleet state's alarms before the tick's refresh); the
escalator is attached to the loop's router.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents.feedback_loop import FeedbackLoop, LoopConfig
from evals.replay import TIER_MIX, DecisionSink, RunResult, TickRecord
from tools.chaos import Scenario
from tools.routing import TIERS, BackendInfo, Decision, RouteRequest
from tools.simulator import FleetSimulator, TickResult


def run_with_loop(
    scenario: Scenario,
    forecaster: Any,
    store: Any,
    *,
    seed: int,
    start_ts: float,
    loop_config: dict[str, Any],
    run_id: str | None = None,
    alerts: Any = None,
    artifact_dir: Path | None = None,
    sink: DecisionSink | None = None,
    on_tick: Callable[[TickResult], None] | None = None,
    monitor: Any = None,
    escalator: Any = None,
) -> tuple[RunResult, FeedbackLoop]:
    sim = FleetSimulator(scenario, start_ts=start_ts)
    backends = tuple(BackendInfo(s.name, s.cost_per_request, s.capacity_rps) for s in sim.fleet)
    names = [b.name for b in backends]
    index = {n: i for i, n in enumerate(names)}
    costs = np.array([b.cost_per_request for b in backends])
    loop = FeedbackLoop(
        store,
        backends,
        forecaster,
        config=LoopConfig.model_validate({"seed": seed, **loop_config}),
        run_id=run_id,
        alerts=alerts,
        artifact_dir=artifact_dir,
        start_ts=start_ts,
    )
    if escalator is not None:
        loop.router.escalate = escalator
        escalator.fleet = loop.fleet
    rng = np.random.default_rng(seed + 7919)
    sla_by_tier = {name: t.sla_ms for name, t in TIERS.items()}

    total = violations = 0
    cost = 0.0
    latencies: list[np.ndarray] = []
    prev_share: np.ndarray | None = None
    moved = 0.0
    ticks: list[TickRecord] = []
    req_no = 0
    while not sim.done:
        n = sim.arrivals()
        chosen = np.empty(n, dtype=np.int64)
        slas = np.empty(n)
        decisions: list[Decision] = []
        for k in range(n):
            tier = TIER_MIX[req_no % len(TIER_MIX)]
            d = loop.route(RouteRequest(f"r{req_no}", tier=tier))
            req_no += 1
            chosen[k] = index[d.backend]
            slas[k] = sla_by_tier[tier]
            decisions.append(d)
        counts = np.bincount(chosen, minlength=len(names))
        result = sim.step({name: int(c) for name, c in zip(names, counts, strict=True)})

        lat = np.empty(n)
        ok = np.ones(n, dtype=bool)
        for i, name in enumerate(names):
            c = int(counts[i])
            if c == 0:
                continue
            bt = result.backends[name]
            mask = chosen == i
            lat[mask] = bt.sample(c, rng)
            ok[mask] = rng.random(c) >= bt.error_prob
        bad = (lat > slas) | ~ok
        total += n
        violations += int(bad.sum())
        cost += float(costs @ counts)
        latencies.append(lat)
        if sink is not None and n:
            sink(decisions, lat, ok)
        if escalator is not None:
            bts = result.backends
            escalator.score_pending(lambda b, sla, t=bts: t[b].violation_prob(sla))
        if n:
            share = counts / n
            if prev_share is not None:
                moved += 0.5 * float(np.abs(share - prev_share).sum()) * n
            prev_share = share
        if on_tick is not None:
            on_tick(result)
        alarms = monitor.observe(result.telemetry) if monitor is not None else None
        if alarms is not None:
            loop.fleet.alarms = dict(alarms)  # the tick's refresh (inside on_tick) carries them
        loop.on_tick(result.ts, decisions, result.telemetry, arrivals=n)
        view = loop.fleet.view
        ticks.append(
            TickRecord(
                ts=result.ts,
                counts={name: int(c) for name, c in zip(names, counts, strict=True)},
                p95_ms={p.backend: p.p95_ms for p in result.telemetry},
                error_rate={p.backend: p.error_rate for p in result.telemetry},
                forecast_ms={b.name: b.forecast_ms for b in view.backends} if view else {},
                violations=int(bad.sum()),
                requests=n,
            )
        )
    loop.finish()

    all_lat = np.concatenate(latencies) if latencies else np.empty(0)
    stats = loop.router.stats
    fields = {
        "scenario": scenario.name,
        "policy": "predictive",
        "requests": total,
        "sla_violation_pct": 100.0 * violations / total if total else 0.0,
        "p95_latency_ms": float(np.percentile(all_lat, 95)) if all_lat.size else math.nan,
        "mean_cost": cost / total if total else 0.0,
        "reroutes": round(moved),
        "ambiguous_pct": stats.ambiguous_pct,
        "ambiguous_reasons": dict(stats.ambiguous_reasons),
        "escalated_pct": getattr(stats, "escalated_pct", 0.0),
        "escalation": escalator.stats.summary() if escalator is not None else None,
        "ticks": ticks,
    }
    known = {f.name for f in dataclasses.fields(RunResult)}
    return RunResult(**{k: v for k, v in fields.items() if k in known}), loop


def loop_summary(loop: FeedbackLoop, start_ts: float) -> dict[str, Any]:
    """What the loop did, for the report: its stats, first events and the timeline."""

    def first(kind: str) -> float | None:
        for e in loop.timeline:
            if e.kind == kind:
                return e.ts
        return None

    return {
        "stats": dict(loop.stats),
        "active_model": loop.champion.version_id,
        "drift_detected_ts": [e.ts for e in loop.timeline if e.kind == "drift_detected"],
        "page_hinkley_alarms_ts": list(loop.ph_alarms),
        "first": {
            k: (None if (t := first(k)) is None else round(t - start_ts, 1))
            for k in (
                "detector_ready",
                "drift_detected",
                "challenger_trained",
                "experiment_started",
                "experiment_verdict",
                "promotion",
                "rollback",
            )
        },
        "timeline": [
            {"t_s": round(e.ts - start_ts, 1), "kind": e.kind, "summary": e.summary}
            for e in loop.timeline
        ],
    }
