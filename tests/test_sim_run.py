"""The run loop: determinism, common random numbers, what a router sees and when, chaos."""

from __future__ import annotations

import numpy as np
import pytest

from tools.routers.base import PolicyBase, RequestInfo
from tools.sim.chaos import ChaosEvent, compile_plan
from tools.sim.engine import ERROR, OK, REJECTED, TIMEOUT
from tools.sim.metrics import mean_interval, summarise, violations
from tools.sim.run import SimConfig, simulate
from tools.sim.scenario import SCENARIOS, Scenario, SyntheticTraffic, build
from tools.sim.spec import A100, DEFAULT_FLEET, H100
from tools.sim.workload import TIERS, from_arrays


class Fixed(PolicyBase):
    """Everything to one backend."""

    name = "fixed"

    def __init__(self, b: int = 0) -> None:
        self.b = b

    def choose(self, request, view):
        return self.b


class RoundRobin(PolicyBase):
    name = "rr"

    def __init__(self) -> None:
        self.k = -1

    def choose(self, request, view):
        self.k += 1
        return self.k % len(view.backends)


def _small(seed: int = 0, load: float = 0.4, **chaos) -> Scenario:
    events = (ChaosEvent(**chaos),) if chaos else ()
    return Scenario(
        name="small", seed=seed, duration_s=180.0, traffic=SyntheticTraffic(load=load), chaos=events
    )


def _run(scen: Scenario, policy, seed: int | None = None, **cfg):
    built = build(scen, seed)
    return simulate(built.workload, built.fleet, policy, plan=built.plan, config=SimConfig(**cfg))


def test_a_run_is_a_function_of_its_seed():
    a = _run(_small(), RoundRobin(), seed=4)
    b = _run(_small(), RoundRobin(), seed=4)
    c = _run(_small(), RoundRobin(), seed=5)
    assert np.array_equal(a.e2e_ms, b.e2e_ms) and np.array_equal(a.status, b.status)
    assert [t.telemetry for t in a.ticks] == [t.telemetry for t in b.ticks]
    assert len(a) != len(c) or not np.array_equal(a.arrival_s, c.arrival_s)


def test_policies_raced_on_one_seed_see_the_same_requests_and_the_same_chance_events():
    scen = _small(seed=7)
    one, two = build(scen), build(scen)
    for field in ("arrival_s", "input_tokens", "output_tokens", "tier", "u"):
        assert np.array_equal(getattr(one.workload, field), getattr(two.workload, field))
    fixed = simulate(one.workload, one.fleet, Fixed(0), plan=one.plan)
    rr = simulate(two.workload, two.fleet, RoundRobin(), plan=two.plan)
    # Base error rates strike by each request's own draw: the same requests fail on b0 in both.
    base = one.fleet[0].base_error_rate
    doomed = one.workload.u < base
    both_b0 = (fixed.backend == 0) & (rr.backend == 0)
    assert both_b0.any()
    assert np.array_equal(fixed.status[both_b0 & doomed], rr.status[both_b0 & doomed])
    assert (fixed.status[doomed] == ERROR).all()


def test_the_policy_receives_each_request_as_the_workload_holds_it():
    # the run loop builds RequestInfo slot by slot: it must equal the constructor's
    got = []

    class Keeper(RoundRobin):
        def choose(self, request, view):
            got.append(request)
            return super().choose(request, view)

    built = build(_small(seed=3))
    w = built.workload
    simulate(w, built.fleet, Keeper(), plan=built.plan)
    assert len(got) == len(w)
    for r, req in enumerate(got):
        tier = TIERS[int(w.tier[r])]
        want = RequestInfo(
            r, float(w.arrival_s[r]), int(w.input_tokens[r]), tier.name,
            tier.ttft_slo_ms, tier.e2e_slo_ms, w.prefix[r] if w.prefix is not None else (),
        )  # fmt: skip
        assert type(req) is RequestInfo and req == want and hash(req) == hash(want)


