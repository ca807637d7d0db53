"""The predictive router behind the per-request interface, unchanged inside.

`tools.policy.PredictivePolicy` plans a traffic split once per telemetry tick from the
forecaster's 5-minute forecasts and answers each request from that split; `agents.Router` adds
the escalation of ambiguous requests. This adapter drives them as they run in production: every
tick (10 s) the tick's router-side telemetry refreshes the fleet state's forecasts (and the
fleet monitor's alarms, when one is attached) and the policy re-plans; every request is routed
through `Router.route`. Nothing in the policy changes; it is configured for this fleet:

* its latency figures are the router-side TTFT quantiles the telemetry carries, so each tier's
  SLA is the tier's TTFT limit (`tools.sim.workload.TIERS`);
* a backend's cost per request is the price of the workload's mean request there, and its
  capacity (which the policy's queueing model needs) is `tools.sim.spec.capacity_rps` for the
  workload's token mix: what an operator who knows the fleet and the traffic would configure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agents.router import Router
from context_api.fleet_state import FleetState
from tools.policy import PredictiveConfig, PredictivePolicy
from tools.routers.base import PolicyBase, RequestInfo, RouterView
from tools.routing import Decision, FleetView, RouteRequest, Tier
from tools.sim.run import SimTick
from tools.sim.spec import REFERENCE_TOKENS, EngineSpec, TokenStats, backend_infos
from tools.sim.workload import TIERS

__all__ = ["PredictiveAdapter", "backend_infos", "ttft_tiers"]


def ttft_tiers() -> dict[str, Tier]:
    return {t.name: Tier(t.name, t.ttft_slo_ms) for t in TIERS}


class PredictiveAdapter(PolicyBase):
    """`predictive`: the forecast-driven policy and its Router as a `RoutingPolicy`."""

    name = "predictive"

    def __init__(
        self,
        fleet: Sequence[EngineSpec],
        forecaster: Any,
        *,
        stats: TokenStats = REFERENCE_TOKENS,
        escalate: Callable[[RouteRequest, Decision], Decision] | None = None,
        monitor: Any = None,
        id_prefix: str = "d",
        keep_decisions: bool = False,
        start_ts: float | None = None,
        router: Any = None,
    ) -> None:
        infos = backend_infos(fleet, stats)
        self.fleet_state = FleetState(infos, forecaster)
        standard = next(t for t in TIERS if t.name == "standard")
        self.policy = PredictivePolicy(
            infos,
            config=PredictiveConfig(sla_ms=standard.ttft_slo_ms),
            tiers=ttft_tiers(),
            id_prefix=id_prefix,
        )
        self.router = router or Router(self.policy, self.fleet_state, escalate=escalate)
        self.monitor = monitor
        self.keep_decisions = keep_decisions
        self.start_ts = start_ts
        """Unix time of the run's start: a decision is stamped with its request's arrival (None:
        with the time of the last tick, as the policy would on its own)."""
        self.decisions: dict[int, Decision] = {}
        """Decisions by request id, while their outcomes are pending (`keep_decisions`)."""
        self.view: FleetView | None = None
        self._index = {s.name: i for i, s in enumerate(fleet)}
        self._route = self.router.route

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        arrived = None if self.start_ts is None else self.start_ts + view.now_s
        d = self._route(RouteRequest(str(request.request_id), tier=request.tier, ts=arrived))
        if self.keep_decisions:
            self.decisions[request.request_id] = d
        return self._index[d.backend]

    def on_tick(self, tick: SimTick) -> None:  # type: ignore[override]
        alarms = self.monitor.observe(tick.telemetry) if self.monitor is not None else None
        self.view = self.router.on_telemetry(tick.telemetry, arrivals=tick.arrivals, alarms=alarms)

    @property
    def forecasts(self) -> dict[str, float]:
        """The forecasts the last tick left (ms, per backend)."""
        if self.view is None:
            return {}
        return {b.name: b.forecast_ms for b in self.view.backends}
