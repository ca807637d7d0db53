"""The fleet simulator: queueing behaviour, feedback, noise, overload, validation, history."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tools.chaos import Scenario
from tools.fleet import (
    DEFAULT_FLEET,
    BackendSpec,
    erlang_c,
    steady_state_latency,
)
from tools.simulator import FleetSimulator, TickResult, random_chaos, simulate_history
from tools.telemetry import TICK_SECONDS
from tools.traffic import TrafficModel

NAMES = [s.name for s in DEFAULT_FLEET]
SPEC = {s.name: s for s in DEFAULT_FLEET}


def run_constant(loads: dict[str, float], ticks: int, **kw) -> list:
    """Drive a simulator with fixed per-backend request counts per tick."""
    sim = FleetSimulator(**kw)
    out = []
    for _ in range(ticks):
        sim.arrivals()
        out.append(sim.step(loads))
    return out


def split_by_capacity(n: int) -> dict[str, int]:
    caps = np.array([s.capacity_rps for s in DEFAULT_FLEET])
    counts = np.floor(n * caps / caps.sum()).astype(int)
    counts[0] += n - counts.sum()
    return dict(zip(NAMES, counts.tolist(), strict=True))


# -- the stationary curve -----------------------------------------------------------------------


def test_erlang_c_matches_known_values():
    assert erlang_c(1, 0.7) == pytest.approx(0.7)  # M/M/1: P(wait) = rho
    # M/M/2 at rho = 0.5: C = 2 rho^2 / (1 + rho) = 1/3.
    assert erlang_c(2, 0.5) == pytest.approx(1 / 3)
    assert erlang_c(3, 0.0) == 0.0


def test_idle_latency_is_the_base_latency_with_a_realistic_tail():
    for spec in DEFAULT_FLEET:
        p50, p95 = steady_state_latency(spec, 0.0)
        assert p50 == pytest.approx(spec.base_latency_ms, rel=1e-9)
        assert 1.6 <= p95 / p50 <= 2.5
        assert 60 <= spec.base_latency_ms <= 200
        assert 8 <= spec.capacity_rps <= 32


@pytest.mark.parametrize("spec", DEFAULT_FLEET, ids=NAMES)
def test_latency_curve_is_monotone_and_bends_sharply_near_capacity(spec):
    utils = np.linspace(0.0, 0.99, 100)
    curve = [steady_state_latency(spec, u * spec.capacity_rps) for u in utils]
    p50s, p95s = np.array(curve).T
    assert np.all(np.diff(p50s) > 0) and np.all(np.diff(p95s) > 0)
    at = {u: steady_state_latency(spec, u * spec.capacity_rps)[1] for u in (0.5, 0.8, 0.95)}
    assert at[0.95] > 4 * at[0.5]
    # Convex: the last 15 points of utilisation add more than the first 50 did.
    assert at[0.95] - at[0.8] > at[0.5] - steady_state_latency(spec, 0.0)[1]
    assert steady_state_latency(spec, spec.capacity_rps) == (spec.timeout_ms, spec.timeout_ms)


def test_simulator_settles_on_the_stationary_curve_without_noise():
    spec = SPEC["b0"]
    for util in (0.3, 0.7, 0.9):
        res = run_constant({"b0": util * spec.capacity_rps * TICK_SECONDS}, 60, noise=False)
        p50, p95 = steady_state_latency(spec, util * spec.capacity_rps)
        last = res[-1].backends["b0"]
        assert last.p50_ms == pytest.approx(p50, rel=1e-3)
        assert last.p95_ms == pytest.approx(p95, rel=1e-3)


def test_a_queue_takes_time_to_build_and_drains_after_overload():
    cap = SPEC["b0"].capacity_rps * TICK_SECONDS
    sim = FleetSimulator(noise=False)
    p95 = []
    for load in [0.5] * 3 + [0.95] * 20 + [1.3] * 20 + [0.5] * 12:
        sim.arrivals()
        p95.append(sim.step({"b0": load * cap}).backends["b0"].p95_ms)
    stationary_95 = steady_state_latency(SPEC["b0"], 0.95 * cap / TICK_SECONDS)[1]
    assert p95[3] < 0.9 * stationary_95  # not there at once...
    assert p95[22] == pytest.approx(stationary_95, rel=0.01)  # ...but within minutes
    overload = p95[23:43]
    assert np.all(np.diff(overload) >= 0)  # the backlog grows
    # Saturates: the queue limit caps the backlog, so latency plateaus below the timeout.
    assert 10_000 < overload[-1] <= SPEC["b0"].timeout_ms
    assert overload[-1] == pytest.approx(overload[-3], rel=0.01)
    assert p95[-1] == pytest.approx(p95[0], rel=0.01)  # drained and recovered


# -- routing feedback, noise, reproducibility ---------------------------------------------------


def test_same_seed_same_run_and_different_seed_different_run():
    def trace(seed):
        sim = FleetSimulator(seed=seed)
        points = []
        for _ in range(50):
            points += sim.step(split_by_capacity(sim.arrivals())).telemetry
        return points

    assert trace(5) == trace(5)
    assert trace(5) != trace(6)
    assert trace(-5) != trace(5)


def test_arrivals_do_not_depend_on_routing():
    a, b = FleetSimulator(seed=3), FleetSimulator(seed=3)
    for _ in range(100):
        n = a.arrivals()
        assert b.arrivals() == n
        a.step({"b0": n})
        b.step(split_by_capacity(n))


def test_arrivals_is_idempotent_within_a_tick_and_step_draws_it_if_skipped():
    a, b = FleetSimulator(seed=9), FleetSimulator(seed=9)
    assert a.arrivals() == a.arrivals()
    a.step({})
    b.step({})  # never asked: the stream still advances by one tick
    assert a.arrivals() == b.arrivals()


def test_sending_more_to_a_backend_raises_its_latency():
    def mean_p95(share_b0: float) -> float:
        sim = FleetSimulator(seed=11)
        vals = []
        for _ in range(120):
            n = sim.arrivals()
            k = round(share_b0 * n)
            res = sim.step({"b0": k, "b2": n - k})
            vals.append(res.backends["b0"].p95_ms)
        return float(np.median(vals[10:]))

    low, mid, high = mean_p95(0.4), mean_p95(0.7), mean_p95(0.95)
    assert low < mid < high
    assert high > 1.5 * low


def test_measured_p95_is_noisier_with_fewer_requests():
    def spread(requests_per_tick: float) -> float:
        util_load = {"b2": requests_per_tick}
        res = run_constant(util_load, 300, seed=2)
        p95 = np.array([r.backends["b2"].p95_ms for r in res])
        return float(np.std(np.log(p95)))

    assert spread(3) > 2 * spread(60)


def test_telemetry_shape_timestamps_and_littles_law():
    sim = FleetSimulator(seed=1, start_ts=1_000.0)
    for k in range(5):
        res = sim.step(split_by_capacity(sim.arrivals()))
        assert [p.backend for p in res.telemetry] == NAMES
        assert list(res.backends) == NAMES
        assert res.ts == 1_000.0 + (k + 1) * TICK_SECONDS == sim.ts
        for p in res.telemetry:
            bt = res.backends[p.backend]
            assert (p.rps, p.p50_ms, p.p95_ms, p.error_rate) == (
                bt.rps,
                bt.p50_ms,
                bt.p95_ms,
                bt.error_rate,
            )
            assert 0 < p.p50_ms <= p.p95_ms <= SPEC[p.backend].timeout_ms
            mean_latency_s = math.exp(bt.mu + bt.sigma**2 / 2) / 1000
            assert p.in_flight == pytest.approx(p.rps * mean_latency_s, rel=1e-9)


def test_latency_distribution_helpers_agree():
    res = run_constant({"b0": 250.0}, 30, seed=4)[-1].backends["b0"]
    rng = np.random.default_rng(0)
    draws = res.sample(200_000, rng)
    for sla in (150.0, 300.0, 600.0):
        assert np.mean(draws > sla) == pytest.approx(res.frac_above(sla), abs=0.005)
    assert res.quantile(0.5) == pytest.approx(math.exp(res.mu))
    assert res.violation_prob(300.0) >= res.frac_above(300.0)
    assert res.frac_above(res.timeout_ms) == 0.0
    assert np.all(draws <= res.timeout_ms)


def test_overload_saturates_at_the_timeout_with_errors_and_no_nan():
    res = run_constant({"b1": 8.0 * TICK_SECONDS * 3}, 120, seed=0)
    last = res[-1].backends["b1"]
    assert 10_000 < last.p95_ms <= SPEC["b1"].timeout_ms
    assert last.error_rate > 0.5 and last.error_prob > 0.5
    assert last.shed_frac > 0.5  # the queue limit sheds what cannot be served
    for r in res:
        for p in r.telemetry:
            assert all(math.isfinite(v) for v in (p.rps, p.p50_ms, p.p95_ms, p.in_flight))
            assert 0.0 <= p.error_rate <= 1.0


def test_idle_backend_still_reports_a_health_probe():
    res = run_constant({}, 3, seed=0)[-1]
    for p in res.telemetry:
        assert p.rps == 0.0 and p.in_flight == 0.0
        assert math.isfinite(p.p95_ms) and p.p95_ms > 0


# -- numerical robustness ----------------------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def assert_tick_sane(res: TickResult, assigned: dict[str, float]) -> None:
    """Every telemetry and BackendTick field of a tick is finite and within its range."""
    assert [p.backend for p in res.telemetry] == NAMES
    for p in res.telemetry:
        b = res.backends[p.backend]
        timeout = SPEC[p.backend].timeout_ms
        where = f"t={res.t_s} {p.backend} assigned={assigned.get(p.backend, 0)}: {b}"
        assert math.isfinite(p.ts) and p.ts == res.ts, where
        assert (p.rps, p.p50_ms, p.p95_ms, p.error_rate, p.in_flight) == (
            b.rps,
            b.p50_ms,
            b.p95_ms,
            b.error_rate,
            b.in_flight,
        ), where
        assert p.rps == pytest.approx(assigned.get(p.backend, 0) / TICK_SECONDS), where
        assert b.requests == assigned.get(p.backend, 0), where
        assert 0.0 < b.p50_ms <= b.p95_ms <= timeout == b.timeout_ms, where
        assert 0.0 <= b.error_rate <= 1.0, where
        assert math.isfinite(b.in_flight) and b.in_flight >= 0.0, where
        assert math.isfinite(b.mu) and math.isfinite(b.sigma) and b.sigma >= 0.0, where
        for prob in (b.error_prob, b.shed_frac, b.other_error_prob):
            assert 0.0 <= prob <= 1.0, where
        assert b.error_prob >= b.shed_frac, where
        assert math.isfinite(b.utilisation) and b.utilisation >= 0.0, where
        assert 0.0 <= b.violation_prob(300.0) <= 1.0, where
        assert 0.0 < b.quantile(0.5) <= timeout, where


def test_recorded_sequence_that_drained_idle_queues_to_nan_stays_finite():
    """Regression: b1 and b3 sat idle ~150 ticks after load. The implicit step shrank their
    level geometrically into subnormal floats, 2 / P(wait) overflowed and the tick after the
    recording crashed in `_binomial` on a NaN error probability. Idle queues now empty out."""
    seq = json.loads((FIXTURES / "sim_nan_sequence.json").read_text())
    sim = FleetSimulator(seed=3)
    # The recording stops one tick short of the crash; keep its last routing for a while longer.
    for assigned in seq + [seq[-1]] * 300:
        sim.arrivals()
        assert_tick_sane(sim.step(assigned), assigned)


def test_a_backend_idle_for_long_after_load_reports_its_idle_latency():
    for noise in (False, True):
        sim = FleetSimulator(seed=1, noise=noise)
        for _ in range(30):  # loaded to 90%: a queue builds
            sim.arrivals()
            sim.step({s.name: 0.9 * s.capacity_rps * TICK_SECONDS for s in DEFAULT_FLEET})
        for _ in range(600):  # then nothing, for well past the point where levels underflowed
            sim.arrivals()
            res = sim.step({})
            assert_tick_sane(res, {})
        if not noise:
            for s in DEFAULT_FLEET:
                idle = steady_state_latency(s, 0.0)
                got = res.backends[s.name]
                assert (got.p50_ms, got.p95_ms) == pytest.approx(idle, rel=1e-6)
                assert got.in_flight == 0.0


@pytest.mark.parametrize("noise", [True, False], ids=["noise", "mean"])
def test_many_server_backends_at_light_load_stay_finite(noise):
    """With hundreds of slots, P(wait) at light load is ~1e-300 and 2 / P(wait) overflowed."""
    fleet = [
        BackendSpec(
            f"c{c}", capacity_rps=10.0 * c, base_latency_ms=150.0, cost_per_request=0.001, servers=c
        )
        for c in (60, 250, 400)
    ]
    sim = FleetSimulator(fleet=fleet, seed=0, noise=noise)
    for k in range(300):
        sim.arrivals()
        util = (k % 150) / 150 * 0.6
        assigned = {s.name: util * s.capacity_rps * TICK_SECONDS for s in fleet}
        res = sim.step(assigned)
        for b in res.backends.values():
            for v in (b.p50_ms, b.p95_ms, b.error_rate, b.mu, b.sigma, b.error_prob, b.in_flight):
                assert math.isfinite(v), (k, b)
            assert 0.0 < b.p50_ms <= b.p95_ms <= b.timeout_ms and 0.0 <= b.error_prob <= 1.0


def _random_assignments(rng: np.random.Generator, ticks: int):
    """Per backend, regimes of random length: idle (long, so a loaded queue drains to nothing),
    light or heavy load, overload far past capacity, and single-tick spikes and drops to zero.
    Sometimes the tick's arrivals are routed exactly (the expected-count path of `step`)."""
    caps = {s.name: s.capacity_rps * TICK_SECONDS for s in DEFAULT_FLEET}
    regime = dict.fromkeys(caps, "idle")
    left = dict.fromkeys(caps, 0)
    for _ in range(ticks):
        for name in caps:
            if left[name] == 0:
                regime[name] = str(rng.choice(["idle", "load", "overload", "flicker"]))
                left[name] = int(
                    rng.integers(200, 400) if regime[name] == "idle" else rng.integers(1, 60)
                )
            left[name] -= 1
        out: dict[str, float] = {}
        for name, cap in caps.items():
            r = regime[name]
            if r == "idle":
                continue
            if r == "load":
                out[name] = int(rng.uniform(0.0, 1.0) * cap)
            elif r == "overload":
                out[name] = int(cap * rng.choice([1.2, 3.0, 50.0, 1e4]))
            else:  # flicker: zero, a spike, or a fractional trickle
                out[name] = float(rng.choice([0.0, 2.0 * cap, 0.9 * cap, 1e-300, 1e-9, 0.3]))
        yield out