def test_what_the_router_sees_arrives_when_it_would():
    seen: dict[str, list] = {"scrape": [], "probe": [], "done": []}

    class Watcher(RoundRobin):
        def choose(self, request, view):
            b = super().choose(request, view)
            if request.request_id % 10 == 0:
                view.send_probe(b)
            assert sum(view.in_flight) >= 0
            return b

        def on_scrape(self, m, view):
            seen["scrape"].append((view.now_s, m))

        def on_probe(self, reply, view):
            seen["probe"].append((view.now_s, reply))

        def on_complete(self, c, view):
            seen["done"].append((view.now_s, c))

    r = _run(_small(), Watcher(), scrape_staleness_s=2.5, probe_delay_ms=40.0)
    for now, m in seen["scrape"]:
        assert now == pytest.approx(m.scraped_at_s + 2.5)
        assert 0.0 <= m.kv_cache_usage_perc <= 1.0
    assert seen["probe"]
    for now, p in seen["probe"]:
        assert now == pytest.approx(p.received_at_s)
        assert p.received_at_s - p.sent_at_s == pytest.approx(0.040)
    assert len(seen["done"]) == len(r)
    for now, c in seen["done"]:
        assert now == pytest.approx(c.finished_at_s)
        assert c.e2e_ms == pytest.approx(1000 * (c.finished_at_s - c.arrival_s))
        assert (c.ttft_ms is None) == (c.status != "ok" and c.ttft_ms is None)


def test_ticks_carry_router_side_telemetry_and_the_chaos_ground_truth():
    scen = _small(kind="latency_spike", backend="b2", start_s=60, duration_s=60, magnitude=3)
    r = _run(scen, RoundRobin())
    assert len(r.ticks) == 18
    assert sum(t.arrivals for t in r.ticks) == len(r)
    labelled = [t.index for t in r.ticks if t.chaos["b2"]]
    assert labelled == list(range(6, 12))
    assert not any(t.chaos["b0"] for t in r.ticks)
    spike = np.mean([p.p95_ms for t in r.ticks[7:12] for p in t.telemetry if p.backend == "b2"])
    calm = np.mean([p.p95_ms for t in r.ticks[1:6] for p in t.telemetry if p.backend == "b2"])
    assert spike > 2 * calm


def test_a_hung_backend_times_requests_out_and_restarts_empty():
    # A tenth of the fleet's capacity, all to b0 (about half of b0's own).
    scen = _small(load=0.1, kind="backend_failure", backend="b0", start_s=30, duration_s=60)
    r = _run(scen, Fixed(0), timeout_s=20.0)
    t = r.arrival_s
    during = (t > 31) & (t < 69)
    timed_out = r.status[during] == TIMEOUT
    assert timed_out.mean() > 0.98  # the rest: the base error rate's fast 5xx
    assert np.allclose(r.e2e_ms[during][timed_out], 20_000.0)
    # Requests sent in the last 20 s of the hang were still held at the restart: errors.
    late = (t > 71) & (t < 89)
    assert (r.status[late] == ERROR).all()
    after = t > 95
    assert (r.status[after] == OK).mean() > 0.95


def test_a_failing_backend_answers_5xx_at_once():
    scen = _small(
        load=0.1, kind="backend_failure", backend="b0", start_s=30, duration_s=60, mode="error"
    )
    r = _run(scen, Fixed(0))
    during = (r.arrival_s > 31) & (r.arrival_s < 89)
    assert (r.status[during] == ERROR).all()
    assert np.allclose(r.e2e_ms[during], DEFAULT_FLEET[0].rtt_ms)


def test_a_full_queue_rejects_with_429_and_timeouts_free_the_engine():
    spec = A100.derive("tiny", max_num_seqs=2, max_waiting=5, base_error_rate=0.0)
    n = 400  # 20 requests/s against two slots of about a second each
    w = from_arrays("flood", np.linspace(0, 20, n), np.full(n, 500), np.full(n, 100), seed=1)
    r = simulate(w, (spec,), Fixed(0), config=SimConfig(timeout_s=3.0))
    assert (r.status == REJECTED).sum() > 200
    assert (r.status == TIMEOUT).any() and (r.status == OK).any()
    # The aborted requests left the engine: later requests were admitted and completed.
    assert r.arrival_s[r.status == OK].max() > 15.0


