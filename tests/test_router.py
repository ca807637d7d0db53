import numpy as np
import pytest

from agents.router import InvalidRequestError, Router
from tests.conftest import FLEET, make_view
from tools.policy import PredictivePolicy
from tools.routing import Decision, RouteRequest


class _NoFleet:
    """The router's fleet seam, fed ready-made views (the real FleetState has its own tests)."""

    def __init__(self, views):
        self._views = iter(views)

    def tick(self, points, arrivals, alarms=None):
        return next(self._views)


def make_router(escalate=None, views=()):
    return Router(
        PredictivePolicy(FLEET), _NoFleet(views), escalate=escalate, escalation_budget=None
    )


def test_invalid_sla_is_rejected_before_routing():
    router = make_router()
    for bad in (float("nan"), -5.0, 0.0, float("inf")):
        with pytest.raises(InvalidRequestError):
            router.route(RouteRequest("r", sla_ms=bad))
    assert router.stats.routed == 0


def test_ambiguous_requests_are_counted_and_escalated_only_they():
    seen: list[str] = []

    def escalate(request: RouteRequest, decision: Decision) -> Decision:
        seen.append(request.request_id)
        return decision

    views = [
        make_view(10.0 * (t + 1), {"b0": 120.0, "b1": 150.0, "b2": 90.0, "b3": 130.0})
        for t in range(5)
    ]
    router = make_router(escalate, views)
    for _ in range(5):
        router.on_telemetry([], arrivals=400)
    for i in range(100):
        router.route(RouteRequest(f"s{i}"))
    assert router.stats.ambiguous == 0 and seen == []
    for i in range(10):
        router.route(RouteRequest(f"v{i}", tier="review"))
    assert router.stats.routed == 110
    assert router.stats.ambiguous == 10 and router.stats.ambiguous_reasons["tier_review"] == 10
    assert seen == [f"v{i}" for i in range(10)]
    assert router.stats.ambiguous_pct == pytest.approx(100 * 10 / 110)


def test_escalation_budget_bounds_the_slow_path_and_counts_the_rest():
    escalated: list[str] = []

    def escalate(request: RouteRequest, decision: Decision) -> Decision:
        escalated.append(request.request_id)
        return decision

    views = [make_view(10.0, {"b0": 120.0, "b1": 150.0, "b2": 90.0, "b3": 130.0})]
    router = Router(
        PredictivePolicy(FLEET),
        _NoFleet(views),
        escalate=escalate,
        escalation_budget=0.05,
    )
    router.on_telemetry([], arrivals=400)
    for i in range(2000):
        router.route(RouteRequest(f"v{i}", tier="review"))  # every one is ambiguous
        assert router.stats.escalated <= 0.05 * (i + 1)  # a hard cap: no initial burst
    stats = router.stats
    assert stats.ambiguous == 2000
    # one escalation per twenty requests
    assert stats.escalated == 100
    assert stats.escalated + stats.over_budget == stats.ambiguous
    assert len(escalated) == stats.escalated
    assert stats.escalated_pct == pytest.approx(100 * stats.escalated / 2000)


def test_without_a_budget_every_ambiguous_request_is_escalated():
    seen: list[str] = []
    views = [make_view(10.0, {"b0": 120.0, "b1": 150.0, "b2": 90.0, "b3": 130.0})]
    router = Router(
        PredictivePolicy(FLEET),
        _NoFleet(views),
        escalate=lambda r, d: seen.append(r.request_id) or d,
        escalation_budget=None,
    )
    router.on_telemetry([], arrivals=400)
    for i in range(300):
        router.route(RouteRequest(f"v{i}", tier="review"))
    assert router.stats.escalated == 300 and router.stats.over_budget == 0


def test_the_escalation_cap_is_hard_at_every_moment_and_in_every_window():
    from agents.router import EscalationCap

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
