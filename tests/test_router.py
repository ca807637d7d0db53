"""The Router around the per-request predictive policy: decisions, ambiguity, escalation cap."""

import math
from dataclasses import replace

import numpy as np
import pytest

from agents.router import EscalationCap, InvalidRequestError, Router
from tests.conftest import FLEET, make_view
from tests.router_fakes import FakeView, completion
from tools.routers.base import BackendProfile, RequestInfo
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.policy import REASONS
from tools.routing import Decision, RouteRequest

PRICES = [3.0, 1.0, 2.0, 1.5]


def profiles() -> list[BackendProfile]:
    return [BackendProfile(f"b{i}", p / 1000, 2 * p / 1000) for i, p in enumerate(PRICES)]


class _Fleet:
    """The router's fleet seam, fed ready-made views (the real FleetState has its own tests)."""

    def __init__(self, views) -> None:
        self._views = iter(views)
        self.alarms: dict[str, str] = {}
        self.backends = FLEET
        self.forecaster = None

    def tick(self, points, arrivals, alarms=None):
        if alarms is not None:
            self.alarms = dict(alarms)
        return next(self._views)


def make_router(escalate=None, budget=None, views=(), **settings) -> tuple[Router, FakeView]:
    policy = PredictiveRouter(profiles(), explore_s=1e9, **{"choices": 0, **settings})
    router = Router(policy, _Fleet(views), escalate=escalate, escalation_budget=budget)
    view = FakeView(len(PRICES), now_s=1.0)
    view.backends = profiles()
    for b in range(len(PRICES)):  # every backend answered once, quickly
        router.on_complete(completion(b, at=1.0, e2e_ms=900.0, ttft_ms=120.0, rid=-1 - b), view)
    return router, view


def req(rid: int, tier: str = "standard", ttft_slo: float = 1000.0) -> RequestInfo:
    return RequestInfo(rid, 1.0, 512, tier, ttft_slo, 30_000.0)


def test_invalid_slo_is_rejected_before_routing():
    router, view = make_router()
    for bad in (float("nan"), -5.0, 0.0, float("inf")):
        with pytest.raises(InvalidRequestError):
            router.route(RequestInfo(1, 1.0, 512, "standard", bad, 30_000.0), view)
    assert router.stats.routed == 0


def test_a_decision_carries_every_candidate_with_its_prediction_interval_and_reason():
    views = [make_view(10.0, {"b0": 400.0, "b1": 300.0, "b2": 350.0, "b3": 900.0})]
    router, view = make_router(views=views)
    router.on_telemetry([], arrivals=100)
    d = router.route(req(7), view, request_id="caller-7", metadata={"k": "v"})
    assert d.request_id == "caller-7" and d.policy == "predictive" and d.reason in REASONS
    assert d.sla_ms == 1000.0 and d.ts == 10.0  # the time of the tick whose forecast it carries
    assert [c.backend for c in d.candidates] == ["b0", "b1", "b2", "b3"]
    chosen = d.chosen
    assert chosen is not None and chosen.note == "chosen"
    assert {c.note for c in d.candidates if c is not chosen} <= {
        "ejected",
        "below_target",
        "less_likely",
        "costlier",
    }
    for c in d.candidates:
        assert 0.0 < c.p_meet_slo < 1.0
        assert c.ttft_lo_ms < c.ttft_ms < c.ttft_hi_ms
        assert c.e2e_lo_ms < c.e2e_ms < c.e2e_hi_ms
        assert c.cost_per_request > 0 and not c.ejected
    # the 5-minute forecast the fleet state refreshed at the tick travels with the decision
    assert [c.forecast_ms for c in d.candidates] == [400.0, 300.0, 350.0, 900.0]
    # with every backend as fast, price decides: b1 is the cheapest
    assert d.backend == "b1" and d.reason == "cheapest_likely"
    assert math.isclose(sum(c.share for c in d.candidates), 1.0)


def test_an_alarm_on_the_pick_makes_it_ambiguous_and_only_ambiguous_requests_escalate():
    seen: list[str] = []

    def escalate(request: RouteRequest, decision: Decision) -> Decision:
        seen.append(request.request_id)
        return decision

    views = [
        make_view(10.0 * (t + 1), {"b0": 400.0, "b1": 300.0, "b2": 350.0, "b3": 900.0})
        for t in range(2)
    ]
    router, view = make_router(escalate, views=views)
    router.on_telemetry([], arrivals=100)
    for i in range(50):
        d = router.route(req(i), view)
        assert not d.ambiguous
    assert seen == [] and router.stats.ambiguous == 0
    router.on_telemetry([], arrivals=100, alarms={"b1": "anomaly"})
    d = router.route(req(100), view)
    assert d.backend == "b1" and d.ambiguous and d.ambiguous_reason == "alarm_on_pick"
    assert seen == ["100"]
    d = router.route(req(101, tier="review"), view, review=True)
    assert d.ambiguous_reason == "tier_review"
    assert router.stats.ambiguous_reasons == {"alarm_on_pick": 1, "tier_review": 1}
    assert router.stats.routed == 52


