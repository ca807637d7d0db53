"""Replay a scenario through a routing policy, request by request, and score it.

The loop per 10 s tick: requests arrive and are routed one by one through the `Router` (the
same code path as production); the simulator serves the resulting load; every request gets a
latency drawn from its backend's latency distribution for that tick and an error with the
backend's error rate; reactive policies see those replies in arrival order; then the tick's
telemetry refreshes the forecasts and the policy re-plans. The router never sees the future:
routing for tick t uses telemetry up to the end of tick t-1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from agents.escalation import Escalator
from agents.fleet_monitor import FleetMonitor
from agents.router import Router
from context_api.fleet_state import FleetState
from tools.baselines import BASELINES
from tools.chaos import Scenario
from tools.forecaster import Forecaster
from tools.policy import PredictivePolicy
from tools.routing import TIERS, BackendInfo, Decision, RouteRequest
from tools.simulator import FleetSimulator, TickResult

POLICIES = ("predictive", "static", "round_robin", "least_loaded", "outlier_ejection", "peak_ewma")

TIER_MIX = ("standard",) * 8 + ("premium", "batch")
"""Traffic mix of the replayed requests: 80% standard, 10% premium, 10% batch."""


def make_policy(name: str, backends: tuple[BackendInfo, ...], seed: int = 0, id_prefix: str = "d"):
    if name == "predictive":
        return PredictivePolicy(backends, id_prefix=id_prefix)
    cls = BASELINES.get(name)
    if cls is None:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    if name == "peak_ewma":
        return cls(backends, id_prefix=id_prefix, seed=seed)
    return cls(backends, id_prefix=id_prefix)


@dataclass
class TickRecord:
    ts: float
    counts: dict[str, int]
    p95_ms: dict[str, float]
    error_rate: dict[str, float]
    forecast_ms: dict[str, float]
    violations: int
    requests: int


@dataclass
class RunResult:
    scenario: str
    policy: str
    requests: int
    sla_violation_pct: float
    p95_latency_ms: float
    mean_cost: float
    reroutes: int
    ambiguous_pct: float
    ambiguous_reasons: dict[str, int]
    escalated_pct: float = 0.0
    escalation: dict | None = None
    """The Escalator's summary (agent runs, accepted, fallbacks, outcome against the policy)."""
    ticks: list[TickRecord] = field(default_factory=list)
    monitor: dict | None = None
    """What the fleet monitor raised (anomalies, alerts), when one watched the run."""

    def summary(self) -> dict[str, float | int]:
        return {
            "sla_violation_pct": round(self.sla_violation_pct, 3),
            "p95_latency_ms": round(self.p95_latency_ms, 1),
            "mean_cost": float(f"{self.mean_cost:.6g}"),  # m$ shown to 3 decimals: keep them
            "reroutes": self.reroutes,
            "ambiguous_pct": round(self.ambiguous_pct, 3),
            "escalated_pct": round(self.escalated_pct, 3),
        }


DecisionSink = Callable[[list[Decision], np.ndarray, np.ndarray], None]
"""Receives each tick's decisions with their sampled latencies (ms) and success flags."""


def run_scenario(
    scenario: Scenario,
    policy_name: str,
    forecaster: Forecaster | None,
    *,
    seed: int = 0,
    sink: DecisionSink | None = None,
    id_prefix: str = "d",
    start_ts: float = 1_700_000_000.0,
    on_tick: Callable[[TickResult], None] | None = None,
    monitor: FleetMonitor | None = None,
    escalator: Escalator | None = None,
) -> RunResult:
    sim = FleetSimulator(scenario, start_ts=start_ts)
    specs = sim.fleet
    backends = tuple(BackendInfo(s.name, s.cost_per_request, s.capacity_rps) for s in specs)
    names = [b.name for b in backends]
    index = {n: i for i, n in enumerate(names)}
    costs = np.array([b.cost_per_request for b in backends])
    policy = make_policy(policy_name, backends, seed=seed, id_prefix=id_prefix)
    fleet_state = FleetState(backends, forecaster)
    if escalator is not None:
        escalator.fleet = fleet_state
    router = Router(policy, fleet_state, escalate=escalator)
    wants_replies = getattr(policy, "wants_observations", False)
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
            d = router.route(RouteRequest(f"r{req_no}", tier=tier))
            req_no += 1
            chosen[k] = index[d.backend]
            slas[k] = sla_by_tier[tier]
            if sink is not None:
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
        if wants_replies:
            for k in range(n):
                policy.observe(names[chosen[k]], float(lat[k]), bool(ok[k]))
        if sink is not None and n:
            sink(decisions, lat, ok)
        if escalator is not None:
            # Score this tick's escalations against the policy's own pick, with the true
            # chance each backend had of missing the SLA this tick.
            ticks_now = result.backends
            escalator.score_pending(lambda b, sla, t=ticks_now: t[b].violation_prob(sla))
        if n:
            share = counts / n
            if prev_share is not None:
                moved += 0.5 * float(np.abs(share - prev_share).sum()) * n
            prev_share = share

        if on_tick is not None:
            on_tick(result)
        alarms = monitor.observe(result.telemetry) if monitor is not None else None
        view = router.on_telemetry(result.telemetry, arrivals=n, alarms=alarms)
        ticks.append(
            TickRecord(
                ts=result.ts,
                counts={name: int(c) for name, c in zip(names, counts, strict=True)},
                p95_ms={p.backend: p.p95_ms for p in result.telemetry},
                error_rate={p.backend: p.error_rate for p in result.telemetry},
                forecast_ms={b.name: b.forecast_ms for b in view.backends},
                violations=int(bad.sum()),
                requests=n,
            )
        )

    all_lat = np.concatenate(latencies) if latencies else np.empty(0)
    stats = router.stats
    return RunResult(
        scenario=scenario.name,
        policy=policy_name,
        requests=total,
        sla_violation_pct=100.0 * violations / total if total else 0.0,
        p95_latency_ms=float(np.percentile(all_lat, 95)) if all_lat.size else math.nan,
        mean_cost=cost / total if total else 0.0,
        reroutes=round(moved),
        ambiguous_pct=stats.ambiguous_pct,
        ambiguous_reasons=dict(stats.ambiguous_reasons),
        escalated_pct=stats.escalated_pct,
        escalation=escalator.stats.summary() if escalator is not None else None,
        ticks=ticks,
    )
