"""static, round_robin, least_request (Envoy), peak_ewma (Finagle): each rule on a worked case."""

from __future__ import annotations

import math

import pytest

from tests.router_fakes import FakeView, FixedRandom, backends, completion, request
from tools.routers.least_request import LeastRequestPolicy
from tools.routers.peak_ewma import PENALTY, PeakEwmaPolicy
from tools.routers.round_robin import RoundRobinPolicy
from tools.routers.static import StaticPolicy


def test_static_sends_everything_to_the_configured_backend():
    view = FakeView(3)
    by_index = StaticPolicy(backends(3), backend=2)
    by_name = StaticPolicy(backends(3), backend="b1")
    view.in_flight = [0, 50, 50]
    assert {by_index.choose(request(i), view) for i in range(20)} == {2}
    assert {by_name.choose(request(i), view) for i in range(20)} == {1}
    with pytest.raises(ValueError, match="unknown backend"):
        StaticPolicy(backends(3), backend="nope")
    with pytest.raises(ValueError, match="outside"):
        StaticPolicy(backends(3), backend=3)


def test_round_robin_visits_every_backend_in_turn():
    view = FakeView(4)
    policy = RoundRobinPolicy(backends(4), seed=7)
    picks = [policy.choose(request(i), view) for i in range(12)]
    first = picks[0]
    assert picks == [(first + k) % 4 for k in range(12)]


def test_least_request_p2c_takes_the_less_loaded_of_the_two_sampled():
    view = FakeView(4)
    view.in_flight = [5, 0, 0, 1]
    policy = LeastRequestPolicy(backends(4))
    # draws 0.1 -> backend 0 (5 active), 0.8 -> backend 3 (1 active): 3 wins.
    policy._rng = FixedRandom([0.1, 0.8])
    assert policy.choose(request(), view) == 3
    # the other order: 3 first, then 0 is not strictly fewer: 3 stays.
    policy._rng = FixedRandom([0.8, 0.1])
    assert policy.choose(request(), view) == 3
    # a tie keeps the first drawn (Envoy replaces only on strictly fewer).
    policy._rng = FixedRandom([0.3, 0.6])
    assert policy.choose(request(), view) == 1


def test_least_request_samples_with_replacement_like_envoy():
    # One idle backend among three busy ones is picked when either draw hits it:
    # P = 1 - (3/4)^2 = 7/16 (distinct draws would give 1/2).
    view = FakeView(4)
    view.in_flight = [0, 10, 10, 10]
    policy = LeastRequestPolicy(backends(4), seed=3)
    share = sum(policy.choose(request(i), view) == 0 for i in range(8000)) / 8000
    assert share == pytest.approx(7 / 16, abs=0.02)


def test_weighted_least_request_edf_follows_weights_and_active_request_bias():
    view = FakeView(2)
    # weights 3:1, nothing active: deadlines 1/3, 2/3, then a tie at 1.0 goes to the host
    # queued first (backend 1), then 4/3.
    policy = LeastRequestPolicy(backends(2), weights=[3.0, 1.0])
    assert [policy.choose(request(i), view) for i in range(4)] == [0, 0, 1, 0]
    # two requests active on backend 0: its effective weight 3 / (2 + 1) = 1 equals backend 1's,
    # so after the first pick they alternate.
    view.in_flight = [2, 0]
    policy = LeastRequestPolicy(backends(2), weights=[3.0, 1.0], active_request_bias=1.0)
    assert [policy.choose(request(i), view) for i in range(4)] == [0, 1, 0, 1]


def test_peak_ewma_decays_with_time_and_jumps_to_peaks():
    policy = PeakEwmaPolicy(backends(2), decay_time_s=10.0)
    policy.on_complete(completion(0, at=0.0, e2e_ms=100.0), FakeView(2))
    # 10 s later (one decay time) the cost has decayed to 100 / e.
    assert policy.load(0, pending=0, now_s=10.0) == pytest.approx(100.0 / math.e)
    # a sample above the current cost replaces it at once (peak sensitivity)...
    policy.on_complete(completion(0, at=10.0, e2e_ms=50.0), FakeView(2))
    assert policy.cost[0] == pytest.approx(50.0)
    # ...a lower one is blended in with weight 1 - exp(-dt / tau).
    policy.on_complete(completion(0, at=20.0, e2e_ms=20.0), FakeView(2))
    expected = 50.0 / math.e + 20.0 * (1.0 - 1.0 / math.e)
    assert policy.cost[0] == pytest.approx(expected)
    # load is cost times (pending + 1).
    assert policy.load(0, pending=2, now_s=20.0) == pytest.approx(3 * expected)
    # no latency history but requests pending: Finagle's penalty.
    assert policy.load(1, pending=1, now_s=20.0) == PENALTY + 1


def test_peak_ewma_p2c_prefers_lower_cost_times_outstanding():
    view = FakeView(2, now_s=1.0)
    policy = PeakEwmaPolicy(backends(2))
    policy.on_complete(completion(0, at=1.0, e2e_ms=100.0), view)
    policy.on_complete(completion(1, at=1.0, e2e_ms=30.0), view)
    view.in_flight = [0, 2]  # loads: 100 * 1 = 100 against 30 * 3 = 90
    assert {policy.choose(request(i), view) for i in range(10)} == {1}
    view.in_flight = [0, 3]  # 30 * 4 = 120 > 100
    assert {policy.choose(request(i), view) for i in range(10)} == {0}