def test_a_cascade_spreads_to_an_overloaded_neighbour_but_not_to_a_calm_one():
    fleet = (H100.derive("b0"), A100.derive("b1"), A100.derive("b2"))
    hot = Scenario(
        name="cascade", duration_s=300.0, fleet=fleet, traffic=SyntheticTraffic(load=0.3),
        chaos=(ChaosEvent(kind="cascading_failure", backend="b0", start_s=30, duration_s=250),),
    )  # fmt: skip

    class AvoidB0(PolicyBase):
        name = "avoid_b0"

        def __init__(self, spread: bool) -> None:
            self.spread = spread
            self.k = 0

        def choose(self, request, view):
            self.k += 1
            if request.arrival_s < 30:
                return self.k % 3
            return 1 + self.k % 2 if self.spread else 1

    piled = _run(hot, AvoidB0(spread=False))
    assert [name for _, name in piled.cascaded] == ["b1"]
    spread = _run(hot, AvoidB0(spread=True))
    assert spread.cascaded == []


def test_traffic_surge_and_kv_pressure_add_the_requests_they_promise():
    base = build(_small(seed=3)).workload
    surge = build(
        _small(seed=3, kind="traffic_surge", start_s=60, duration_s=100, magnitude=3.0)
    ).workload
    inside = lambda w: ((w.arrival_s >= 85) & (w.arrival_s < 135)).sum()  # noqa: E731
    assert inside(surge) / inside(base) == pytest.approx(3.0, rel=0.2)
    kv = build(_small(seed=3, kind="kv_pressure", start_s=60, duration_s=100)).workload
    window = lambda w: (w.arrival_s >= 60) & (w.arrival_s < 160)  # noqa: E731
    long = lambda w: w.input_tokens >= 8000  # noqa: E731
    assert (long(kv) & ~window(kv)).sum() == (long(base) & ~window(base)).sum()
    added = (long(kv) & window(kv)).sum() - (long(base) & window(base)).sum()
    assert added == len(kv) - len(base) > 0
    extra_tokens = kv.input_tokens.sum() - base.input_tokens.sum()
    # magnitude 1: the added prompts double the prompt tokens arriving during the window
    assert extra_tokens / 100.0 == pytest.approx(base.input_tokens.sum() / 180.0, rel=0.35)


def test_compiled_chaos_multiplies_slowdowns_and_steps_drift():
    plan = compile_plan(
        [
            ChaosEvent(kind="latency_spike", backend="b0", start_s=10, duration_s=30),
            ChaosEvent(kind="slow_replica", backend="b0", start_s=20, duration_s=40, magnitude=4),
            ChaosEvent(kind="gradual_drift", backend="b1", start_s=0, duration_s=40, magnitude=3),
        ],
        ["b0", "b1"],
        100.0,
        seed=0,
    )
    b0 = [(t, v) for t, b, act, v in plan.actions if b == 0]
    assert b0 == [(10, 2.0), (20, 8.0), (40, 4.0), (60, 1.0)]
    b1 = [v for t, b, act, v in plan.actions if b == 1]
    assert b1 == [1.5, 2.0, 2.5, 3.0, 1.0]


def test_summary_counts_a_request_as_violating_when_slow_or_failed():
    r = _run(_small(seed=2), RoundRobin())
    bad = violations(r)
    s = summarise(r)
    assert s["sla_violation_pct"] == pytest.approx(100 * bad.mean())
    assert s["goodput_rps"] == pytest.approx((~bad).sum() / r.duration_s)
    ttft_slo = np.array([t.ttft_slo_ms for t in TIERS])[r.tier]
    slow = np.nan_to_num(r.ttft_ms, nan=0.0) > ttft_slo
    assert (bad[slow]).all() and (bad[r.status != OK]).all()
    iv = mean_interval([1.0, 2.0, 3.0])
    assert iv.mean == 2.0 and iv.low == pytest.approx(2 - 4.302653 / 3**0.5)


def test_builtin_scenarios_cover_every_kind_named_in_the_issue():
    kinds = {ev.kind for s in SCENARIOS.values() for ev in s.chaos}
    assert kinds == {
        "latency_spike", "backend_failure", "cascading_failure", "traffic_surge",
        "gradual_drift", "anomaly_burst", "slow_replica", "kv_pressure",
    }  # fmt: skip
    assert {s.trace_source for s in SCENARIOS.values()} - {None} == {"azure_conv", "azure_code"}
