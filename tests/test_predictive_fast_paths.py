"""The predictive router's shortcuts compute exactly what the plain code they replace would.

The pinned digests (`test_predictive_identity`) cover two seeded runs; these check each shortcut
over its whole range: the two random candidates drawn as `random.sample` draws them, the
likeliest candidate as `max` picks it, the P tables read per in-flight change as the bilinear
grid read, and the ejection list kept between requests as if rebuilt for every one.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from tests.router_fakes import FakeView, backends, completion, request
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.policy import likeliest
from tools.routers.predictive.table import (
    D_MAX,
    D_MIN,
    DELTAS,
    NT,
    P_OFFSET,
    TOKEN_GRID,
    by_delta,
    interpolate,
    token_position,
)


@pytest.mark.parametrize("n", [3, 4, 8, 16, 21, 22, 40])
def test_two_candidates_are_drawn_as_random_sample_draws_them(n):
    policy = PredictiveRouter(backends(2), seed=0)
    live = list(range(0, 3 * n, 3))  # not 0..n-1: the draw returns members, not positions
    for seed in range(200):
        policy._rng.seed(seed)
        ref = random.Random(seed)
        for _ in range(5):
            assert policy._draw2(live) == ref.sample(live, 2)


def test_the_likeliest_is_the_max_on_probability_then_cost():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 9))
        # few distinct values, so ties in probability and in cost are common
        p = rng.choice([0.2, 0.5, 0.9], n).tolist()
        cost = rng.choice([1.0, 2.0], n).tolist()
        live = sorted(rng.choice(n, int(rng.integers(1, n + 1)), replace=False).tolist())
        assert likeliest(live, p, cost) == max(live, key=lambda b: (p[b], -cost[b]))


def test_p_rows_per_in_flight_change_read_as_the_bilinear_grid():
    grid = np.random.default_rng(1).random(NT * len(DELTAS))
    flat = grid.tolist()
    rows = by_delta(grid)
    for tokens in [1.0, 16.0, 50.0, 333.3, 900.0, 4096.0, 32768.0, 1e6]:
        i, f = token_position(tokens)
        for d in range(D_MIN, D_MAX + 1):
            k = d * NT + P_OFFSET + i
            lo = rows[k]
            # to the bit: decisions compare these values
            assert lo + (rows[k + 1] - lo) * f == interpolate(flat, tokens, d)
    assert TOKEN_GRID.size == NT


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
