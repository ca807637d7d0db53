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
    ambiguous_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def ambiguous_pct(self) -> float:
        return 100.0 * self.ambiguous / self.routed if self.routed else 0.0


class InvalidRequestError(ValueError):
    pass


class Router:
    def __init__(
        self,
        policy: RoutingPolicy,
        fleet: FleetState,
        escalate: Escalation | None = None,
    ) -> None:
        self.policy = policy
        self.fleet = fleet
        self.escalate = escalate
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
        if decision.ambiguous:
            stats.ambiguous += 1
            stats.ambiguous_reasons[decision.ambiguous_reason or "unspecified"] += 1
            if self.escalate is not None:
                stats.escalated += 1
                decision = self.escalate(request, decision)
        return decision
