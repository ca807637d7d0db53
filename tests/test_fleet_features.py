"""Fleet-wide feature windows give exactly FeatureWindow's numbers; FleetState serves from them."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_api.fleet_state import FleetState, UnknownBackendError
from tools.features import FEATURE_NAMES, LONG_TICKS, SLOPE_TICKS, FeatureWindow
from tools.fleet_features import HAVE_NUMBA, FleetWindows
from tools.forecaster import train
from tools.routers.base import PolicyBase
from tools.routing import BackendInfo
from tools.sim.chaos import ChaosEvent
from tools.sim.history import simulate_history
from tools.sim.run import SimConfig, simulate
from tools.sim.scenario import Scenario, build
from tools.sim.spec import capacity_rps
from tools.telemetry import TICK_SECONDS, TelemetryPoint

T0 = 1_700_000_000.0
CHAOS_TICKS = 420
ENGINES = [
    "numpy",
    pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="no numba")),
]


def chaos_telemetry(ticks: int = CHAOS_TICKS) -> list[list[TelemetryPoint]]:
    """The first `ticks` ticks of `_chaos_run` (a fresh list of ticks)."""
    return [list(t) for t in _chaos_run()[:ticks]]


@functools.lru_cache(maxsize=1)
def _chaos_run() -> tuple[tuple[TelemetryPoint, ...], ...]:
    """Ticks of a simulated fleet under overlapping chaos (failure, cascade, spike, surge, burst),
    routed capacity-proportionally so the failing backends keep their share and saturate."""
    chaos = (
        ChaosEvent(kind="latency_spike", start_s=600.0, backend="b1", magnitude=4.0),
        ChaosEvent(kind="backend_failure", start_s=1200.0, backend="b0"),
        ChaosEvent(kind="cascading_failure", start_s=1800.0, backend="b2"),
        ChaosEvent(kind="traffic_surge", start_s=2400.0),
        ChaosEvent(kind="anomaly_burst", start_s=3000.0, backend="b3"),
    )
    built = build(Scenario(name="mix", seed=11, duration_s=CHAOS_TICKS * TICK_SECONDS, chaos=chaos))
    caps = np.array([capacity_rps(s) for s in built.fleet])
    cum = np.cumsum(caps / caps.sum()).tolist()

    class CapacityShares(PolicyBase):
        k = 0

        def choose(self, request, view):
            self.k += 1
            u = (self.k * 0.6180339887) % 1.0  # an even, deterministic spread
            return next(i for i, c in enumerate(cum) if u < c or i == len(cum) - 1)

    out: list[tuple[TelemetryPoint, ...]] = []
    simulate(
        built.workload,
        built.fleet,
        CapacityShares(),
        plan=built.plan,
        config=SimConfig(start_ts=T0),
        on_tick=lambda t: out.append(tuple(t.telemetry)),
    )
    return tuple(out[:CHAOS_TICKS])


def with_outages(ticks: list[list[TelemetryPoint]]) -> list[list[TelemetryPoint]]:
    """Drop points to make every case: late starters (b3 joins at tick 45), a short gap on b1
    (kept history), a gap longer than the long window on b2 (reset) and one on b0 right at the
    limit (kept), b1 and b2 warming up again while the others are full."""
    limit = int(LONG_TICKS)  # a gap of exactly LONG_TICKS ticks keeps the history
    dropped = {
        "b3": range(0, 45),
        "b1": range(100, 108),
        "b2": range(150, 150 + LONG_TICKS + 5),
        "b0": range(260, 260 + limit - 1),
    }
    return [
        [p for p in tick if k not in dropped.get(p.backend, ())] for k, tick in enumerate(ticks)
    ]


def reference(names, capacity):
    return {n: FeatureWindow(n, capacity=capacity) for n in names}


def assert_same_every_tick(ticks, names, *, engine, capacity=LONG_TICKS) -> int:
    ref = reference(names, capacity)
    fleet = FleetWindows(names, capacity=capacity, engine=engine)
    compared = 0
    for tick in ticks:
        for p in tick:
            ref[p.backend].update(p)
            fleet.update(p)
        if all(len(ref[n]) for n in names):
            expected = np.vstack([ref[n].features() for n in names])
            got = fleet.features()
            assert got.shape == (len(names), len(FEATURE_NAMES)) and got.dtype == np.float64
            np.testing.assert_array_equal(got, expected)  # bit for bit, not just close
            for n in names:
                assert fleet.count(n) == len(ref[n]) and fleet.ready(n) == ref[n].ready
                assert fleet.last_ts(n) == ref[n].last_ts
            compared += 1
    return compared


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("capacity", [LONG_TICKS, 100])
def test_equal_to_feature_window_under_chaos_gaps_and_warm_up(engine, capacity):
    ticks = with_outages(chaos_telemetry())
    names = ("b0", "b1", "b2", "b3")
    compared = assert_same_every_tick(ticks, names, engine=engine, capacity=capacity)
    assert compared == len(ticks) - 45


@pytest.mark.parametrize("engine", ENGINES)
def test_equal_to_feature_window_on_training_history(engine):
    """The exploring, chaos-laden history the forecaster is trained on (3 chaos events/h)."""
    history = simulate_history(1800.0, seed=4, chaos_per_hour=6.0, start_ts=T0)
    names = tuple(dict.fromkeys(p.backend for p in history))
    ticks = [history[i : i + len(names)] for i in range(0, len(history), len(names))]
    assert assert_same_every_tick(ticks, names, engine=engine) == len(ticks)


values = st.floats(0.0, 1e6, allow_nan=False) | st.sampled_from([0.0, 1e-9, 0.5, 3.0, 7e5])
point_fields = st.tuples(st.integers(1, 40), values, values, values, values, st.floats(0.0, 1.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(point_fields, min_size=1, max_size=90), st.sampled_from(["numpy", "numba"]))
def test_equal_on_arbitrary_values_and_gaps(rows, engine):
    """Magnitudes from 0 to 1e6 (rounding order shows), steps of 1-40 ticks (resets)."""
    if engine == "numba" and not HAVE_NUMBA:
        return
    ts, ticks = T0, []
    for step, rps, p50, p95, inflight, err in rows:
        ts += step * TICK_SECONDS
        ticks.append([TelemetryPoint(ts, "x", rps, p50, p95, err, inflight)])
    assert assert_same_every_tick(ticks, ("x",), engine=engine) == len(ticks)


@pytest.mark.parametrize("engine", ENGINES)
def test_known_values_and_finite_partial_windows(engine):
    fleet = FleetWindows(("a", "idle"), engine=engine)
    for i in range(LONG_TICKS):
        fleet.update(TelemetryPoint(T0 + i * TICK_SECONDS, "a", 10.0, 50.0, 100.0 + 2 * i, 0.02, 1))
        fleet.update(TelemetryPoint(T0 + i * TICK_SECONDS, "idle", 0.0, 0.0, 0.0, 0.0, 0.0))
        X = fleet.features()
        assert np.isfinite(X).all()
    f = dict(zip(FEATURE_NAMES, X[0], strict=True))
    assert f["p95_slope"] == pytest.approx(2.0)
    assert f["p95_max_long"] == 100.0 + 2 * (LONG_TICKS - 1)
    assert f["ms_per_request"] == pytest.approx(100.0)
    assert fleet.ready("a") and fleet.count("a") == LONG_TICKS


def test_rejections_match_feature_window_and_change_nothing():
    names = ("b0", "b1")
    ticks = chaos_telemetry(ticks=40)
    fleet = FleetWindows(names)
    window = FeatureWindow("b0")
    for tick in ticks:
        for p in tick:
            if p.backend in names:
                fleet.update(p)
            if p.backend == "b0":
                window.update(p)
    before = fleet.features()
    last = ticks[-1][0]
    bad = {
        "out-of-order": replace(last, ts=last.ts - 1),
        "duplicate": last,
        "p95_ms": replace(last, ts=last.ts + 10, p95_ms=math.nan),
        "rps": replace(last, ts=last.ts + 10, rps=-1.0),
        "p50_ms": replace(last, ts=last.ts + 10, p50_ms=math.inf),
        "ts": replace(last, ts=math.inf),
        "error_rate": replace(last, ts=last.ts + 10, error_rate=1.5),
    }
    for reason, p in bad.items():
        with pytest.raises(ValueError) as ours:
            fleet.update(p)
        with pytest.raises(ValueError) as theirs:
            window.update(p)
        assert str(ours.value) == str(theirs.value), reason
        np.testing.assert_array_equal(fleet.features(), before)
        assert fleet.last_ts("b0") == last.ts and fleet.count("b0") == LONG_TICKS, reason
    with pytest.raises(UnknownBackendError, match="unknown backend 'b9'"):
        fleet.update(replace(last, backend="b9", ts=last.ts + 10))
    np.testing.assert_array_equal(fleet.features(), before)


def test_construction_and_empty_windows():
    with pytest.raises(ValueError, match="capacity"):
        FleetWindows(("a",), capacity=LONG_TICKS - 1)
    with pytest.raises(ValueError, match="unique"):
        FleetWindows(("a", "a"))
    with pytest.raises(ValueError, match="at least one"):
        FleetWindows(())
    with pytest.raises(ValueError, match="engine"):
        FleetWindows(("a",), engine="gpu")  # type: ignore[arg-type]
    fleet = FleetWindows(("a", "b"))
    fleet.update(TelemetryPoint(T0, "a", 1.0, 1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"no telemetry in the window of \['b'\]"):
        fleet.features()
    with pytest.raises(ValueError, match="no telemetry"):
        fleet.window("b").features()
    assert fleet.last_ts("b") is None and fleet.count("b") == 0


def test_backend_window_view_behaves_like_a_feature_window():
    fleet = FleetWindows(("b0", "b1"), capacity=40)
    ref = FeatureWindow("b1", capacity=40)
    view = fleet.window("b1")
    for tick in chaos_telemetry(ticks=SLOPE_TICKS + 50):
        for p in tick:
            if p.backend == "b1":
                view.update(p)
                ref.update(p)
                np.testing.assert_array_equal(view.features(), ref.features())
    assert (view.backend, view.capacity, len(view), view.ready) == ("b1", 40, 40, True)
    assert view.last_ts == ref.last_ts
    with pytest.raises(ValueError, match="given to the window of 'b1'"):
        view.update(replace(p, backend="b0"))


# ------------------------------------------------------------------------------ FleetState
@pytest.fixture(scope="module")
def forecaster():
    history = simulate_history(3600.0, seed=2, start_ts=T0 - 7200.0)
    fc, _ = train(history, n_estimators=5, max_depth=6, seed=0, n_jobs=1)
    return fc


BACKENDS = (
    BackendInfo("b0", 1.0, 120.0),
    BackendInfo("b1", 0.6, 80.0),
    BackendInfo("b2", 0.3, 60.0),
    BackendInfo("b3", 2.0, 200.0),
)


def test_fleet_state_refresh_forecasts_from_every_window(forecaster):
    ticks = with_outages(chaos_telemetry(ticks=320))
    fleet = FleetState(BACKENDS, forecaster)
    ref = reference([b.name for b in BACKENDS], LONG_TICKS)
    for k, tick in enumerate(ticks):
        for p in tick:
            ref[p.backend].update(p)
        view = fleet.tick(tick, arrivals=100 + k, alarms={"b1": "drift"} if k == 200 else None)
        assert view is fleet.view and view.arrivals == 100 + k
        assert view.ts == max(p.ts for p in fleet.latest.values())
        assert [v.name for v in view.backends] == [b.name for b in BACKENDS]
        if k < 45:  # b3 has no telemetry yet: no forecasts, b3 shown as unknown
            assert view.model_version is None
            assert all(math.isnan(v.forecast_ms) for v in view.backends)
            b3 = view.backends[3]
            assert (b3.rps, b3.error_rate, b3.in_flight) == (0.0, 0.0, 0.0)
            assert math.isnan(b3.p95_ms)
            continue
        X = np.vstack([ref[b.name].features() for b in BACKENDS])
        np.testing.assert_array_equal(fleet.features(), X)
        fc = forecaster.predict(X)
        assert view.model_version == forecaster.version_id
        for i, (b, v) in enumerate(zip(BACKENDS, view.backends, strict=True)):
            p = fleet.latest[b.name]
            assert (v.cost_per_request, v.rps, v.p95_ms) == (b.cost_per_request, p.rps, p.p95_ms)
            assert (v.error_rate, v.in_flight) == (p.error_rate, p.in_flight)
            assert (v.forecast_ms, v.forecast_lo_ms, v.forecast_hi_ms) == (
                fc.mean[i],
                fc.lo[i],
                fc.hi[i],
            )
            assert type(v.forecast_ms) is float
    assert dict(view.alarms) == {"b1": "drift"}
    fleet.alarms["b2"] = "later"
    assert "b2" not in view.alarms  # a published view does not change afterwards


def test_fleet_state_windows_swap_and_bad_input(forecaster):
    fleet = FleetState(BACKENDS, forecaster, window_capacity=50)
    ticks = chaos_telemetry(ticks=60)
    for tick in ticks:
        fleet.tick(tick, arrivals=10)
    assert set(fleet.windows) == {b.name for b in BACKENDS}
    w = fleet.windows["b2"]
    assert (len(w), w.ready, w.capacity, w.last_ts) == (50, True, 50, ticks[-1][2].ts)
    np.testing.assert_array_equal(w.features(), fleet.features()[2])
    fleet.set_forecaster(None)
    view = fleet.refresh(arrivals=5)
    assert view.model_version is None and math.isnan(view.backends[0].forecast_hi_ms)
    fleet.set_forecaster(forecaster)
    assert fleet.refresh(arrivals=5).model_version == forecaster.version_id
    late = replace(ticks[-1][0], ts=ticks[-1][0].ts + 10)
    with pytest.raises(UnknownBackendError, match="unknown backend 'zz'"):
        fleet.ingest([late, replace(late, backend="zz")])
    assert fleet.latest["b0"] is late  # the points before the bad one are kept
    with pytest.raises(ValueError, match="out-of-order or duplicate"):
        fleet.ingest([late])
    assert fleet.latest["b0"] is late