@pytest.mark.parametrize("chaos", [False, True], ids=["calm", "chaos"])
def test_random_routing_with_idle_spells_overloads_and_drops_stays_finite(chaos):
    ticks = 3000
    rng = np.random.default_rng(20240611 + chaos)
    if chaos:
        events = random_chaos(ticks * TICK_SECONDS, NAMES, rng, chaos_per_hour=3.0)
        scen = Scenario(name="fuzz", seed=5, duration_s=ticks * TICK_SECONDS, chaos=events)
        sim = FleetSimulator(scen)
    else:
        sim = FleetSimulator(seed=5)
    for assigned in _random_assignments(rng, ticks):
        n = sim.arrivals()
        live = [k for k, v in assigned.items() if v > 0]
        if live and rng.random() < 0.3:  # route exactly the arrivals among the busy backends
            counts = rng.multinomial(n, np.full(len(live), 1.0 / len(live))).tolist()
            assigned = dict.fromkeys(NAMES, 0) | dict(zip(live, counts, strict=True))
        res = sim.step(assigned)
        if chaos:
            failed = [b for b in res.backends.values() if b.failed]
            for b in failed:
                assert b.error_prob == 1.0 and b.p50_ms == b.p95_ms == b.timeout_ms
        assert_tick_sane(res, assigned)


