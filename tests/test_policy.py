import numpy as np
import pytest

from tests.conftest import FLEET, make_view
from tools.policy import PredictiveConfig, PredictivePolicy
from tools.routing import BackendInfo, RouteRequest

CALM = {"b0": 120.0, "b1": 150.0, "b2": 90.0, "b3": 130.0}
# The same fleet with provisioned capacities (requests/s): the policy can then judge how
# latency moves with the load it sends.
SIZED = tuple(
    BackendInfo(b.name, b.cost_per_request, c) for b, c in zip(FLEET, (30, 12, 20, 16), strict=True)
)


def route_many(policy, n, tier="standard"):
    return [policy.route(RouteRequest(f"r{i}", tier=tier)) for i in range(n)]


def shares_of(decisions):
    names = [d.backend for d in decisions]
    return {b: names.count(b) / len(names) for b in ("b0", "b1", "b2", "b3")}


def tick(policy, ts, errors=None, alarms=None, arrivals=400, **over):
    """One tick in which each backend's load follows the policy's own split."""
    f = dict(CALM)
    f.update(over)
    rps = {name: arrivals / 10.0 * share for name, share in policy.shares.items()}
    policy.on_tick(make_view(ts, f, rps=rps, errors=errors, alarms=alarms, arrivals=arrivals))


def settle(policy, ticks=15, start=10.0, **over):
    for t in range(ticks):
        tick(policy, start + 10.0 * t, **over)


@pytest.fixture(params=["forecast_caps", "capacity_model"])
def policy(request):
    return PredictivePolicy(FLEET if request.param == "forecast_caps" else SIZED)


def test_cheapest_backend_takes_traffic_first_when_all_are_within_sla(policy):
    settle(policy)
    decisions = route_many(policy, 1000)
    share = shares_of(decisions)
    # b1 is the cheapest (0.5/request) and forecast well within the SLA: it carries traffic
    # and is labelled so; the most expensive backend (b2) carries the least.
    assert share["b1"] > 0.2
    assert {d.reason for d in decisions if d.backend == "b1"} == {"cheapest_within_sla"}
    assert share["b2"] == min(share.values())


def test_forecast_breach_moves_traffic_before_it_happens(policy):
    settle(policy)
    before = shares_of(route_many(policy, 1000))["b1"]
    # b1's forecast now says it will be at twice the SLA in 5 minutes.
    tick(policy, 1000.0, b1=(600.0, 500.0, 700.0))
    after = shares_of(route_many(policy, 1000))["b1"]
    assert after < before * 0.8


def test_failing_backend_is_ejected_for_base_time_times_count():
    policy = PredictivePolicy(SIZED, PredictiveConfig(base_ejection_s=30.0))
    settle(policy)
    tick(policy, 200.0, errors={"b1": 0.9})
    assert "b1" not in {d.backend for d in route_many(policy, 500)}
    tick(policy, 220.0)  # 20 s later: still out
    assert "b1" not in {d.backend for d in route_many(policy, 500)}
    settle(policy, ticks=6, start=230.0)  # 30 s later: back
    assert "b1" in {d.backend for d in route_many(policy, 500)}
    tick(policy, 300.0, errors={"b1": 0.9})  # a second ejection lasts twice as long
    tick(policy, 350.0)
    assert "b1" not in {d.backend for d in route_many(policy, 500)}
    tick(policy, 360.0)
    assert "b1" in {d.backend for d in route_many(policy, 2000)}


def test_hysteresis_keeps_a_pulled_backend_from_growing_until_clearly_under_sla():
    policy = PredictivePolicy(FLEET)
    settle(policy)
    tick(policy, 500.0, b1=(330.0, 300.0, 360.0))
    cut = policy.shares["b1"]
    # The forecast is back under target but the interval still reaches 290 ms (> 0.9 x SLA):
    # b1 does not grow back.
    settle(policy, ticks=5, start=510.0, b1=(150.0, 120.0, 290.0))
    assert policy.shares["b1"] <= cut + 0.01
    settle(policy, ticks=10, start=600.0)
    assert policy.shares["b1"] > cut + 0.05


def test_a_readmitted_backend_takes_traffic_back_gradually(policy):
    policy.config = PredictiveConfig(max_share_step=0.1, base_ejection_s=10.0)
    settle(policy)
    tick(policy, 500.0, errors={"b1": 1.0})
    assert policy.shares["b1"] == 0.0
    seen = [0.0]
    for t in range(8):
        tick(policy, 510.0 + 10 * t)
        seen.append(policy.shares["b1"])
    assert np.diff(seen).max() <= 0.1 + 1e-9
    assert seen[-1] > 0.1  # and it does come back


