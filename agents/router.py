"""The Router: the per-request predictive policy, its decisions, and the door to escalation.

One code path for every caller (the simulator's replays, the closed loop, `arcpoint serve`): the
Router wraps a per-request policy (`tools.routers.predictive.PredictiveRouter` in production; any
`tools.routers` policy works, for baselines) and is itself a `RoutingPolicy`, so the simulator
drives it exactly as it drives the baselines. For each request it asks the policy for a backend,
then turns the policy's reasoning into a `Decision` that carries every candidate's probability of
meeting the SLO, its predicted TTFT and end-to-end latency with their 80% intervals, the fleet's
5-minute forecast, and why it was or was not picked. An ambiguous decision is counted and, when
an escalation handler is installed (the router agent) and the hard cap allows, handed to it; the
handler must return a valid decision or the policy's answer stands.

Every telemetry tick (`on_telemetry`) refreshes the fleet state's 5-minute forecasts, hands the
monitors' alarms to the policy (an alarm on the pick makes a decision ambiguous) and, when it
is attached (`prior=True`; off by default, see `Router`), feeds the forecast prior
(`tools.routers.predictive.prior.ForecastPrior`), which reads the fleet state's *active*
forecaster, so a promotion or rollback by the closed loop reaches routing at once.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from context_api.fleet_state import FleetState
from tools.routers.base import (
    BackendProfile,
    Completion,
    EngineMetrics,
    PolicyBase,
    ProbeReply,
    RequestInfo,
    RouterView,
    RoutingPolicy,
)
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.prior import ForecastPrior
from tools.routing import (
    BackendInfo,
    Candidate,
    Decision,
    DeferredDecision,
    FleetView,
    RouteRequest,
)
from tools.telemetry import TelemetryPoint

Escalation = Callable[[RouteRequest, Decision], Decision]

SHARE_DECAY = 0.01
"""Weight of the newest request in each backend's traffic share (about the last 100)."""


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


SERVE_REHEARSALS = 4
"""Requests `arcpoint serve`'s router rehearses after each grid refresh (`Router.rehearse`):
with 4, the request after a refresh costs about what any other does (bench_router)."""

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


class _ActiveForecaster:
    """The fleet state's active forecaster, whichever it is now (None: no forecast)."""

    def __init__(self, fleet: FleetState) -> None:
        self.fleet = fleet

    def predict(self, X: np.ndarray) -> Any:
        model = self.fleet.forecaster
        if model is None:
            nan = np.full(len(X), math.nan)
            return _NoForecast(nan, nan, nan)
        return model.predict(X)


@dataclass(frozen=True)
class _NoForecast:
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


@dataclass(frozen=True, slots=True)
class _Tick:
    telemetry: Sequence[TelemetryPoint]


def predictive_router(
    profiles: Sequence[BackendProfile],
    backends: Sequence[BackendInfo],
    forecaster: Any = None,
    *,
    seed: int = 0,
    settings: Any = None,
    **router_options: Any,
) -> Router:
    """The production router: `PredictiveRouter` over `profiles` (with the shipped latency
    model), its fleet state forecasting with `forecaster`, wrapped in a `Router`."""
    policy = PredictiveRouter(profiles, seed=seed, settings=settings)
    return Router(policy, FleetState(backends, forecaster), **router_options)


def tick_residuals(policy: Any) -> dict[str, tuple[int, float, float]]:
    """Per backend with completions since the last call: (count, mean log-TTFT residual, mean
    log-e2e residual) of the per-request latency model, before its online correction
    (`PredictiveRouter.take_residuals`); empty for a policy without that model. One mean per
    tick, not one value per request: requests completing in one tick share the backend's state
    and are correlated, so a detector must count ticks, not requests."""
    take = getattr(policy, "take_residuals", None)
    if take is None:
        return {}
    names = [b.name for b in policy.backends]
    return {
        name: (n, st / n, se / n) for name, (n, st, se) in zip(names, take(), strict=True) if n > 0
    }


