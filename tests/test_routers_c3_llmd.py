"""C3's cubic ranking and rate control; the llm-d endpoint picker's default scorers."""

from __future__ import annotations

import pytest

from tests.router_fakes import FakeView, backends, completion, request, scrape
from tools.routers.c3 import C3Policy
from tools.routers.llmd import LlmdPolicy, PrefixIndex


def test_c3_ranks_two_servers_as_the_cubic_formula_says():
    view = FakeView(2, now_s=1.0)
    policy = C3Policy(backends(2), rate_control=False)
    # server 0: R 100 ms, service (decode) 20 ms, queue 2, 1 outstanding:
    #   q_hat = 1 + 1 + 2 = 4, psi = (100 - 20) + 4^3 * 20 = 1360
    # server 1: R 60 ms, service 30 ms, queue 0, 2 outstanding:
    #   q_hat = 1 + 2 + 0 = 3, psi = (60 - 30) + 3^3 * 30 = 840
    policy.on_complete(completion(0, at=1.0, e2e_ms=100.0, ttft_ms=80.0), view)
    policy.on_complete(completion(1, at=1.0, e2e_ms=60.0, ttft_ms=30.0), view)
    policy.on_scrape(scrape(0, at=1.0, waiting=2), view)
    assert policy.score(0, outstanding=1) == pytest.approx(1360.0)
    assert policy.score(1, outstanding=2) == pytest.approx(840.0)
    view.in_flight = [1, 2]
    assert policy.choose(request(), view) == 1
    view.in_flight = [0, 2]  # server 0: q_hat 3, psi = 80 + 27 * 20 = 620 < 840
    assert policy.choose(request(), view) == 0
    # EWMAs weigh the new sample by 0.9: R(0) = 0.9 * 200 + 0.1 * 100
    policy.on_complete(completion(0, at=2.0, e2e_ms=200.0, ttft_ms=180.0), view)
    assert policy.response_ms[0] == pytest.approx(190.0)


def test_c3_unknown_servers_score_zero_and_are_tried_first():
    view = FakeView(3, now_s=1.0)
    policy = C3Policy(backends(3), rate_control=False)
    policy.on_complete(completion(0, at=1.0, e2e_ms=100.0, ttft_ms=80.0), view)
    assert {policy.choose(request(i), view) for i in range(30)} == {1, 2}


def test_c3_cubic_growth_and_multiplicative_decrease():
    policy = C3Policy(backends(1), rate_interval_s=1.0)
    policy._tick(0.0)
    # after a decrease from R0 = 10 at t=0, with the receive rate above the sending rate,
    # 5 intervals later: 0.004 * (5 - (10 * 0.2 / 0.004) ** (1/3)) ** 3 + 10 = 9.8987
    policy.srate[0], policy.rrate[0] = 2.0, 5.0
    policy._rate_at_decrease[0] = 10.0
    policy._last_decrease[0] = 0.0
    policy._next_tick = 100.0  # keep the measured receive rate fixed for this check
    policy._update_rate(0, 5.0)
    k = (10.0 * 0.2 / 0.004) ** (1.0 / 3.0)
    assert policy.srate[0] == pytest.approx(0.004 * (5.0 - k) ** 3 + 10.0)
    # sending above the receive rate, last increase more than 2 intervals ago: cut to 0.2x.
    policy.srate[0], policy.rrate[0] = 10.0, 5.0
    policy._update_rate(0, 7.5)
    assert policy.srate[0] == pytest.approx(2.0)
    assert policy._rate_at_decrease[0] == 10.0
    # within the hysteresis window nothing changes.
    policy.srate[0] = 10.0
    policy._last_increase[0] = 7.0
    policy._update_rate(0, 8.0)
    assert policy.srate[0] == 10.0


def test_c3_skips_a_server_whose_rate_limiter_is_empty():
    view = FakeView(2, now_s=0.0)
    policy = C3Policy(backends(2))
    policy.choose(request(), view)  # starts the clocks at t=0
    policy.on_complete(completion(0, at=0.0, e2e_ms=10.0, ttft_ms=5.0), view)
    policy.on_complete(completion(1, at=0.0, e2e_ms=500.0, ttft_ms=100.0), view)
    policy.tokens = [1.0, 2.0]  # no time passes, so no bucket refills below
    picks = [policy.choose(request(i), view) for i in range(5)]
    # server 0 ranks first; once its bucket is empty the next ranked with a token gets the
    # request; with every bucket empty, the one whose next token frees first (equal rates: the
    # best ranked), spending it in advance, so the next held request goes to server 1.
    assert picks == [0, 1, 1, 0, 1]
    assert policy.backpressured == 2
    assert policy.tokens == [-1.0, -1.0]


def test_llmd_scores_a_worked_example():
    view = FakeView(3)
    policy = LlmdPolicy(backends(3), seed=0)
    for b, waiting, kv in [(0, 0, 0.5), (1, 4, 0.1), (2, 2, 0.9)]:
        policy.on_scrape(scrape(b, at=0.0, waiting=waiting, kv=kv), view)
    policy.index.add([1, 2, 3], 2)
    policy.index.add([1], 1)
    # request blocks 1,2,3,4: endpoint 1 holds 1 block, endpoint 2 holds 3 (block 4: nobody).
    # queue: (4 - q) / 4 -> 1, 0, 0.5; kv: 1 - usage -> 0.5, 0.9, 0.1; prefix: 0, 1/4, 3/4.
    # 2*1 + 2*0.5 + 0 = 3.0; 0 + 1.8 + 0.75 = 2.55; 1 + 0.2 + 2.25 = 3.45
    hashes = (1, 2, 3, 4)
    assert policy.scores(request(hashes=hashes)) == pytest.approx([3.0, 2.55, 3.45])
    assert policy.choose(request(hashes=hashes), view) == 2
    # without prefix hashes only load counts: 3.0, 1.8, 1.2.
    assert policy.scores(request()) == pytest.approx([3.0, 1.8, 1.2])
    assert policy.choose(request(), view) == 0


def test_llmd_routing_feeds_the_prefix_index_and_affinity_follows():
    view = FakeView(4)
    policy = LlmdPolicy(backends(4), seed=3)
    first = policy.choose(request(0, hashes=(7, 8, 9)), view)
    # equal load everywhere: the request sharing the prefix follows the first one.
    assert policy.choose(request(1, hashes=(7, 8, 10)), view) == first
    assert policy.prefix_hits == 2 and policy.prefix_blocks == 6


def test_prefix_index_evicts_least_recently_used_blocks_per_server():
    index = PrefixIndex(2, capacity_per_server=2)
    index.add([1, 2, 3], 0)  # keeps 2, 3
    index.add([1], 1)
    # the EPP counts, block by block, every server holding it, until a block nobody holds.
    assert index.match([1, 2]) == {1: 1, 0: 1}
    assert index.match([5, 2]) == {}
    assert index.match([2, 3]) == {0: 2}


def test_llmd_declares_the_epp_metrics_refresh_interval():
    assert LlmdPolicy(backends(2)).scrape_interval_s == 0.05
    assert LlmdPolicy(backends(2), refresh_metrics_interval_s=1.0).scrape_interval_s == 1.0
    with pytest.raises(ValueError, match="refresh_metrics_interval_s"):
        LlmdPolicy(backends(2), refresh_metrics_interval_s=0.0)
