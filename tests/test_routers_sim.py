"""Every baseline through the request-level simulator: whole runs, behaviour a user relies on."""

from __future__ import annotations

import numpy as np
import pytest

from tools.routers.registry import POLICIES, make_policy
from tools.sim.chaos import ChaosEvent
from tools.sim.metrics import summarise
from tools.sim.run import profiles, simulate
from tools.sim.scenario import Scenario, SyntheticTraffic, build, scenario
from tools.sim.workload import at_load, from_arrays

ADAPTIVE = ("least_request", "peak_ewma", "outlier_ejection", "prequal", "c3", "llmd")


@pytest.fixture(scope="module")
def slow_replica_runs():
    sc = Scenario(
        name="slow_replica_short",
        seed=7,
        duration_s=400.0,
        traffic=SyntheticTraffic(load=0.35),
        chaos=(ChaosEvent(kind="slow_replica", backend="b2", start_s=60.0, duration_s=300.0),),
    )
    built = build(sc)
    runs = {}
    for name in POLICIES:
        policy = make_policy(name, profiles(built.fleet), seed=1)
        result = simulate(built.workload, built.fleet, policy, plan=built.plan)
        runs[name] = (policy, result, summarise(result))
    return built, runs


def test_every_baseline_serves_every_request_to_an_outcome(slow_replica_runs):
    built, runs = slow_replica_runs
    for _policy, result, summary in runs.values():
        assert len(result) == len(built.workload)
        assert summary["goodput_rps"] is not None and summary["goodput_rps"] >= 0


def test_adaptive_baselines_beat_round_robin_on_a_slow_replica(slow_replica_runs):
    # b2, the largest engine, 8 times slower for 300 s at 35% load: blind rotation keeps sending
    # it a quarter of the requests.
    _, runs = slow_replica_runs
    rr = runs["round_robin"][2]
    for name in ADAPTIVE:
        s = runs[name][2]
        assert s["sla_violation_pct"] < rr["sla_violation_pct"], name
        assert s["goodput_rps"] > rr["goodput_rps"], name


def test_prequal_routes_from_its_probe_pool(slow_replica_runs):
    built, runs = slow_replica_runs
    policy = runs["prequal"][0]
    n = len(built.workload)
    assert policy.probes_sent == pytest.approx(3 * n, rel=0.01)
    assert policy.pool_picks / n > 0.95


def _prefix_workload(seed: int = 3):
    """128 shared documents of 4,096 tokens, equally popular, each request one document plus a
    short question of its own: more prompt than one engine's cache holds for every document."""
    fleet = scenario("latency_spike").backends()
    rng = np.random.default_rng(seed)
    n = 3000
    arrival = np.sort(rng.uniform(0.0, 300.0, n))
    doc = rng.integers(0, 128, n)
    tail = rng.integers(2, 12, n)
    prefix = tuple(
        tuple(
            [int(d) * 1_000_003 + k for k in range(256)] + [10**12 + i * 64 + k for k in range(t)]
        )
        for i, (d, t) in enumerate(zip(doc, tail, strict=True))
    )
    w = from_arrays(
        "prefix_docs", arrival, (256 + tail) * 16, rng.integers(50, 400, n), seed=seed,
        duration_s=300.0, prefix=prefix, block_tokens=16,
    )  # fmt: skip
    return fleet, at_load(w, 0.7, fleet, 300.0)


def test_llmd_prefix_affinity_keeps_shared_prompts_on_the_endpoints_that_cached_them():
    fleet, w = _prefix_workload()
    with_prefix = make_policy("llmd", profiles(fleet), seed=1)
    without = make_policy("llmd", profiles(fleet), seed=1, weights={"prefix": 0.0})
    r_with = summarise(simulate(w, fleet, with_prefix))
    r_without = summarise(simulate(w, fleet, without))
    assert with_prefix.prefix_hits / with_prefix.prefix_blocks > 0.8
    assert r_with["ttft_p50_ms"] < r_without["ttft_p50_ms"]
    assert r_with["ttft_p99_ms"] < r_without["ttft_p99_ms"]
