"""Prequal: asynchronous probes, the probe pool, the reuse budget and the HCL rule."""

from __future__ import annotations

import pytest

from tests.router_fakes import FakeView, backends, probe, request
from tools.routers.prequal import PrequalPolicy, reuse_budget


def _pool(policy, view, replies):
    for b, rif, lat in replies:
        policy.on_probe(probe(b, view.now_s, rif, lat), view)


def test_hcl_picks_the_lowest_latency_cold_replica_and_compensates_its_rif():
    view = FakeView(4, now_s=1.0)
    policy = PrequalPolicy(backends(4), seed=0, removes_per_query=0.0)
    # RIFs 10, 2, 3, 1: the 0.84 quantile over 4 replies is the 3rd smallest (index
    # floor(0.84 * 3) = 2), 3. Replica 0 (RIF 10) is hot although it is the fastest.
    _pool(policy, view, [(0, 10, 1.0), (1, 2, 50.0), (2, 3, 20.0), (3, 1, 40.0)])
    assert policy.hot_threshold() == 3.0
    assert policy.choose(request(), view) == 2  # cold, 20 ms: lowest latency among 1, 2, 3
    assert policy.pool[2][1] == 4.0  # its RIF now counts the query just sent
    # replica 2 is now hot (4 > 3): the next cold one by latency is 3 (40 ms).
    assert policy.choose(request(1), view) == 3


def test_hcl_falls_back_to_the_lowest_rif_when_every_pooled_replica_is_hot():
    view = FakeView(4, now_s=1.0)
    policy = PrequalPolicy(backends(4), seed=0, removes_per_query=0.0)
    _pool(policy, view, [(0, 1, 5.0), (1, 1, 5.0), (2, 1, 5.0)])  # the RIF estimate: 1
    _pool(policy, view, [(0, 9, 1.0), (1, 6, 90.0)])  # window 1, 1, 1, 9, 6: threshold 6
    policy.pool.pop(2)
    policy.pool[0][1], policy.pool[1][1] = 12.0, 7.0  # both above the threshold
    assert policy.choose(request(), view) == 1


def test_probes_are_sent_per_query_and_replies_route_later_queries():
    view = FakeView(4, now_s=0.0)
    policy = PrequalPolicy(backends(4), seed=5)
    policy.choose(request(), view)  # empty pool: random fallback, 3 probes out
    assert len(view.probes) == 3 and len(set(view.probes)) == 3
    assert policy.fallback_picks == 1
    view.now_s = 0.01
    for b in view.probes:
        policy.on_probe(probe(b, 0.01, in_flight=b, latency_ms=100.0 - b), view)
    policy.choose(request(1), view)
    assert policy.pool_picks == 1
    # fractional rates carry over: 0.5 probes per query is one probe every other query.
    half = PrequalPolicy(backends(4), seed=5, probes_per_query=0.5)
    view = FakeView(4)
    for i in range(10):
        half.choose(request(i), view)
    assert half.probes_sent == 5


def test_old_probes_expire_and_the_pool_keeps_one_reply_per_replica():
    view = FakeView(4, now_s=0.0)
    policy = PrequalPolicy(backends(4), seed=0, max_age_s=1.0)
    _pool(policy, view, [(0, 1, 10.0), (1, 1, 10.0)])
    _pool(policy, view, [(0, 2, 12.0)])
    assert sorted(policy.pool) == [0, 1] and policy.pool[0][1] == 2.0
    view.now_s = 1.5  # both replies are older than 1 s
    policy.choose(request(), view)
    assert policy.fallback_picks == 1 and policy.pool_picks == 0


def test_removal_alternates_oldest_and_worst():
    view = FakeView(8, now_s=0.0)
    policy = PrequalPolicy(backends(8), seed=0, probes_per_query=0.0, max_reuse=5)
    for k, (b, rif, lat) in enumerate([(0, 1, 10.0), (1, 2, 90.0), (2, 1, 30.0), (3, 1, 20.0)]):
        view.now_s = 0.1 * k
        policy.on_probe(probe(b, view.now_s, rif, lat), view)
    view.now_s = 0.5
    policy.choose(request(), view)  # picks 0 (10 ms), then removes the oldest: 0 itself
    assert sorted(policy.pool) == [1, 2, 3]
    policy.choose(request(1), view)  # picks 3 (20 ms), then the worst: the hot one with most RIF, 1
    assert sorted(policy.pool) == [2, 3]


def test_reuse_budget_follows_the_paper_formula():
    # n = 100, m = 16, r_probe = 3, r_remove = 1, delta = 1: 2 / (0.84 * 3 - 1) = 1.3158
    assert reuse_budget(100, 16, 3.0, 1.0, 1.0, 16) == pytest.approx(2.0 / 1.52)
    assert reuse_budget(1000, 16, 3.0, 0.0, 1.0, 16) == 1.0  # never below one use
    assert reuse_budget(4, 16, 3.0, 1.0, 1.0, 16) == 16.0  # n <= m: undefined, the cap
