"""Replay one seed of a scenario through one routing policy, request by request, and score it.

Every policy, the predictive one included, runs through the same request-level simulation
(`tools.sim.run.simulate`) on the same build of the scenario (common random numbers: the same
requests at the same times, the same chance events). The predictive router runs as in
production: `agents.router.Router` around `tools.routers.predictive.PredictiveRouter`, its fleet
state refreshing the 5-minute forecasts (the prior) every telemetry tick; the baselines come
from `tools.routers.registry`. The router never sees the future: it learns a
request's outcome when the response would reach it.

Figures per run (`tools.sim.metrics`): SLO violations, goodput, TTFT, TPOT, end-to-end latency,
errors and cost, plus flaps per hour (`evals.scoring`: a backend's share of each tick's requests
swinging by 10 points and back within a minute) and, for the predictive router, the share of
requests escalated to the router agent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.router import Router, predictive_router
from evals.scoring import count_flaps
from tools.routers.registry import BASELINES
from tools.routers.registry import make_policy as make_baseline
from tools.sim.engine import OK
from tools.sim.metrics import METRIC_KEYS, summarise
from tools.sim.run import SimConfig, SimResult, SimTick, profiles, simulate
from tools.sim.scenario import Built
from tools.sim.spec import TokenStats, backend_infos

POLICIES: tuple[str, ...] = ("predictive", *BASELINES)
RUN_KEYS: tuple[str, ...] = (*METRIC_KEYS, "flaps_per_h", "escalated_pct")
"""The per-run figures (`arcpoint demo --json` reports each one's mean over seeds)."""

DecisionSink = Callable[[list[Any], np.ndarray, np.ndarray, np.ndarray], None]
"""Receives, tick by tick, the decisions whose outcomes arrived during the tick, with their
TTFT (or time to failure) in ms, success flags and SLO-violation flags."""


@dataclass
class TickRecord:
    ts: float
    counts: dict[str, int]
    p95_ms: dict[str, float]
    error_rate: dict[str, float]
    forecast_ms: dict[str, float]
    violations: int
    requests: int
    chaos: dict[str, tuple[str, ...]] = field(default_factory=dict)
    residuals: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    """The routing model's residuals this tick (`agents.router.tick_residuals`)."""


@dataclass
class RunResult:
    scenario: str
    policy: str
    seed: int
    requests: int
    metrics: dict[str, float | None]
    ticks: list[TickRecord] = field(default_factory=list)
    ambiguous_pct: float = 0.0
    ambiguous_reasons: dict[str, int] = field(default_factory=dict)
    escalation: dict | None = None
    """The Escalator's summary (agent runs, accepted, fallbacks, outcome against the policy)."""
    monitor: dict | None = None
    cascaded: list[tuple[float, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def sla_violation_pct(self) -> float:
        return float(self.metrics["sla_violation_pct"] or 0.0)

    def summary(self) -> dict[str, float | int | None]:
        # six significant digits: a cost of a few micro-dollars keeps its digits
        out: dict[str, float | int | None] = {
            k: (None if v is None else float(f"{v:.6g}")) for k, v in self.metrics.items()
        }
        out["ambiguous_pct"] = round(self.ambiguous_pct, 3)
        out["requests"] = self.requests
        return out


def make_policy(
    name: str,
    built: Built,
    *,
    forecaster: Any = None,
    stats: TokenStats | None = None,
    escalate: Any = None,
    monitor: Any = None,
    id_prefix: str = "d",
    keep_decisions: bool = False,
    start_ts: float | None = None,
) -> Any:
    """A fresh policy `name` for one run of `built` (seeded by the run's seed); `start_ts` is
    the unix time of the run's start, the clock its decisions are stamped on."""
    if name == "predictive":
        if forecaster is None:
            raise ValueError("the predictive policy needs a trained forecaster")
        return predictive_router(
            profiles(built.fleet),
            backend_infos(built.fleet, stats or built.token_stats()),
            forecaster,
            seed=built.seed,
            escalate=escalate,
            monitor=monitor,
            id_prefix=id_prefix,
            keep_decisions=keep_decisions,
            start_ts=start_ts,
        )
    if name not in BASELINES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return make_baseline(name, profiles(built.fleet), seed=built.seed)


def flaps_per_hour(ticks: list[TickRecord], names: tuple[str, ...], duration_s: float) -> float:
    if not ticks or duration_s <= 0:
        return 0.0
    counts = {n: np.array([t.counts.get(n, 0) for t in ticks], dtype=float) for n in names}
    ts = np.array([t.ts for t in ticks])
    return sum(count_flaps(counts, ts).values()) / (duration_s / 3600.0)


def run_policy(
    built: Built,
    policy_name: str,
    *,
    forecaster: Any = None,
    sim_config: SimConfig | None = None,
    sink: DecisionSink | None = None,
    on_tick: Callable[[SimTick], None] | None = None,
    monitor: Any = None,
    escalator: Any = None,
    id_prefix: str = "d",
    policy: Any = None,
) -> RunResult:
    """Simulate `built` under `policy_name` (or a ready `policy`) and score it."""
    t0 = time.perf_counter()
    if policy is None:
        policy = make_policy(
            policy_name,
            built,
            forecaster=forecaster,
            escalate=escalator,
            monitor=monitor,
            id_prefix=id_prefix,
            keep_decisions=sink is not None,
            start_ts=(sim_config or SimConfig()).start_ts,
        )
    if escalator is not None and isinstance(policy, Router):
        escalator.fleet = policy.fleet
    ticks: list[TickRecord] = []

    def tick(t: SimTick) -> None:
        forecasts = getattr(policy, "forecasts", {})
        ticks.append(
            TickRecord(
                ts=t.ts,
                counts=t.counts,
                p95_ms={p.backend: p.p95_ms for p in t.telemetry},
                error_rate={p.backend: p.error_rate for p in t.telemetry},
                forecast_ms=dict(forecasts),
                violations=sum(t.violated.values()),
                requests=t.arrivals,
                chaos=t.chaos,
                residuals=dict(getattr(policy, "residuals", {})),
            )
        )
        if sink is not None and getattr(policy, "keep_decisions", False):
            _emit(policy.decisions, t, sink)
        if escalator is not None:
            escalator.score_pending(t.violation_prob)
        if on_tick is not None:
            on_tick(t)

    result = simulate(
        built.workload, built.fleet, policy, plan=built.plan, config=sim_config, on_tick=tick
    )
    return score(built, policy_name, result, ticks, policy, escalator, time.perf_counter() - t0)


def _emit(pending: dict[int, Any], t: SimTick, sink: DecisionSink) -> None:
    decisions, lat, ok, bad = [], [], [], []
    for r, status, ttft, e2e, violated in t.outcomes:
        d = pending.pop(r, None)
        if d is None:
            continue
        decisions.append(d)
        lat.append(ttft if ttft is not None else e2e)
        ok.append(status == OK)
        bad.append(violated)
    if decisions:
        sink(decisions, np.array(lat), np.array(ok, dtype=bool), np.array(bad, dtype=bool))


def score(
    built: Built,
    policy_name: str,
    result: SimResult,
    ticks: list[TickRecord],
    policy: Any,
    escalator: Any,
    seconds: float,
) -> RunResult:
    metrics = summarise(result)
    ttft = result.ttft_ms[~np.isnan(result.ttft_ms)]
    metrics["p95_latency_ms"] = float(np.percentile(ttft, 95)) if ttft.size else None
    """The eval suite's latency figure (`evals.scoring`): the 95th percentile of TTFT."""
    names = tuple(s.name for s in built.fleet)
    metrics["flaps_per_h"] = flaps_per_hour(ticks, names, built.workload.duration_s)
    router = policy if isinstance(policy, Router) else getattr(policy, "router", None)
    stats = getattr(router, "stats", None)
    metrics["escalated_pct"] = float(stats.escalated_pct) if stats is not None else 0.0
    return RunResult(
        scenario=built.scenario.name,
        policy=policy_name,
        seed=built.seed,
        requests=len(result),
        metrics=metrics,
        ticks=ticks,
        ambiguous_pct=float(stats.ambiguous_pct) if stats is not None else 0.0,
        ambiguous_reasons=dict(stats.ambiguous_reasons) if stats is not None else {},
        escalation=escalator.stats.summary() if escalator is not None else None,
        cascaded=list(result.cascaded),
        seconds=seconds,
    )


def is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