def test_the_escalation_budget_bounds_the_slow_path_and_counts_the_rest():
    escalated: list[str] = []
    router, view = make_router(lambda r, d: escalated.append(r.request_id) or d, budget=0.05)
    for i in range(2000):
        router.route(req(i), view, review=True)  # every one is ambiguous
        assert router.stats.escalated <= 0.05 * (i + 1)  # a hard cap: no initial burst
    stats = router.stats
    assert stats.ambiguous == 2000 and stats.escalated == 100
    assert stats.escalated + stats.over_budget == stats.ambiguous
    assert len(escalated) == stats.escalated
    assert stats.escalated_pct == pytest.approx(100 * stats.escalated / 2000)


def test_without_a_budget_every_ambiguous_request_is_escalated():
    seen: list[str] = []
    router, view = make_router(lambda r, d: seen.append(r.request_id) or d, budget=None)
    for i in range(300):
        router.route(req(i), view, review=True)
    assert router.stats.escalated == 300 and router.stats.over_budget == 0


def test_the_simulators_entry_picks_what_route_picks_and_keeps_decisions_when_asked():
    a, view_a = make_router()
    b, view_b = make_router()
    b.keep_decisions = True
    for i in range(200):
        slo = 500.0 if i % 3 else 1000.0
        pa = a.choose(req(i, ttft_slo=slo), view_a)
        pb = b.choose(req(i, ttft_slo=slo), view_b)
        assert pa == pb
        view_a.in_flight[pa] += 1
        view_b.in_flight[pb] += 1
        assert b.decisions[i].backend == f"b{pb}"
    assert a.stats.routed == b.stats.routed == 200
    assert a.stats.ambiguous == b.stats.ambiguous


def test_a_baseline_behind_the_router_gets_decisions_without_predictions():
    from tools.routers.registry import make_policy

    router = Router(make_policy("least_request", profiles(), seed=1))
    view = FakeView(len(PRICES), now_s=1.0)
    d = router.route(req(1), view)
    assert d.policy == "least_request" and d.reason == "least_request" and not d.ambiguous
    assert all(math.isnan(c.p_meet_slo) for c in d.candidates)


def test_the_escalation_cap_is_hard_at_every_moment_and_in_every_window():
    cap = EscalationCap(0.02, window=500)
    allowed = []
    for i in range(20_000):
        cap.routed()
        # a long quiet stretch, then every request ambiguous: a bucket would release a burst
        if i >= 10_000 and cap.take():
            allowed.append(i)
        assert cap.escalated <= 0.02 * cap.n
    arr = np.asarray(allowed)
    for start in range(10_000, 20_000 - 500, 50):
        assert ((arr >= start) & (arr < start + 500)).sum() <= 10
    assert len(allowed) >= 190  # the cap is used, not starved: about 2% of the last 10,000
    first = EscalationCap(0.02)
    first.routed()
    assert not first.take()  # the first request cannot be 2% of one


def test_an_overriding_agent_s_backend_is_what_the_router_counts():
    def escalate(request: RouteRequest, decision: Decision) -> Decision:
        return replace(decision, backend="b3")  # the agent overrides the policy's b1

    views = [make_view(10.0, {"b0": 400.0, "b1": 300.0, "b2": 350.0, "b3": 900.0})]
    router, view = make_router(escalate, views=views)
    policy = router.policy
    d = router.route(req(1), view, review=True)
    assert d.backend == "b3"
    assert policy.tracker.routed_since_scrape == [0, 0, 0, 1]
    assert policy.pref["standard"] == 3 and policy.last.backend == 3
    shares = router.shares
    assert shares["b3"] > shares["b1"] and math.isclose(sum(shares.values()), 1.0)
    # the simulator's entry (an alarm on b1 makes its pick ambiguous) counts it there too
    router.on_telemetry([], arrivals=10, alarms={"b1": "anomaly"})
    policy.pref.clear()
    assert router.choose(req(2), view) == 3
    assert policy.tracker.routed_since_scrape == [0, 0, 0, 2]
    # a backend the two random choices did not draw says so, not "costlier"
    router.policy.settings = replace(policy.settings, choices=2)
    d = router.route(req(3), view, review=True)
    notes = [c.note for c in d.candidates]
    assert notes.count("not_drawn") == 2 and notes.count("chosen") == 1
