"""The thin adapter between the HTTP service and the router.

The service speaks the per-request vocabulary of `tools.routers.base` (a request with its tier,
SLO and input tokens; completions with TTFT, end-to-end latency and status; engine scrapes
named after vLLM's metrics) and keeps that state in `LiveFleet`, which implements
`RouterView`. `agents.Router` (the one router of every caller, around the per-request
`tools.routers.predictive.PredictiveRouter`, or a baseline when the service is configured with
one) routes each request on that view: its requests in flight are the service's own open
decisions, its completions the service's accepted outcomes, its scrapes the engines' metrics.
Each tick's telemetry refreshes the fleet state's 5-minute forecasts (the router's prior).

A tier's SLO is the request-level simulator's (`tools.sim.workload.TIERS`: a TTFT limit and an
end-to-end limit); `sla_ms` overrides the TTFT limit; `review` takes `standard`'s limits and is
always ambiguous.

Escalation never runs on the event loop: the Router's escalation hook only *marks* a request
that its budget lets through (`_Deferred`). In advisory mode the service answers at once and
hands the request to its advice queue (`arcpoint.serve.advice`); in override mode
`escalate()` hands it to the router agent on the escalator's worker thread and awaits the
answer for at most the escalation deadline; when that worker is busy, the policy's pick stands
at once (`agent_busy`).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from agents.router import ESCALATION_CAP, Router, RouterStats
from context_api.agent_tools.base import p_over
from context_api.fleet_state import FleetState
from tools.routers.base import Completion, EngineMetrics, RequestInfo, RouterView
from tools.routing import TIERS, Decision, RouteRequest
from tools.sim.workload import TIERS as SLO_TIERS
from tools.telemetry import TelemetryPoint

SLOS: dict[str, tuple[float, float]] = {t.name: (t.ttft_slo_ms, t.e2e_slo_ms) for t in SLO_TIERS}
"""Per tier: (TTFT limit, end-to-end limit) in ms."""

_TIER_RULES: dict[str, tuple[float, float, bool]] = {
    name: (*SLOS.get(name, SLOS["standard"]), tier.review) for name, tier in TIERS.items()
}
"""Per routing tier: (TTFT limit, end-to-end limit, always reviewed), looked up once a request."""
_DEFAULT_RULE = (*SLOS["standard"], False)


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
    """The router's probability that the request meets its SLO on the chosen backend; without
    one (a baseline policy), the 5-minute forecast interval read as Gaussian; None without
    either. Reads the decision's candidates (built on first read): see `RouterAdapter.p_meet_slo`
    for the request path."""
    c = decision.chosen
    if c is None:
        return None
    return _p_meet(c.p_meet_slo, c.forecast_ms, c.lo_ms, c.hi_ms, decision.sla_ms)


def _p_meet(
    p: float, forecast_ms: float, lo_ms: float, hi_ms: float, sla_ms: float
) -> float | None:
    if math.isfinite(p):
        return p
    if not (math.isfinite(forecast_ms) and math.isfinite(lo_ms)):
        return None
    over = p_over(forecast_ms, lo_ms, hi_ms, sla_ms)
    return None if over is None else 1.0 - over


class RouterAdapter:
    """Routes with `agents.Router` on the service's live view; see the module docstring."""

    def __init__(
        self,
        router_factory,
        fleet: FleetState,
        view: RouterView,
        *,
        escalator=None,
        escalation_budget: float | None = ESCALATION_CAP,
    ) -> None:
        self._hook = _Deferred()
        self.router: Router = router_factory(self._hook if escalator is not None else None)
        self.router.escalation_budget = escalation_budget
        self.fleet = fleet
        self.view = view
        self.escalator = escalator
        self._prefix = f"s{secrets.token_hex(4)}-"
        self.router.id_prefix = self._prefix
        self.router.start_ts = 0.0  # the live view's clock is unix time: stamp arrivals
        self._names = {b.name: i for i, b in enumerate(view.backends)}
        self._last: Decision | None = None
        self._last_choice: object = None
        self.requests = 0
        """Requests routed; the latest one's number is its id for the router's live state."""

    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(TIERS)

    def route(self, req: RouteInput) -> tuple[Decision, RouteRequest | None, bool]:
        """The policy's decision, whether the escalation budget admitted it to the router
        agent, and if so the request as the agent gets it (None otherwise)."""
        self.requests = n = self.requests + 1
        ttft_slo, e2e_slo, review = _TIER_RULES.get(req.tier, _DEFAULT_RULE)
        if req.sla_ms is not None:
            ttft_slo = req.sla_ms
        info = RequestInfo(n, time.time(), req.input_tokens or 0, req.tier, ttft_slo, e2e_slo)
        hook = self._hook
        hook.wanted = False
        router = self.router
        decision = router.route(
            info,
            self.view,
            request_id=req.request_id or f"{self._prefix}r{n}",
            metadata=req.metadata,
            review=review,
        )
        self._last = decision
        self._last_choice = getattr(router.policy, "last", None)
        if not hook.wanted:
            return decision, None, False
        hook.wanted = False
        request = RouteRequest(decision.request_id, req.tier, req.sla_ms, req.metadata, decision.ts)
        return decision, request, True

    def p_meet_slo(self, decision: Decision) -> float | None:
        """`p_meet_slo(decision)` without building the decision's candidates on the request
        path: for the decision `route` just made, the chosen backend's figures are read from
        what the pick computed (the policy's `last` choice, the tick's fleet view), the values
        the candidates are built from; the candidates themselves (every backend's predictions
        and notes) are built later on the decision writer's thread. Any other decision (the
        router agent's, after an escalation) reads its candidates."""
        choice = self._last_choice
        if decision is not self._last:
            return p_meet_slo(decision)
        names = self._names
        pick = names.get(decision.backend, -1)
        if choice is not None and getattr(choice, "backend", pick) != pick:
            return p_meet_slo(decision)  # a policy that does not keep its last choice
        ps = getattr(choice, "p", None)
        p = ps[pick] if ps and pick >= 0 else math.nan
        if math.isfinite(p):
            return p
        fv = self.router.view
        if fv is None or len(fv.backends) != len(names) or pick < 0:
            return None
        b = fv.backends[pick]
        return _p_meet(p, b.forecast_ms, b.forecast_lo_ms, b.forecast_hi_ms, decision.sla_ms)

    async def escalate(self, request: RouteRequest, decision: Decision) -> Decision:
        """Ask the router agent (on its worker thread), waiting at most its deadline."""
        assert self.escalator is not None
        return await self.escalator.aescalate(request, decision)

    def tick(self, points: list[TelemetryPoint], arrivals: int, alarms: Mapping[str, str]) -> None:
        """A tick of live telemetry: refresh the forecasts and the prior, hand over alarms."""
        self.router.on_telemetry(points, arrivals, alarms)
        if self.escalator is not None:
            self.escalator.score_pending(self._violation_prob)

    @property
    def stats(self) -> RouterStats:
        return self.router.stats

    def planned_shares(self) -> dict[str, float]:
        """Each backend's share of the router's recent requests."""
        return self.router.shares

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        self.router.on_complete(completion, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        self.router.on_scrape(metrics, view)

    def _violation_prob(self, backend: str, sla_ms: float) -> float:
        view = self.fleet.view
        if view is None:
            return math.nan
        for b in view.backends:
            if b.name == backend and math.isfinite(b.forecast_ms):
                over = p_over(b.forecast_ms, b.forecast_lo_ms, b.forecast_hi_ms, sla_ms)
                return math.nan if over is None else over
        return math.nan
