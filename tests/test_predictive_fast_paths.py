"""The predictive router's shortcuts compute exactly what the plain code they replace would.

The pinned digests (`test_predictive_identity`) cover two seeded runs; these check each shortcut
over its whole range: the two random candidates drawn as `random.sample` draws them, the
likeliest candidate as `max` picks it, the inlined P read as `table.interpolate` reads the grid,
and the ejection list kept between requests as if rebuilt for every one.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from tests.router_fakes import FakeView, backends, completion, request
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.policy import likeliest
from tools.routers.predictive.table import D_MAX, D_MIN, interpolate


@pytest.mark.parametrize("n", [3, 4, 8, 16, 21, 22, 40])
def test_two_candidates_are_drawn_as_random_sample_draws_them(n):
    policy = PredictiveRouter(backends(2), seed=0)
    live = list(range(0, 3 * n, 3))  # not 0..n-1: the draw returns members, not positions
    for seed in range(200):
        policy._rng.seed(seed)
        ref = random.Random(seed)
        for _ in range(5):
            assert policy._draw(live, 2) == ref.sample(live, 2)


@pytest.mark.parametrize("n", [4, 5, 8, 16, 21, 22, 40])
@pytest.mark.parametrize("k", [3, 4])
def test_k_candidates_are_drawn_as_random_sample_draws_them(n, k):
    policy = PredictiveRouter(backends(2), seed=0)
    live = list(range(0, 3 * n, 3))
    for seed in range(200):
        policy._rng.seed(seed)
        ref = random.Random(seed)
        for _ in range(5):
            assert policy._draw(live, k) == ref.sample(live, k)


def test_the_likeliest_is_the_max_on_probability_then_cost():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 9))
        # few distinct values, so ties in probability and in cost are common
        p = rng.choice([0.2, 0.5, 0.9], n).tolist()
        cost = rng.choice([1.0, 2.0], n).tolist()
        live = sorted(rng.choice(n, int(rng.integers(1, n + 1)), replace=False).tolist())
        assert likeliest(live, p, cost) == max(live, key=lambda b: (p[b], -cost[b]))


def test_the_inlined_p_read_is_the_grid_interpolation_and_flags_off_grid_backends():
    n = 4
    policy = PredictiveRouter(backends(n), seed=0, explore_s=1e9)
    view = FakeView(n, now_s=1.0)
    policy.choose(request(0, view.now_s), view)  # the first request evaluates the grids
    table = policy.table
    assert table is not None
    ejected = [False, True, False, False]
    for inflight in ([0, 0, 0, 0], [3, 0, 70, 0], [0, 5, 1, 64]):
        for tokens in (1, 16, 50, 333, 900, 4096, 32768, 10**6):
            policy._due = [9.0] * n
            r = replace(request(1, view.now_s), input_tokens=tokens)
            p = policy._p_model(r, inflight, None, ejected)
            rows = table.p_table(r.ttft_slo_ms, r.e2e_slo_ms)
            for b in range(n):
                d = inflight[b] - table.base_in_flight[b]
                want = 0.0 if ejected[b] else interpolate(rows[b], float(tokens), d)
                assert p[b] == want  # to the bit: decisions compare these values
                off = not ejected[b] and not D_MIN <= d <= D_MAX
                assert (policy._due[b] == 0.0) == off  # refreshed at the next completion


def test_ejections_start_and_end_between_requests_as_if_checked_every_request():
    n = 4
    policy = PredictiveRouter(backends(n), seed=0, explore_s=1e9, eject_min_observed=2)
    view = FakeView(n, now_s=1.0)
    for k in range(3):
        view.now_s += 0.01
        policy.choose(request(k, view.now_s), view)
    for rid in range(2):
        policy.on_complete(completion(1, view.now_s, status="error", rid=100 + rid), view)
    until = policy.ejected_until[1]
    assert until > view.now_s
    for now in [view.now_s, until - 1e-6, until, until + 0.5]:
        view.now_s = now
        for b in range(n):  # keep every backend heard from, so none is ejected as silent
            policy.tracker.heard_s[b] = now
        policy.choose(request(7, now), view)
        assert policy.last.ejected == [u > now for u in policy.ejected_until]
    # the clock may step back (a replay restarting); the list follows it
    view.now_s = until - 1.0
    policy.choose(request(8, view.now_s), view)
    assert policy.last.ejected[1] is True
    assert not math.isinf(until)