def attach_prior(policy: Any, fleet: FleetState) -> None:
    """Give a predictive policy the 5-minute forecast prior, read from `fleet`'s active model."""
    if hasattr(policy, "prior"):
        policy.prior = ForecastPrior(_ActiveForecaster(fleet), [b.name for b in fleet.backends])


class Router(PolicyBase):
    """The fast path plus escalation, as a `RoutingPolicy` (see the module docstring)."""

    def __init__(
        self,
        policy: RoutingPolicy,
        fleet: FleetState | None = None,
        escalate: Escalation | None = None,
        escalation_budget: float | None = ESCALATION_CAP,
        escalation_window: int = ESCALATION_WINDOW,
        *,
        id_prefix: str = "d",
        start_ts: float | None = None,
        monitor: Any = None,
        keep_decisions: bool = False,
        prior: bool = False,
        rehearse: int = 0,
    ) -> None:
        """`escalation_budget`: the largest share of requests that may go to the router agent,
        as a hard cap (`EscalationCap`): never more than that share of the requests routed so
        far, nor of any `escalation_window` consecutive requests, so no burst exceeds it. An
        ambiguous request over the cap takes the policy's answer and is counted in
        `stats.over_budget`. None means every ambiguous request is escalated.

        `start_ts`: unix time of the environment's clock zero (a replay's start; 0 when the
        view's clock is unix time), so decisions are stamped with their request's arrival; None:
        with the time of the last telemetry tick, the time of the forecast they carry (the
        closed loop's labels are that forecast's target, one horizon later).
        `monitor`: an object with `observe(telemetry) -> alarms` (the fleet monitor), consulted
        every simulated tick. `keep_decisions`: keep each decision by request id until the
        caller pops it (a replay's decision sink). `prior`: attach the 5-minute forecast prior
        (`attach_prior`) when there is a fleet state. Off by default: on the dev seeds it
        hurt cascading_failure (44% violations against 10% without it, seed 950002; README)
        and helped nowhere beyond the seed noise.
        `rehearse`: after each grid refresh, route the last this many requests again on a
        shadow copy of the router (`rehearse`), so the next real request does not pay for
        the caches and branch predictors the refresh's forest walk disturbed. For a server,
        where a request's own latency matters; 0 (off) in replays, where only decisions do.
        """
        if escalation_budget is not None and not 0.0 <= escalation_budget <= 1.0:
            raise ValueError("escalation_budget must lie in [0, 1]")
        self.policy = policy
        self.name = policy.name
        self.scrape_interval_s = getattr(policy, "scrape_interval_s", None)
        self.fleet = fleet
        self.escalate = escalate
        self.escalation_window = escalation_window
        self._cap = EscalationCap(escalation_budget, escalation_window)
        self.stats = RouterStats()
        self.id_prefix = id_prefix
        self.start_ts = start_ts
        self.monitor = monitor
        self.keep_decisions = keep_decisions
        self.decisions: dict[int, Decision] = {}
        """Decisions by request id, while their outcomes are pending (`keep_decisions`)."""
        self.view: FleetView | None = None
        self._n = 0
        self._names: tuple[str, ...] = ()
        self._index: dict[str, int] = {}
        self._shares: list[float] = []
        """Traffic shares over `_scale` (each backend's share is `_shares[b] * _scale`): the
        decay of every share per request is one multiplication of the scale."""
        self._scale = 1.0
        self._predictions = getattr(policy, "deferred_predictions", None)
        self.residuals: dict[str, tuple[int, float, float]] = {}
        """The last tick's routing-model residuals per backend (`tick_residuals`)."""
        if rehearse < 0:
            raise ValueError("rehearse must be >= 0")
        self.rehearsals = rehearse
        self._target: float = getattr(getattr(policy, "settings", None), "target", math.nan)
        """The policy's probability target (its settings are frozen), for decisions' notes."""
        self._recent: deque[RequestInfo] = deque(maxlen=max(rehearse, 1))
        """The last requests routed (`rehearse` routes them again on a shadow)."""
        self.rehearsed = 0
        """Rehearsals run (one per grid refresh that found a shadow to rehearse on)."""
        if prior and fleet is not None:
            attach_prior(policy, fleet)

    @property
    def escalation_budget(self) -> float | None:
        return self._cap.share

    @escalation_budget.setter
    def escalation_budget(self, share: float | None) -> None:
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError("escalation_budget must lie in [0, 1]")
        self._cap = EscalationCap(share, self.escalation_window)

    # -- signals, passed through to the policy ----------------------------------------------------
    def on_telemetry(
        self,
        points: Iterable[TelemetryPoint],
        arrivals: int,
        alarms: Mapping[str, str] | None = None,
    ) -> FleetView | None:
        """A tick of telemetry: refresh the forecasts once, hand the alarms and the tick to the
        policy (its forecast prior re-forecasts)."""
        points = list(points)
        if self.fleet is not None:
            self.view = self.fleet.tick(points, arrivals, alarms)
            alarms = self.fleet.alarms
        if alarms is not None and hasattr(self.policy, "alarms"):
            self.policy.alarms = dict(alarms)  # type: ignore[attr-defined]
        on_tick = getattr(self.policy, "on_tick", None)
        if on_tick is not None:
            on_tick(_Tick(points))
        self.residuals = tick_residuals(self.policy)
        return self.view

    def warm(self, ticks: Iterable[Sequence[TelemetryPoint]]) -> None:
        """Replay recent ticks of telemetry into the fleet state and the forecast prior (a new
        experiment arm's router), then refresh the view once."""
        on_tick = getattr(self.policy, "on_tick", None)
        for points in ticks:
            if self.fleet is not None:
                self.fleet.ingest(points)
            if on_tick is not None:
                on_tick(_Tick(points))
        if self.fleet is not None:
            self.view = self.fleet.refresh(0)

    def on_tick(self, tick: Any) -> None:
        """A simulated tick (`tools.sim.run.SimTick`): the monitor's alarms, then the telemetry."""
        alarms = self.monitor.observe(tick.telemetry) if self.monitor is not None else None
        self.on_telemetry(tick.telemetry, tick.arrivals, alarms)

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        if self.rehearsals:
            self._then_rehearse(self.policy.on_complete, completion, view)
        else:
            self.policy.on_complete(completion, view)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        if self.rehearsals:
            self._then_rehearse(self.policy.on_scrape, metrics, view)
        else:
            self.policy.on_scrape(metrics, view)

    def _then_rehearse(
        self, handler: Callable[[Any, RouterView], None], signal: Any, view: RouterView
    ) -> None:
        """Hand a signal to the policy, then rehearse if it refreshed the grids."""
        before = getattr(self.policy, "refreshes", 0)
        handler(signal, view)
        if getattr(self.policy, "refreshes", 0) != before:
            self.rehearse(view)

    def rehearse(self, view: RouterView) -> None:
        """Route the last `rehearsals` requests again on a shadow of this router (the
        policy's `shadow()`: its own copy of everything a decision writes; no escalation, no
        counts), off the request path. Why: a grid refresh walks the forest over hundreds of
        rows in compiled code, which leaves the CPU's caches and branch predictors trained on
        that walk; the real request after it then ran about twice as slow, and these were
        most of the slowest 1% (`benchmarks/bench_router.py`, `route_slowest1pct_*`). The
        rehearsal runs the same code on the same data first. Decisions are unchanged
        (`tests/test_router_rehearsal.py` checks it)."""
        make = getattr(self.policy, "shadow", None)
        if not self._recent or make is None:
            return
        policy = make()
        if policy is None:
            return
        sh = copy.copy(self)
        sh.policy = policy
        sh.escalate = None
        sh.rehearsals = 0
        sh.stats = RouterStats()
        sh._cap = EscalationCap(self._cap.share, self.escalation_window)
        sh._shares = self._shares[:]
        sh.decisions = {}
        sh._recent = deque(maxlen=1)
        sh._predictions = getattr(policy, "deferred_predictions", None)
        for req in tuple(self._recent):
            sh.route(req, view)
        self.rehearsed += 1

    def on_probe(self, reply: ProbeReply, view: RouterView) -> None:
        self.policy.on_probe(reply, view)

    @property
    def forecasts(self) -> dict[str, float]:
        """The 5-minute forecasts the last tick left (ms, per backend)."""
        if self.view is None:
            return {}
        return {b.name: b.forecast_ms for b in self.view.backends}

    @property
    def shares(self) -> dict[str, float]:
        """Each backend's share of the router's recent requests (an exponential average)."""
        w = self._scale
        return {name: x * w for name, x in zip(self._names, self._shares, strict=True)}

    # -- the hot path -----------------------------------------------------------------------------
    def choose(self, request: RequestInfo, view: RouterView) -> int:
        """The simulator's entry: `route`, keeping the decision when asked to. Without
        `keep_decisions` a `Decision` is built only for a request that escalates (the pick and
        the counts are `route`'s; the candidates' predictions would be read by no one)."""
        if self.keep_decisions:
            d = self.route(request, view)
            self.decisions[request.request_id] = d
            return self._index[d.backend]
        pick = self._pick(request, view)
        choice = getattr(self.policy, "last", None)
        amb = getattr(choice, "ambiguous", None)
        if self._count(amb) and self.escalate is not None:
            d = self._decision(request, view, pick, choice, amb, None)
            routed = self._index[self.escalate(self._request_of(d, None), d).backend]
            self._rerouted(request, view, pick, routed)
            return routed
        return pick

    def route(
        self,
        request: RequestInfo,
        view: RouterView,
        *,
        request_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        review: bool = False,
    ) -> Decision:
        """Route one request and escalate it if it is ambiguous and the cap allows.

        `request_id`: the caller's id (default: the request's number); `metadata`: caller text,
        data only, passed to the agent as quoted tool results; `review`: the request's tier asks
        for review (ambiguous whatever the policy says)."""
        slo = request.ttft_slo_ms
        if not (math.isfinite(slo) and slo > 0):
            raise InvalidRequestError(f"sla_ms must be a positive finite number, got {slo!r}")
        pick = self._pick(request, view)
        choice = getattr(self.policy, "last", None)
        amb = "tier_review" if review else getattr(choice, "ambiguous", None)
        decision = self._decision(request, view, pick, choice, amb, request_id)
        if self._count(amb) and self.escalate is not None:
            decision = self.escalate(self._request_of(decision, metadata), decision)
            routed = self._index.get(decision.backend, pick)
            self._rerouted(request, view, pick, routed)
        return decision

    def _rerouted(self, request: RequestInfo, view: RouterView, pick: int, routed: int) -> None:
        """The agent sent the request elsewhere than the policy's pick: the policy's bookkeeping
        (requests in flight, hysteresis) and the traffic shares count where it went."""
        if routed == pick:
            return
        shares = self._shares
        step = SHARE_DECAY / self._scale
        shares[pick] -= step
        shares[routed] += step
        reroute = getattr(self.policy, "reroute", None)
        if reroute is not None:
            reroute(request, view, routed)

    def _decision(
        self,
        request: RequestInfo,
        view: RouterView,
        pick: int,
        choice: Any,
        amb: str | None,
        request_id: str | None,
    ) -> Decision:
        start = self.start_ts
        if start is not None:
            ts = start + request.arrival_s
        elif self.view is not None:
            ts = self.view.ts
        else:
            ts = request.arrival_s
        self._n += 1
        pred = self._predictions
        return DeferredDecision.deferred(
            partial(
                _candidates,
                self._names,
                pick,
                choice,
                pred(request, view) if pred is not None else None,
                self._target,
                self._shares[:],
                self._scale,
                self.view,
            ),
            # positional, in the order of `deferred`'s parameters (keywords cost per call)
            f"{self.id_prefix}{self._n}",
            request_id if request_id is not None else str(request.request_id),
            ts,
            self._names[pick],
            self.name,
            getattr(choice, "reason", "") or self.name,
            request.ttft_slo_ms,
            request.tier,
            amb is not None,
            amb,
            self.view.model_version if self.view is not None else None,
        )

    @staticmethod
    def _request_of(d: Decision, metadata: Mapping[str, str] | None) -> RouteRequest:
        """The request as the router agent sees it (caller text is data, never instructions)."""
        return RouteRequest(d.request_id, d.tier, d.sla_ms, metadata or {}, d.ts)

    def _pick(self, request: RequestInfo, view: RouterView) -> int:
        if not self._names:
            self._names = tuple(b.name for b in view.backends)
            self._index = {n: i for i, n in enumerate(self._names)}
            self._shares = [1.0 / len(self._names)] * len(self._names)
        pick = self.policy.choose(request, view)
        self._recent.append(request)
        w = self._scale * _KEEP
        if w < 1e-200:  # renormalise long before the scale underflows
            self._shares[:] = [x * w for x in self._shares]
            w = 1.0
        self._scale = w
        self._shares[pick] += SHARE_DECAY / w
        return pick

    def _count(self, ambiguous_reason: str | None) -> bool:
        """Count a routed request; True when it is ambiguous and the cap lets it escalate."""
        stats = self.stats
        stats.routed += 1
        cap = self._cap
        cap.routed()
        if ambiguous_reason is None:
            return False
        stats.ambiguous += 1
        stats.ambiguous_reasons[ambiguous_reason] += 1
        if self.escalate is None:
            return False
        if cap.take():
            stats.escalated += 1
            return True
        stats.over_budget += 1
        return False