def test_capacity_model_balances_forecast_latency_when_the_fleet_runs_hot():
    policy = PredictivePolicy(SIZED)
    # Heavy demand: 50 of 78 requests/s of capacity. Every backend's forecast is past target,
    # so the split balances forecast latency instead: the backend forecast worst gets less.
    settle(policy, arrivals=500, b0=400.0, b1=420.0, b2=380.0, b3=900.0)
    share = policy.shares
    load_fraction = {b.name: share[b.name] * 50.0 / b.capacity_rps for b in SIZED}
    assert load_fraction["b3"] < min(v for k, v in load_fraction.items() if k != "b3")


def test_ambiguity_reasons(policy):
    settle(policy)
    assert not any(d.ambiguous for d in route_many(policy, 200))
    # Every backend forecast past the SLA: no backend within SLA; the split is kept.
    tick(policy, 1000.0, b0=400.0, b1=400.0, b2=450.0, b3=500.0)
    ds = route_many(policy, 50)
    assert all(d.ambiguous and d.ambiguous_reason == "no_backend_within_sla" for d in ds)
    assert len({d.backend for d in ds}) > 1  # no herding onto one backend
    premium = route_many(policy, 20, tier="premium")
    assert {d.backend for d in premium} == {"b0"}  # a strict tier: the best forecast
    # A tier that asks for review is always ambiguous.
    assert all(d.ambiguous_reason == "tier_review" for d in route_many(policy, 20, tier="review"))


def test_straddling_interval_is_ambiguous_when_a_safer_backend_exists():
    policy = PredictivePolicy(FLEET)
    # A forecast of 290 ms with a 90% interval of 200-380 ms: about a 40% chance of breaching.
    coin_flip = (290.0, 200.0, 380.0)
    settle(policy, b1=coin_flip)
    # The cheap b1 is a coin flip while b0, b2 and b3 are confidently within: cost against
    # risk, so b1's requests are flagged and the others' are not.
    ds = route_many(policy, 500)
    on_b1 = [d for d in ds if d.backend == "b1"]
    assert on_b1 and all(d.ambiguous_reason == "interval_straddles_sla" for d in on_b1)
    assert not any(d.ambiguous for d in ds if d.backend != "b1")
    # Every backend a coin flip: a fleet-wide capacity question, not a per-request one.
    settle(policy, ticks=2, start=500.0, **{n: coin_flip for n in ("b0", "b1", "b2", "b3")})
    assert not any(d.ambiguous for d in route_many(policy, 500))
    # A wide interval whose mean is far under the SLA is not a coin flip.
    wide = {n: (120.0, 20.0, 320.0) for n in ("b0", "b1", "b2", "b3")}
    settle(policy, ticks=2, start=600.0, **wide)
    assert not any(d.ambiguous for d in route_many(policy, 500))


def test_alarm_and_failing_backend_make_its_requests_ambiguous():
    policy = PredictivePolicy(FLEET)
    settle(policy)
    tick(policy, 2000.0, alarms={"b1": "drift"})
    on_b1 = [d for d in route_many(policy, 500) if d.backend == "b1"]
    assert on_b1 and all(d.ambiguous_reason == "alarm:drift" for d in on_b1)
    tick(policy, 2010.0, errors={"b1": 0.1})
    on_b1 = [d for d in route_many(policy, 500) if d.backend == "b1"]
    assert on_b1 and all(d.ambiguous_reason == "failing_backend" for d in on_b1)


def test_stricter_tier_avoids_backends_over_its_sla():
    policy = PredictivePolicy(FLEET)
    settle(policy, b1=270.0)  # fine for standard (300 ms), not for premium (250 ms)
    premium = route_many(policy, 500, tier="premium")
    assert "b1" not in {d.backend for d in premium}
    assert all(d.sla_ms == 250.0 for d in premium)
    custom = policy.route(RouteRequest("x", sla_ms=100.0))
    assert custom.sla_ms == 100.0 and custom.backend == "b2"


def test_batch_routing_matches_one_by_one(policy):
    other = PredictivePolicy(policy.backends)
    for p in (policy, other):
        settle(p)
        tick(p, 1000.0, alarms={"b1": "anomaly"})
    one_by_one = route_many(policy, 2500)
    idx, amb = other.route_batch(2500)
    assert [FLEET[i].name for i in idx] == [d.backend for d in one_by_one]
    assert amb.tolist() == [d.ambiguous for d in one_by_one]
    assert amb.sum() > 0


def test_decision_carries_every_candidate_with_forecast_and_interval(policy):
    settle(policy)
    d = policy.route(RouteRequest("r1"))
    assert [c.backend for c in d.candidates] == ["b0", "b1", "b2", "b3"]
    assert all(c.lo_ms < c.forecast_ms < c.hi_ms for c in d.candidates)
    assert np.isclose(sum(c.share for c in d.candidates), 1.0)
    assert d.chosen is not None and d.chosen.backend == d.backend


def test_unknown_tier_is_a_clear_error():
    policy = PredictivePolicy(FLEET)
    with pytest.raises(ValueError, match="unknown tier"):
        policy.route(RouteRequest("r", tier="platinum"))
