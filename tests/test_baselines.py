from collections import Counter

from tests.conftest import FLEET, make_view
from tools.baselines import (
    BASELINES,
    LeastLoadedPolicy,
    OutlierEjectionPolicy,
    PeakEwmaPolicy,
    RoundRobinPolicy,
    StaticPolicy,
)
from tools.routing import RouteRequest

CALM = {"b0": 120.0, "b1": 150.0, "b2": 90.0, "b3": 130.0}


def route_n(policy, n):
    return [policy.route(RouteRequest(f"r{i}")).backend for i in range(n)]


def test_every_baseline_routes_to_a_known_backend_with_its_name():
    for name, cls in BASELINES.items():
        policy = cls(FLEET)
        policy.on_tick(make_view(10.0, CALM))
        d = policy.route(RouteRequest("r1"))
        assert d.policy == name and d.backend in {"b0", "b1", "b2", "b3"}
        assert d.sla_ms == 300.0 and not d.ambiguous


def test_static_sends_everything_to_the_primary_even_when_it_fails():
    policy = StaticPolicy(FLEET)
    policy.on_tick(make_view(10.0, CALM, errors={"b0": 1.0}))
    assert set(route_n(policy, 100)) == {"b0"}


def test_round_robin_cycles():
    assert route_n(RoundRobinPolicy(FLEET), 8) == ["b0", "b1", "b2", "b3"] * 2


def test_outlier_ejection_ejects_after_consecutive_failures_for_base_time_times_count():
    policy = OutlierEjectionPolicy(FLEET, base_ejection_s=30.0)
    policy.on_tick(make_view(10.0, CALM))
    for _ in range(4):
        policy.observe("b1", 100.0, ok=False)
    assert "b1" in route_n(policy, 8)  # four failures are not enough
    policy.observe("b1", 100.0, ok=False)
    assert "b1" not in route_n(policy, 40)
    policy.on_tick(make_view(30.0, CALM))
    assert "b1" not in route_n(policy, 40)  # 20 s later: still out
    policy.on_tick(make_view(40.0, CALM))
    assert "b1" in route_n(policy, 8)  # 30 s later: back
    for _ in range(5):
        policy.observe("b1", 100.0, ok=False)
    policy.on_tick(make_view(90.0, CALM))
    assert "b1" not in route_n(policy, 40)  # second ejection: 60 s
    policy.on_tick(make_view(100.0, CALM))
    assert "b1" in route_n(policy, 8)


def test_outlier_ejection_counts_slow_replies_and_respects_max_ejection_percent():
    policy = OutlierEjectionPolicy(FLEET, slow_ms=300.0, max_ejection_percent=50.0)
    policy.on_tick(make_view(10.0, CALM))
    for b in ("b0", "b1", "b2"):
        for _ in range(5):
            policy.observe(b, 900.0, ok=True)
    routed = set(route_n(policy, 40))
    assert len(routed) == 2  # at most half the fleet is ejected


def test_peak_ewma_prefers_the_faster_backend_and_reacts_to_a_slow_reply_at_once():
    policy = PeakEwmaPolicy(FLEET, seed=1)
    policy.on_tick(make_view(10.0, CALM))
    for b, lat in (("b0", 100.0), ("b1", 400.0), ("b2", 100.0), ("b3", 100.0)):
        policy.observe(b, lat, ok=True)
    counts = Counter(route_n(policy, 4000))
    assert counts["b1"] < counts["b0"] / 2
    policy.observe("b0", 2000.0, ok=True)  # one slow reply lifts b0's EWMA to its peak
    counts = Counter(route_n(policy, 4000))
    assert counts["b0"] < counts["b2"] / 2


def test_least_loaded_balances_outstanding_requests():
    policy = LeastLoadedPolicy(FLEET)
    policy.on_tick(make_view(10.0, CALM, arrivals=400))
    counts = Counter(route_n(policy, 4000))
    assert max(counts.values()) - min(counts.values()) <= len(FLEET)
