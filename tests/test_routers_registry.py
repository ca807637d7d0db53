"""The registry builds every baseline by name; each one runs a small fleet sensibly."""

from __future__ import annotations

import pytest

from tests.router_fakes import backends, run_toy_fleet
from tools.routers.base import RoutingPolicy
from tools.routers.registry import BASELINES, POLICIES, make_policy

ADAPTIVE = ("least_request", "peak_ewma", "outlier_ejection", "prequal", "c3", "llmd", "predictive")


def test_every_name_builds_a_routing_policy():
    assert set(POLICIES) == {"static", "round_robin", *ADAPTIVE}
    assert set(BASELINES) == set(POLICIES) - {"predictive"}
    for name in POLICIES:
        policy = make_policy(name, backends(4), seed=1)
        assert isinstance(policy, RoutingPolicy)
        assert policy.name == name


def test_unknown_names_and_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown routing policy 'nope'; known: static"):
        make_policy("nope", backends(2))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['decay'\]; allowed:"):
        make_policy("peak_ewma", backends(2), decay=3)
    with pytest.raises(ValueError, match="at least one backend"):
        make_policy("c3", [])


def test_options_reach_the_policy():
    policy = make_policy("peak_ewma", backends(2), decay_time_s=3.0)
    assert policy.tau == 3.0
    policy = make_policy("outlier_ejection", backends(2), always_eject_one_host=False)
    assert policy.always_eject_one_host is False


@pytest.mark.parametrize("name", POLICIES)
def test_same_seed_same_routes_and_another_seed_differs_where_random(name):
    base = [0.2, 0.2, 0.2, 0.2]
    a = run_toy_fleet(make_policy(name, backends(4), seed=11), base, 8.0, 400, seed=2)
    b = run_toy_fleet(make_policy(name, backends(4), seed=11), base, 8.0, 400, seed=2)
    assert a == b


@pytest.mark.parametrize("name", ADAPTIVE)
def test_adaptive_policies_steer_away_from_a_ten_times_slower_backend(name):
    # round robin would send it a quarter of the traffic
    sent = run_toy_fleet(
        make_policy(name, backends(4), seed=1), [0.2, 0.2, 0.2, 2.0], 8.0, 1500, seed=4
    )
    assert sum(sent) == 1500
    assert sent[3] / 1500 < 0.15, sent
