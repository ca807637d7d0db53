"""The Router: the fast deterministic path, and the door to escalation for ambiguous requests.

Routine requests are answered by the policy from the forecasts cached at the last tick. An
ambiguous request is counted and, when an escalation handler is installed (the router agent),
handed to it; the handler must return a valid decision or the policy's answer stands.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from context_api.fleet_state import FleetState
from tools.routing import Decision, FleetView, RouteRequest
from tools.telemetry import TelemetryPoint


class RoutingPolicy(Protocol):
    name: str

    def on_tick(self, view: FleetView | None) -> None: ...

    def route(self, request: RouteRequest) -> Decision: ...

    def observe(self, backend: str, latency_ms: float, ok: bool) -> None: ...


Escalation = Callable[[RouteRequest, Decision], Decision]


@dataclass
class RouterStats:
    routed: int = 0
    ambiguous: int = 0
    escalated: int = 0
    over_budget: int = 0
    """Ambiguous requests the policy answered because the escalation budget was spent."""
    ambiguous_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ambiguous_pct(self) -> float:
        return 100.0 * self.ambiguous / self.routed if self.routed else 0.0

    @property
    def escalated_pct(self) -> float:
        return 100.0 * self.escalated / self.routed if self.routed else 0.0


class InvalidRequestError(ValueError):
    pass


class Router:
    def __init__(
        self,
        policy: RoutingPolicy,
        fleet: FleetState,
        escalate: Escalation | None = None,
        escalation_budget: float | None = 0.05,
        escalation_burst: float = 50.0,
    ) -> None:
        """`escalation_budget`: the fraction of requests that may go to the router agent.

        A token bucket that starts full: every routed request adds `escalation_budget` tokens
        (up to `escalation_burst`), every escalation spends one, so over a run escalations come
        to the budget's share of requests plus at most one initial burst. An ambiguous request
        that finds the bucket empty takes the policy's answer and is counted in
        `stats.over_budget`: the slow path stays a small, bounded share of traffic whatever the
        fleet does. None means every ambiguous request is escalated.
        """
        if escalation_budget is not None and not 0.0 <= escalation_budget <= 1.0:
            raise ValueError("escalation_budget must lie in [0, 1]")
        self.policy = policy
        self.fleet = fleet
        self.escalate = escalate
        self.escalation_budget = escalation_budget
        self.escalation_burst = escalation_burst
        self._tokens = escalation_burst
        self.stats = RouterStats()

    def on_telemetry(
        self,
        points: Iterable[TelemetryPoint],
        arrivals: int,
        alarms: Mapping[str, str] | None = None,
    ) -> FleetView:
        """A tick of telemetry: refresh forecasts once, then let the policy re-plan."""
        view = self.fleet.tick(points, arrivals, alarms)
        self.policy.on_tick(view)
        return view

    def route(self, request: RouteRequest) -> Decision:
        sla = request.sla_ms
        if sla is not None and not (math.isfinite(sla) and sla > 0):
            raise InvalidRequestError(f"sla_ms must be a positive finite number, got {sla!r}")
        decision = self.policy.route(request)
        stats = self.stats
        stats.routed += 1
        budget = self.escalation_budget
        if budget is not None and self._tokens < self.escalation_burst:
            self._tokens = min(self.escalation_burst, self._tokens + budget)
        if decision.ambiguous:
            stats.ambiguous += 1
            stats.ambiguous_reasons[decision.ambiguous_reason or "unspecified"] += 1
            if self.escalate is not None:
                if budget is None or self._tokens >= 1.0:
                    if budget is not None:
                        self._tokens -= 1.0
                    stats.escalated += 1
                    decision = self.escalate(request, decision)
                else:
                    stats.over_budget += 1
        return decision
