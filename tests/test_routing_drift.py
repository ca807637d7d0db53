"""Drift of the routing model: the router's raw residuals per tick and the detector on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.monitors.routing_drift import (
    RoutingDriftConfig,
    RoutingDriftMonitor,
    replay,
)
from agents.router import Router, tick_residuals
from tests.router_fakes import FakeView, completion, request
from tools.routers.base import BackendProfile
from tools.routers.predictive import PredictiveRouter
from tools.routers.predictive.table import interpolate
from tools.routers.predictive.training import fit
from tools.telemetry import TICK_SECONDS


@pytest.fixture(scope="module")
def toy_model():
    from tests.test_predictive_router import toy_dataset

    hp = {"n_estimators": 8, "max_depth": 6, "min_samples_leaf": 20, "n_jobs": 1}
    return fit(toy_dataset(n_runs=6, per_run=300), hyperparameters=hp, seed=1)


def _predicted(policy: PredictiveRouter, rid: int) -> tuple[float, float]:
    """The model's uncorrected mean log TTFT and log e2e for a request in flight, as the
    router stored them when it routed the request."""
    _, tok, d, grid_t, grid_e = policy._pending[rid]
    return interpolate(grid_t, tok, d), interpolate(grid_e, tok, d)


def _policy(model, **settings: float) -> PredictiveRouter:
    prof = [BackendProfile(f"b{i}", 0.001, 0.002) for i in range(2)]
    return PredictiveRouter(prof, model=model, explore_s=1e9, **settings)


@pytest.mark.parametrize("rate", [0.0, 0.05])
def test_residuals_are_raw_per_backend_and_start_afresh_after_each_read(toy_model, rate):
    # the drift monitor's evidence does not depend on the online correction being on
    policy = _policy(toy_model, correction_rate=rate)
    view = FakeView(2, now_s=1.0)
    sent = {}
    for rid in range(6):
        req = request(rid, now=1.0)
        b = policy.choose(req, view)
        sent[rid] = (b, *_predicted(policy, rid))
    # every request comes back twice as slow as the model's uncorrected mean
    for rid, (b, mt, me) in sent.items():
        ttft, e2e = 2.0 * math.exp(mt), 2.0 * math.exp(me)
        policy.on_complete(completion(b, at=2.0, e2e_ms=e2e, ttft_ms=ttft, rid=rid), view)
    got = policy.take_residuals()
    for b in range(2):
        n = sum(1 for v in sent.values() if v[0] == b)
        assert got[b][0] == n
        if n:
            assert got[b][1] / n == pytest.approx(math.log(2.0))
            assert got[b][2] / n == pytest.approx(math.log(2.0))
    # the online correction moved (when on), the residuals did not include it
    assert (max(policy.corr_t) > 0.0) == (rate > 0.0)
    assert policy.take_residuals() == [(0, 0.0, 0.0), (0, 0.0, 0.0)]
    # failures carry no latency to compare: not counted
    req = request(99, now=2.0)
    b = policy.choose(req, view)
    policy.on_complete(completion(b, at=3.0, status="error", rid=99), view)
    assert policy.take_residuals()[b][0] == 0


def test_the_router_keeps_one_tick_of_mean_residuals_by_backend_name(toy_model):
    policy = _policy(toy_model)
    router = Router(policy)
    view = FakeView(2, now_s=1.0)
    rid = 0
    b = router.choose(request(rid, now=1.0), view)
    mt, me = _predicted(policy, rid)
    router.on_complete(
        completion(b, at=2.0, e2e_ms=math.exp(me), ttft_ms=3 * math.exp(mt), rid=rid), view
    )
    router.on_telemetry([], arrivals=1)
    n, t, e = router.residuals[f"b{b}"]
    assert n == 1 and t == pytest.approx(math.log(3.0)) and e == pytest.approx(0.0, abs=1e-9)
    assert set(router.residuals) == {f"b{b}"}  # a backend without completions is absent
    router.on_telemetry([], arrivals=0)
    assert router.residuals == {}
    assert tick_residuals(object()) == {}  # a policy without a latency model: no signal


def _ticks(n_ticks: int, shift_at: int | None, shift: float, seed: int = 0):
    """Per-tick residual means of two backends: b0 shifts by `shift` from tick `shift_at` on;
    counts vary from tick to tick, and the noise of a mean shrinks with its count."""
    rng = np.random.default_rng(seed)
    ts, out = [], []
    for k in range(n_ticks):
        tick = {}
        for name in ("b0", "b1"):
            n = int(rng.integers(1, 40))
            level = shift if (name == "b0" and shift_at is not None and k >= shift_at) else 0.0
            t = level - 0.2 + rng.normal(0, 0.5 / math.sqrt(n))
            e = level + 0.1 + rng.normal(0, 0.5 / math.sqrt(n))
            tick[name] = (n, t, e)
        ts.append(k * TICK_SECONDS)
        out.append(tick)
    return ts, out


def test_stationary_residuals_raise_no_alarm_on_any_seed():
    for seed in range(10):
        ts, res = _ticks(1500, None, 0.0, seed)
        assert replay(ts, res, ["b0", "b1"], start_ts=0.0) == []


def test_a_slower_backend_alarms_on_that_backend_soon_after_with_its_size():
    ts, res = _ticks(600, 200, 0.3, seed=3)
    alarms = replay(ts, res, ["b0", "b1"], start_ts=0.0)
    assert alarms and {a.backend for a in alarms} == {"b0"}
    first = alarms[0]
    assert 200 * TICK_SECONDS < first.ts <= 260 * TICK_SECONDS
    # sized from Page's change-point estimate: rough so soon after the change, but of its order
    assert first.change_ts is not None and 180 * TICK_SECONDS <= first.change_ts <= first.ts
    assert 0.1 < first.shift < 0.45
    assert first.ratio == pytest.approx(math.exp(first.shift))


def test_a_faster_backend_never_alarms():
    ts, res = _ticks(600, 200, -0.5, seed=4)
    assert replay(ts, res, ["b0", "b1"], start_ts=0.0) == []


def test_burn_in_and_thin_ticks_are_not_used():
    cfg = RoutingDriftConfig(burn_in_s=100.0, min_requests=5, warmup_ticks=10)
    mon = RoutingDriftMonitor(["b0"], cfg, start_ts=0.0)
    assert mon.value((4, 1.0, 1.0)) is None and mon.value(None) is None
    assert mon.value((5, 0.2, 0.4)) == pytest.approx(0.3)
    assert mon.value((5, math.nan, 0.4)) is None
    mon.observe(50.0, {"b0": (30, 9.0, 9.0)})  # during the burn-in: ignored
    assert mon._state["b0"].values == []
    mon.observe(150.0, {"b0": (30, 0.1, 0.1)})
    assert mon._state["b0"].values == [pytest.approx(0.1)]
    with pytest.raises(ValueError):
        RoutingDriftConfig(signal="p95")
