"""The Router: the fast deterministic path, and the door to escalation for ambiguous requests.

Routine requests are answered by the policy from the forecasts cached at the last tick. An
ambiguous request is counted and, when an escalation handler is installed (the router agent),
handed to it; the handler must return a valid decision or the policy's answer stands.
"""

from __future__ import annotations

import math
from collections import Counter, deque
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


ESCALATION_CAP = 0.02
"""At most 2% of requests reach the router agent (issue 11)."""
ESCALATION_WINDOW = 500


class EscalationCap:
    """A hard cap on the share of requests escalated: an escalation is allowed only if, with
    it, escalations stay within `share` of the requests routed so far AND within `share` of the
    last `window` requests. So the share holds at every moment, and a quiet hour does not bank
    a burst (a token bucket's refill would let one through)."""

    __slots__ = ("_recent", "_window", "escalated", "n", "share")

    def __init__(self, share: float | None, window: int = ESCALATION_WINDOW) -> None:
        if window < 1:
            raise ValueError("the escalation window must hold at least one request")
        self.share = share
        self._window = window
        self.n = 0
        self.escalated = 0
        self._recent: deque[int] = deque()

    def routed(self) -> None:
        self.n += 1

    def take(self) -> bool:
        """Whether the current request (already counted by `routed`) may be escalated."""
        if self.share is None:
            self.escalated += 1
            return True
        recent = self._recent
        while recent and recent[0] <= self.n - self._window:
            recent.popleft()
        if (self.escalated + 1) > self.share * self.n:
            return False
        if (len(recent) + 1) > self.share * min(self.n, self._window):
            return False
        self.escalated += 1
        recent.append(self.n)
        return True


class Router:
    def __init__(
        self,
        policy: RoutingPolicy,
        fleet: FleetState,
        escalate: Escalation | None = None,
        escalation_budget: float | None = ESCALATION_CAP,
        escalation_window: int = ESCALATION_WINDOW,
    ) -> None:
        """`escalation_budget`: the largest share of requests that may go to the router agent,
        as a hard cap (`EscalationCap`): never more than that share of the requests routed so
        far, nor of any `escalation_window` consecutive requests, so no burst exceeds it. An
        ambiguous request over the cap takes the policy's answer and is counted in
        `stats.over_budget`. None means every ambiguous request is escalated.
        """
        if escalation_budget is not None and not 0.0 <= escalation_budget <= 1.0:
            raise ValueError("escalation_budget must lie in [0, 1]")
        self.policy = policy
        self.fleet = fleet
        self.escalate = escalate
        self.escalation_window = escalation_window
        self._cap = EscalationCap(escalation_budget, escalation_window)
        self.stats = RouterStats()

    @property
    def escalation_budget(self) -> float | None:
        return self._cap.share

    @escalation_budget.setter
    def escalation_budget(self, share: float | None) -> None:
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError("escalation_budget must lie in [0, 1]")
        self._cap = EscalationCap(share, self.escalation_window)

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
        cap = self._cap
        cap.routed()
        if decision.ambiguous:
            stats.ambiguous += 1
            stats.ambiguous_reasons[decision.ambiguous_reason or "unspecified"] += 1
            if self.escalate is not None:
                if cap.take():
                    stats.escalated += 1
                    decision = self.escalate(request, decision)
                else:
                    stats.over_budget += 1
        return decision