# -- against a discrete-event simulation --------------------------------------------------------


def _mg1_discrete_event(spec: BackendSpec, rps: float, seconds: float, seed: int):
    """Per-request latencies (ms) and arrival times of an M/G/1 queue, Lindley's recursion."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rps * seconds)
    t = np.sort(rng.uniform(0.0, seconds, n))
    s2 = spec.service_sigma**2
    mean_s = spec.mean_service_ms / 1000
    service = rng.lognormal(math.log(mean_s) - s2 / 2, spec.service_sigma, n).tolist()
    gaps = np.diff(t, prepend=0.0).tolist()
    wait = 0.0
    latency = np.empty(n)
    for i in range(n):
        if i:
            wait = max(0.0, wait + service[i - 1] - gaps[i])
        latency[i] = wait + service[i]
    return latency * 1000 + spec.overhead_ms, t


def test_matches_a_discrete_event_queue_at_high_load():
    """The calibration the module docstring describes, kept for one backend and load."""
    spec, util, hours = SPEC["b3"], 0.85, 3
    lat, t = _mg1_discrete_event(spec, util * spec.capacity_rps, hours * 3600, seed=1)
    window = (t // TICK_SECONDS).astype(int)
    des_p95 = [np.percentile(lat[window == k], 95) for k in range(30, window.max())]

    scen = Scenario(
        name="calibration",
        seed=1,
        duration_s=hours * 3600,
        fleet=[spec],
        traffic=TrafficModel(
            mean_rps=util * spec.capacity_rps, diurnal_amplitude=0, burst_rate_per_hour=0
        ),
    )
    sim = FleetSimulator(scen)
    model_p95, model_mean, weights = [], [], []
    while not sim.done:
        n = sim.arrivals()
        bt = sim.step({"b3": n}).backends["b3"]
        model_p95.append(bt.p95_ms)
        model_mean.append(math.exp(bt.mu + bt.sigma**2 / 2))
        weights.append(n)
    assert np.average(model_mean[30:], weights=weights[30:]) == pytest.approx(lat.mean(), rel=0.15)
    assert np.median(model_p95[30:]) == pytest.approx(np.median(des_p95), rel=0.2)
    assert np.mean(model_p95[30:]) == pytest.approx(np.mean(des_p95), rel=0.25)


# -- scenarios, traces and validation -----------------------------------------------------------


def test_scenario_run_ends_at_its_duration():
    scen = Scenario(name="short", seed=1, duration_s=95.0)
    sim = FleetSimulator(scen)
    ticks = 0
    while not sim.done:
        sim.step(split_by_capacity(sim.arrivals()))
        ticks += 1
    assert ticks == 10
    with pytest.raises(RuntimeError, match="finished"):
        sim.arrivals()


def test_a_recorded_trace_drives_the_arrivals():
    counts = [5, 0, 17, 3, 250, 8]
    scen = Scenario(name="trace", traffic=TrafficModel.from_counts(counts))
    sim = FleetSimulator(scen)
    seen = []
    while not sim.done:
        seen.append(sim.arrivals())
        sim.step({"b0": seen[-1]})
    assert seen == counts
    assert TrafficModel.from_counts(counts).rate_at(25.0) == pytest.approx(1.7)


def test_traffic_model_has_a_diurnal_rhythm_and_validates():
    m = TrafficModel(mean_rps=10, diurnal_amplitude=0.5, period_s=100)
    assert m.rate_at(0) == pytest.approx(10)
    assert m.rate_at(25) == pytest.approx(15)
    assert m.rate_at(75) == pytest.approx(5)
    for bad in ({"mean_rps": -1}, {"mean_rps": math.nan}, {"diurnal_amplitude": 1.5}):
        with pytest.raises(ValueError):
            TrafficModel(**bad)
    with pytest.raises(ValueError):
        TrafficModel.from_counts([1, -2])
    with pytest.raises(ValueError):
        TrafficModel.from_counts([1, math.inf])
    with pytest.raises(ValueError):
        m.rate_at(-1)


@pytest.mark.parametrize(
    "assigned, message",
    [
        ({"nope": 1}, "unknown backend"),
        ({"b0": -1}, "finite and >= 0"),
        ({"b0": math.nan}, "finite and >= 0"),
        ({"b0": math.inf}, "finite and >= 0"),
        ({"b0": "3"}, "must be a number"),
        ({"b0": True}, "must be a number"),
    ],
)
def test_step_rejects_bad_assignments(assigned, message):
    sim = FleetSimulator()
    with pytest.raises(ValueError, match=message):
        sim.step(assigned)
    assert sim.tick == 0  # nothing happened


@pytest.mark.parametrize(
    "fields",
    [
        {"capacity_rps": 0.0},
        {"capacity_rps": math.nan},
        {"base_latency_ms": -5.0},
        {"servers": 0},
        {"servers": 2.5},
        {"base_error_rate": 1.0},
        {"cost_per_request": -0.1},
        {"servers": 8},  # 8 slots at 10 rps means 800 ms of service: no idle median of 100 ms
        {"name": ""},
    ],
)
def test_backend_spec_rejects_bad_values(fields):
    base = {"name": "x", "capacity_rps": 10.0, "base_latency_ms": 100.0, "cost_per_request": 0.001}
    with pytest.raises(ValueError):
        BackendSpec(**(base | fields))


def test_simulator_rejects_bad_fleets_and_seeds():
    with pytest.raises(ValueError, match="empty"):
        FleetSimulator(fleet=())
    with pytest.raises(ValueError, match="duplicate"):
        FleetSimulator(fleet=(DEFAULT_FLEET[0], DEFAULT_FLEET[0]))
    with pytest.raises(ValueError, match="seed"):
        FleetSimulator(seed=1.5)  # type: ignore[arg-type]


# -- training history ---------------------------------------------------------------------------


def test_history_covers_a_wide_load_range_with_chaos():
    hours = 12
    points = simulate_history(hours * 3600, seed=0)
    assert len(points) == hours * 360 * len(DEFAULT_FLEET)
    assert simulate_history(3600, seed=1) == simulate_history(3600, seed=1)
    assert simulate_history(3600, seed=1) != simulate_history(3600, seed=2)
    for name in NAMES:
        util = np.array([p.rps for p in points if p.backend == name]) / SPEC[name].capacity_rps
        assert np.quantile(util, 0.05) < 0.2
        assert np.quantile(util, 0.99) > 0.95
        assert np.mean(util > 0.9) > 0.01
    p95 = np.array([p.p95_ms for p in points])
    errors = np.array([p.error_rate for p in points])
    assert p95.max() == DEFAULT_FLEET[0].timeout_ms  # overload or failure happened
    assert np.mean(errors > 0.5) > 0.001
    assert all(math.isfinite(p.p95_ms) for p in points)


def test_history_validates_its_arguments():
    with pytest.raises(ValueError):
        simulate_history(0)
    with pytest.raises(ValueError):
        simulate_history(3600, chaos_per_hour=-1)