_KEEP = 1.0 - SHARE_DECAY


def _candidates(
    names: tuple[str, ...],
    pick: int,
    choice: Any,
    pred: Callable[[], list[dict[str, float]]] | None,
    target: float,
    shares: list[float],
    scale: float,
    fv: FleetView | None,
) -> tuple[Candidate, ...]:
    """Every candidate of a decision, with the reason it was or was not picked: built when the
    decision is first read, from what the pick computed (its probabilities, costs and
    ejections, the grid it read) and copies of the state that moves on (traffic shares), so
    the request path pays for a few list copies only."""
    n = len(names)
    fc = fv.backends if fv is not None and len(fv.backends) == n else None
    p = getattr(choice, "p", None) or [math.nan] * n
    ejected = getattr(choice, "ejected", None) or [False] * n
    cost = getattr(choice, "cost", None) or [math.nan] * n
    drawn = getattr(choice, "drawn", None)
    predicted = pred() if pred is not None else [{}] * n
    out = []
    nan = math.nan
    for b in range(n):
        if b == pick:
            note = "chosen"
        elif choice is None:
            note = ""
        elif ejected[b]:
            note = "ejected"
        elif drawn is not None and b not in drawn:
            note = "not_drawn"
        elif p[b] < target:
            note = "below_target"
        elif p[b] < p[pick]:
            note = "less_likely"
        else:
            note = "costlier"
        q = predicted[b]
        f = fc[b] if fc is not None else None
        out.append(
            Candidate(
                names[b],
                f.forecast_ms if f is not None else nan,
                f.forecast_lo_ms if f is not None else nan,
                f.forecast_hi_ms if f is not None else nan,
                cost[b],
                shares[b] * scale,
                bool(ejected[b]),
                p[b],
                q.get("ttft_ms", nan),
                q.get("ttft_lo_ms", nan),
                q.get("ttft_hi_ms", nan),
                q.get("e2e_ms", nan),
                q.get("e2e_lo_ms", nan),
                q.get("e2e_hi_ms", nan),
                note,
            )
        )
    return tuple(out)
