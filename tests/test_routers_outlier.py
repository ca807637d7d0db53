"""Envoy outlier detection: consecutive 5xx, the ejection period, success-rate ejection, limits."""

from __future__ import annotations

from tests.router_fakes import FakeView, backends, completion, request
from tools.routers.outlier_ejection import OutlierEjectionPolicy
from tools.routers.registry import make_policy


def _fail(policy, backend, times, start, status="error"):
    for k in range(times):
        policy.on_complete(completion(backend, at=start + 0.1 * k, status=status), FakeView(4))


def _picks(policy, now, count=200):
    view = FakeView(4, now_s=now)
    return {policy.choose(request(i, now), view) for i in range(count)}


def test_five_consecutive_5xx_eject_until_the_first_sweep_after_base_ejection_time():
    policy = make_policy("outlier_ejection", backends(4), seed=1)
    assert _picks(policy, now=0.0) == {0, 1, 2, 3}  # starts the 10 s sweep clock at t=0
    _fail(policy, 2, times=4, start=1.0)
    assert not policy.is_ejected(2)
    _fail(policy, 2, times=1, start=1.4)  # the 5th in a row, at t=1.4
    assert policy.is_ejected(2)
    assert _picks(policy, now=2.0) == {0, 1, 3}
    # the sweep at t=30 finds it ejected 28.6 s < 30 s; the one at t=40 returns it.
    assert _picks(policy, now=35.0) == {0, 1, 3}
    assert _picks(policy, now=40.0) == {0, 1, 2, 3}


def test_a_success_in_between_resets_the_count_and_429s_are_not_5xx():
    policy = make_policy("outlier_ejection", backends(4), seed=1)
    _picks(policy, now=0.0)
    _fail(policy, 1, times=4, start=1.0)
    policy.on_complete(completion(1, at=1.5), FakeView(4))
    _fail(policy, 1, times=4, start=2.0)
    _fail(policy, 1, times=3, start=3.0, status="rejected")
    assert not policy.is_ejected(1)
    _fail(policy, 1, times=5, start=4.0, status="timeout")  # timeouts map to 5xx in Envoy
    assert policy.is_ejected(1)


def test_repeat_ejections_last_base_time_times_the_backoff():
    policy = make_policy("outlier_ejection", backends(4), seed=1)
    _picks(policy, now=0.0)
    _fail(policy, 0, times=5, start=1.0)
    assert _picks(policy, now=40.0) == {0, 1, 2, 3}  # back after 30 s (first sweep: t=40)
    _fail(policy, 0, times=5, start=41.0)  # ejected again: backoff 2, 60 s
    assert policy.is_ejected(0)
    assert 0 not in _picks(policy, now=100.0)  # sweep at 100: 58.6 s < 60 s
    assert 0 in _picks(policy, now=110.0)


def test_envoy_defaults_never_eject_on_a_fleet_under_ten_hosts():
    # 100 * (0 + 1) / 4 = 25% > max_ejection_percent 10, and always_eject_one_host is off.
    policy = OutlierEjectionPolicy(backends(4), seed=1)
    _picks(policy, now=0.0)
    _fail(policy, 3, times=20, start=1.0)
    assert not policy.is_ejected(3)
    assert policy.ejections == 0


def test_only_one_host_at_a_time_with_always_eject_one_host():
    policy = make_policy("outlier_ejection", backends(4), seed=1)
    _picks(policy, now=0.0)
    _fail(policy, 0, times=5, start=1.0)
    _fail(policy, 1, times=5, start=2.0)
    assert policy.is_ejected(0)
    assert not policy.is_ejected(1)


def test_success_rate_ejection_uses_mean_minus_1_9_stdev_of_the_last_interval():
    n = 5
    policy = make_policy("outlier_ejection", backends(n), seed=1)
    view = FakeView(n)
    policy.choose(request(), view)  # t=0: sweeps at 10, 20, ...
    # interval (0, 10]: 100 requests per host; host 4 fails every other one (success 50%,
    # never 5 in a row). Rates 100, 100, 100, 100, 50: mean 90, stdev 20, threshold 52.
    for k in range(100):
        t = 0.05 + k * 0.09
        for b in range(n):
            status = "error" if b == 4 and k % 2 else "ok"
            policy.on_complete(completion(b, at=t, status=status), view)
    assert not policy.is_ejected(4)
    policy.choose(request(1, 10.5), FakeView(n, now_s=10.5))  # runs the sweep at t=10
    assert policy.is_ejected(4)
    assert [policy.is_ejected(b) for b in range(4)] == [False] * 4
