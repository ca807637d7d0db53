"""Chaos events: each acts in its window and only there, they compose, and bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from tools.chaos import (
    ANOMALY_ERROR_RATE,
    CHAOS_KINDS,
    SCENARIOS,
    ChaosEvent,
    Scenario,
    scenario,
)
from tools.fleet import DEFAULT_FLEET, BackendSpec
from tools.simulator import FleetSimulator
from tools.telemetry import TICK_SECONDS

NAMES = [s.name for s in DEFAULT_FLEET]
CAP = {s.name: s.capacity_rps * TICK_SECONDS for s in DEFAULT_FLEET}
START, DURATION = 300.0, 300.0
# Ticks before, inside and after a window [300 s, 600 s).
BEFORE, INSIDE, AFTER = range(0, 30), range(30, 60), range(60, 90)


def run(events, loads=None, ticks=90, noise=False, seed=0):
    """Fixed per-backend loads (40% of capacity by default), so only chaos changes anything."""
    loads = loads or {n: 0.4 * c for n, c in CAP.items()}
    scen = Scenario(name="t", seed=seed, duration_s=ticks * TICK_SECONDS, chaos=events)
    sim = FleetSimulator(scen, noise=noise)
    out = []
    while not sim.done:
        sim.arrivals()
        out.append(sim.step(loads))
    return out, sim


def series(results, backend, field):
    return np.array([getattr(r.backends[backend], field) for r in results])


def event(kind, **kw):
    kw.setdefault("start_s", START)
    kw.setdefault("duration_s", DURATION)
    if kind != "traffic_surge":
        kw.setdefault("backend", "b0")
    return ChaosEvent(kind=kind, **kw)


def test_latency_spike_doubles_latency_in_its_window_only():
    calm, _ = run([])
    spiked, _ = run([event("latency_spike")])
    ratio = series(spiked, "b0", "p50_ms") / series(calm, "b0", "p50_ms")
    assert np.allclose(ratio[list(INSIDE)], 2.0)
    assert np.allclose(ratio[list(BEFORE)], 1.0) and np.allclose(ratio[list(AFTER)], 1.0)
    assert np.allclose(series(spiked, "b1", "p50_ms"), series(calm, "b1", "p50_ms"))
    kinds = [r.backends["b0"].chaos for r in spiked]
    assert all(kinds[i] == ("latency_spike",) for i in INSIDE)
    assert all(kinds[i] == () for i in [*BEFORE, *AFTER])


def test_backend_failure_hangs_the_backend_then_it_recovers():
    res, _ = run([event("backend_failure")])
    failed, err = series(res, "b0", "failed"), series(res, "b0", "error_rate")
    p95 = series(res, "b0", "p95_ms")
    assert failed[list(INSIDE)].all() and not failed[list(BEFORE)].any()
    assert not failed[list(AFTER)].any()
    assert np.all(err[list(INSIDE)] == 1.0) and np.all(p95[list(INSIDE)] == 30_000.0)
    assert np.all(p95[list(AFTER)[3:]] < 1_000)  # restarted empty


def test_partial_failure_removes_that_share_of_capacity():
    res, _ = run([event("backend_failure", magnitude=0.5)])
    util = series(res, "b0", "utilisation")
    assert util[INSIDE[0]] == pytest.approx(2 * util[BEFORE[-1]], rel=0.05)
    assert not series(res, "b0", "failed").any()


def test_a_dead_backend_stays_visible_without_traffic():
    loads = {"b1": 0.4 * CAP["b1"]}  # nothing routed to b0
    res, _ = run([event("backend_failure")], loads=loads, noise=True)
    err = series(res, "b0", "error_rate")
    assert np.all(err[list(INSIDE)] == 1.0) and np.all(err[list(BEFORE)] < 1.0)


def test_cascading_failure_spreads_to_overloaded_neighbours_only():
    # b0 fails; b3 runs above the 0.9 threshold, b2 below it.
    loads = {"b0": 0.4 * CAP["b0"], "b2": 0.5 * CAP["b2"], "b3": 0.95 * CAP["b3"]}
    res, _ = run([event("cascading_failure")], loads=loads)
    b0, b2, b3 = (series(res, b, "failed") for b in ("b0", "b2", "b3"))
    assert b0[list(INSIDE)].all()
    assert not b2.any()
    first = INSIDE[0]
    assert not b3[first : first + 6].any()  # 60 s above the threshold first...
    assert b3[first + 6 : INSIDE[-1] + 1].all()  # ...then it fails too, for the rest of the window
    assert not b3[list(AFTER)].any() and not b0[list(AFTER)].any()
    assert res[first + 7].backends["b3"].chaos == ("cascading_failure",)


def test_cascade_spreads_further_as_the_load_moves_on():
    """Naive rerouting: each failure pushes its share onto the survivors, which fail in turn."""
    scen = Scenario(name="c", seed=0, duration_s=900.0, chaos=[event("cascading_failure")])
    sim = FleetSimulator(scen, noise=False)
    alive = set(NAMES)
    dead_at = {}
    while not sim.done:
        n = 0.45 * sum(CAP.values())
        share = {b: n / len(alive) for b in alive}
        res = sim.step(share)
        for b, bt in res.backends.items():
            if bt.failed and b in alive:
                alive.discard(b)
                dead_at[b] = res.t_s
        if not alive:
            break
    assert dead_at["b0"] == START
    assert len(dead_at) >= 3  # it spread beyond the first neighbour


def test_traffic_surge_triples_the_arrival_rate_in_its_window():
    scen = Scenario(
        name="s", seed=1, duration_s=900.0, chaos=[event("traffic_surge", duration_s=300.0)]
    )
    sim = FleetSimulator(scen)
    expected, counts = [], []
    while not sim.done:
        counts.append(sim.arrivals())
        expected.append(sim.expected_arrivals)
        sim.step({})
    expected = np.array(expected)
    base = scen.traffic.mean_rps * TICK_SECONDS
    plateau = list(range(37, 54))  # after the 60 s ramp, before the ramp down
    assert np.all(expected[plateau] / base == pytest.approx(3.0, rel=0.08))
    assert np.all(expected[list(BEFORE)] < 1.5 * base) and np.all(expected[61:] < 1.5 * base)
    assert np.mean(np.array(counts)[plateau]) > 2.5 * np.mean(np.array(counts)[list(BEFORE)])


def test_gradual_drift_shifts_the_load_latency_relation_progressively():
    res, _ = run([event("gradual_drift", duration_s=300.0, magnitude=1.6)])
    calm, _ = run([])
    ratio = series(res, "b0", "p50_ms") / series(calm, "b0", "p50_ms")
    inside = ratio[list(INSIDE)]
    assert np.all(np.diff(inside) > 0)  # steadily worse
    assert inside[-1] > 1.3
    assert np.allclose(ratio[list(BEFORE)], 1.0) and np.allclose(ratio[list(AFTER)[5:]], 1.0)
    util = series(res, "b0", "utilisation")
    assert util[INSIDE[-1]] == pytest.approx(1.6 * util[0], rel=0.02)  # capacity fell 1/1.6


def test_anomaly_bursts_are_short_labelled_and_inside_the_window():
    calm, _ = run([])
    res, _ = run([event("anomaly_burst")])
    labelled = np.array(["anomaly_burst" in r.backends["b0"].chaos for r in res])
    lat = series(res, "b0", "p50_ms") / series(calm, "b0", "p50_ms")
    err = series(res, "b0", "error_rate") - series(calm, "b0", "error_rate")
    anomalous = (lat > 1.5) | (err > 0.1)
    assert np.array_equal(labelled, anomalous)  # the labels are exactly the anomalous ticks
    assert labelled[list(INSIDE)].sum() >= 3
    assert not labelled[list(BEFORE)].any() and not labelled[list(AFTER)].any()
    assert labelled[list(INSIDE)].mean() < 0.7  # bursts, not a level shift
    assert np.allclose(lat[labelled & (lat > 1.5)], 4.0)
    assert np.allclose(err[labelled & (err > 0.1)], ANOMALY_ERROR_RATE)


def test_events_compose():
    calm, _ = run([])
    res, _ = run(
        [
            event("latency_spike"),
            event("latency_spike", start_s=450.0, magnitude=1.5),
            event("backend_failure", backend="b1"),
        ]
    )
    ratio = series(res, "b0", "p50_ms") / series(calm, "b0", "p50_ms")
    assert ratio[40] == pytest.approx(2.0) and ratio[50] == pytest.approx(3.0)
    assert res[50].backends["b0"].chaos == ("latency_spike", "latency_spike")
    assert series(res, "b1", "failed")[list(INSIDE)].all()


def test_chaos_is_reproducible_with_noise():
    a, _ = run([event("anomaly_burst"), event("traffic_surge")], noise=True, seed=4)
    b, _ = run([event("anomaly_burst"), event("traffic_surge")], noise=True, seed=4)
    assert [r.telemetry for r in a] == [r.telemetry for r in b]


# -- the built-in scenarios ---------------------------------------------------------------------


def test_every_kind_has_a_one_hour_scenario_starting_after_warm_up():
    assert set(CHAOS_KINDS) <= set(SCENARIOS)
    for name, scen in SCENARIOS.items():
        assert scen.duration_s == 3600.0
        assert {e.kind for e in scen.chaos} == {name}
        for e in scen.chaos:
            assert 20 * 60 <= e.start_s <= 25 * 60
            assert e.backend in (None, "b0")


def test_scenario_lookup_returns_a_copy_and_explains_typos():
    s = scenario("latency_spike")
    assert s == SCENARIOS["latency_spike"] and s is not SCENARIOS["latency_spike"]
    with pytest.raises(ValueError, match="did you mean 'latency_spike'") as err:
        scenario("latency-spike")
    for name in SCENARIOS:
        assert name in str(err.value)


def test_scenarios_round_trip_through_json():
    for scen in SCENARIOS.values():
        again = Scenario.model_validate_json(scen.model_dump_json())
        assert again == scen
    custom = Scenario(
        name="custom",
        fleet=[
            "b0",
            {"name": "gpu", "capacity_rps": 20, "base_latency_ms": 90, "cost_per_request": 0.003},
        ],
        chaos=[{"kind": "backend_failure", "start_s": 60, "backend": "gpu"}],
    )
    assert Scenario.model_validate(json.loads(custom.model_dump_json())) == custom
    assert [b.name for b in custom.backends()] == ["b0", "gpu"]
    assert isinstance(custom.backends()[1], BackendSpec)
    assert [b.name for b in FleetSimulator(custom).fleet] == ["b0", "gpu"]


def test_event_defaults_per_kind():
    e = ChaosEvent(kind="latency_spike", start_s=0, backend="b0")
    assert (e.duration_s, e.magnitude) == (300.0, 2.0)
    assert ChaosEvent(kind="traffic_surge", start_s=0).magnitude == 3.0


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "latency_spike", "start_s": 0},  # no backend
        {"kind": "traffic_surge", "start_s": 0, "backend": "b0"},
        {"kind": "latency_spike", "start_s": 0, "backend": "b0", "magnitude": 0.5},
        {"kind": "backend_failure", "start_s": 0, "backend": "b0", "magnitude": 1.5},
        {"kind": "cascading_failure", "start_s": 0, "backend": "b0", "magnitude": 0.0},
        {"kind": "traffic_surge", "start_s": 0, "magnitude": -3},
        {"kind": "latency_spike", "start_s": -1, "backend": "b0"},
        {"kind": "latency_spike", "start_s": float("nan"), "backend": "b0"},
        {"kind": "latency_spike", "start_s": 0, "duration_s": 0, "backend": "b0"},
        {"kind": "meteor_strike", "start_s": 0, "backend": "b0"},
        {"kind": "latency_spike", "start_s": 0, "backend": "b0", "colour": "red"},
    ],
)
def test_bad_events_are_refused(fields):
    with pytest.raises(ValidationError):
        ChaosEvent(**fields)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"chaos": [{"kind": "latency_spike", "start_s": 0, "backend": "b9"}]}, "unknown backend"),
        ({"chaos": [{"kind": "traffic_surge", "start_s": 4000}]}, "after the scenario ends"),
        ({"fleet": ["b0", "b0"]}, "duplicate"),
        ({"fleet": ["b7"]}, "unknown backend name"),
        ({"duration_s": 0}, "greater than 0"),
    ],
)
def test_bad_scenarios_are_refused(fields, message):
    with pytest.raises(ValidationError, match=message):
        Scenario(name="bad", **fields)
