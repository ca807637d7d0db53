"""The thin adapter between the HTTP service and the router.

The service speaks the per-request vocabulary of `tools.routers.base` (a request with its tier,
SLO and input tokens; completions with TTFT, end-to-end latency and status; engine scrapes
named after vLLM's metrics) and keeps that state in `LiveFleet`, which implements
`RouterView`. Today's `agents.Router` plans once per tick, so this adapter turns each tick's
completions and scrapes into `TelemetryPoint`s for it and asks it for a decision per request.
When the per-request policy lands, only `route()` and `tick()` here change: the endpoints, the
writer and the live state stay as they are.

Escalation never runs on the event loop: the Router's escalation hook only *marks* a request
that its budget lets through (`_Deferred`), and `escalate()` runs the router agent on a worker
thread, bounded by the agent's own deadline.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from agents.router import ESCALATION_CAP, Router, RouterStats
from context_api.agent_tools.base import p_over
from context_api.fleet_state import FleetState
from tools.routers.base import (
    Completion,
    EngineMetrics,
    RequestInfo,
    RouterView,
    RoutingPolicy,
)
from tools.routing import TIERS, Decision, RouteRequest
from tools.telemetry import TelemetryPoint


class _Deferred:
    """The Router's escalation hook: records that the budget allowed an escalation."""

    def __init__(self) -> None:
        self.wanted = False

    def __call__(self, request: RouteRequest, decision: Decision) -> Decision:
        self.wanted = True
        return decision


@dataclass(frozen=True, slots=True)
class RouteInput:
    request_id: str | None
    tier: str
    sla_ms: float | None
    input_tokens: int | None
    metadata: Mapping[str, str]


def p_meet_slo(decision: Decision) -> float | None:
    """P(latency within the decision's SLA) on the chosen backend, reading the forecast interval
    as Gaussian (the policy's own reading); None without a forecast."""
    c = decision.chosen
    if c is None or not (math.isfinite(c.forecast_ms) and math.isfinite(c.lo_ms)):
        return None
    over = p_over(c.forecast_ms, c.lo_ms, c.hi_ms, decision.sla_ms)
    return None if over is None else 1.0 - over


class RouterAdapter:
    """Routes with `agents.Router`; see the module docstring."""

    def __init__(
        self,
        router_factory,
        fleet: FleetState,
        *,
        escalator=None,
        escalation_budget: float | None = ESCALATION_CAP,
    ) -> None:
        self._hook = _Deferred()
        self.router: Router = router_factory(self._hook if escalator is not None else None)
        self.router.escalation_budget = escalation_budget
        self.fleet = fleet
        self.escalator = escalator
        self._prefix = f"s{secrets.token_hex(4)}-"
        self._requests = 0

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(TIERS)

    def route(self, req: RouteInput) -> tuple[Decision, RouteRequest, bool]:
        """The policy's decision, the request as the Router saw it, and whether the escalation
        budget admitted it to the router agent."""
        self._requests += 1
        request = RouteRequest(
            req.request_id or f"{self._prefix}r{self._requests}",
            req.tier,
            req.sla_ms,
            req.metadata,
        )
        self._hook.wanted = False
        decision = self.router.route(request)
        # The policy stamps the plan's tick time (0 before the first tick); a decision's time is
        # when it was made, which outcome lags and expiry are measured from.
        decision = replace(decision, ts=time.time())
        wanted = self._hook.wanted
        self._hook.wanted = False
        return decision, request, wanted

    def escalate(self, request: RouteRequest, decision: Decision) -> Decision:
        """Run the router agent (on a worker thread; the agent holds its own deadline)."""
        assert self.escalator is not None
        return self.escalator(request, decision)

    def tick(self, points: list[TelemetryPoint], arrivals: int, alarms: Mapping[str, str]) -> None:
        """A tick of live telemetry: refresh forecasts, re-plan (microseconds to a millisecond)."""
        self.router.on_telemetry(points, arrivals, alarms)
        if self.escalator is not None:
            self.escalator.score_pending(self._violation_prob)

    @property
    def stats(self) -> RouterStats:
        return self.router.stats

    def planned_shares(self) -> dict[str, float]:
        """The policy's current split of traffic (a tick-level plan)."""
        planned = getattr(self.router.policy, "shares", None)
        if callable(planned):
            planned = planned()
        return {k: float(v) for k, v in planned.items()} if isinstance(planned, dict) else {}

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        """The tick-level policy learns from each tick's telemetry, not per completion."""

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        """Scrapes reach the tick-level policy through the tick's telemetry."""

    def _violation_prob(self, backend: str, sla_ms: float) -> float:
        view = self.fleet.view
        if view is None:
            return math.nan
        for b in view.backends:
            if b.name == backend and math.isfinite(b.forecast_ms):
                over = p_over(b.forecast_ms, b.forecast_lo_ms, b.forecast_hi_ms, sla_ms)
                return math.nan if over is None else over
        return math.nan


class PolicyAdapter:
    """Serves a per-request policy (`tools.routers`, e.g. `least_request`, `prequal`, `c3`) on
    the live view: `choose()` per request, `on_complete()` per accepted outcome, `on_scrape()`
    per engine scrape. Ticks still refresh the forecasts that the dashboard and monitors read,
    but the policy routes on what it sees per request. Nothing is escalated: these policies have
    no notion of an ambiguous request."""

    escalator = None

    def __init__(self, policy: RoutingPolicy, fleet: FleetState, view: RouterView) -> None:
        self.policy = policy
        self.fleet = fleet
        self.view = view
        self.stats = RouterStats()
        self._names = tuple(b.name for b in view.backends)
        self._prefix = f"s{secrets.token_hex(4)}-"
        self._n = 0

    def route(self, req: RouteInput) -> tuple[Decision, RouteRequest, bool]:
        self._n += 1
        tier = TIERS[req.tier]
        sla = req.sla_ms if req.sla_ms is not None else tier.sla_ms
        now = time.time()
        info = RequestInfo(self._n, now, req.input_tokens or 0, req.tier, sla, sla)
        index = self.policy.choose(info, self.view)
        request = RouteRequest(
            req.request_id or f"{self._prefix}r{self._n}", req.tier, req.sla_ms, req.metadata
        )
        decision = Decision(
            decision_id=f"{self._prefix}{self._n}",
            request_id=request.request_id,
            ts=now,
            backend=self._names[index],
            policy=self.policy.name,
            reason=self.policy.name,
            sla_ms=sla,
            tier=req.tier,
            model_version=self.fleet.forecaster.version_id if self.fleet.forecaster else None,
        )
        self.stats.routed += 1
        return decision, request, False

    def escalate(self, request: RouteRequest, decision: Decision) -> Decision:
        return decision

    def tick(self, points: list[TelemetryPoint], arrivals: int, alarms: Mapping[str, str]) -> None:
        self.fleet.tick(points, arrivals, alarms)

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        self.policy.on_complete(completion, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.policy.on_scrape(metrics, view)

    def planned_shares(self) -> dict[str, float]:
        return {}
