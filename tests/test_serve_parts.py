"""The service's parts on their own: the decision writer's full policy, engine-metric deltas,
the fleet file, the rate limiter, constant-time token checks."""

from __future__ import annotations

import threading

import pytest

from arcpoint.serve.engine_metrics import (
    EngineScrape,
    Histogram,
    ScrapeDeltas,
    histogram_quantile,
    parse_prometheus,
)
from arcpoint.serve.fleet_file import FleetFileError, load_fleet
from arcpoint.serve.security import RateLimiter, token_ok
from arcpoint.serve.writer import DecisionWriter


def test_writer_drops_and_counts_when_full_and_never_blocks():
    gate = threading.Event()
    written: list[int] = []

    def slow_write(rows):
        gate.wait(5)
        written.extend(rows)

    w = DecisionWriter(slow_write, max_queue=2, batch=1, linger_s=0.0)
    results = [w.submit(i) for i in range(6)]
    # One row may already be held by the blocked writer thread; the queue holds two more.
    assert results[:2] == [True, True]
    assert results.count(False) == w.stats.dropped >= 3
    gate.set()
    assert w.flush_through(w.submitted, timeout=5)
    assert w.close(timeout=5)
    assert written == [i for i, ok in enumerate(results) if ok]
    assert w.submit(99) is False and w.stats.dropped == results.count(False) + 1


def test_writer_retries_then_counts_a_failing_batch():
    calls = []

    def flaky(rows):
        calls.append(list(rows))
        if len(calls) <= 2:
            raise OSError("disk hiccup")

    w = DecisionWriter(flaky, retries=3, retry_delay_s=0.0, linger_s=0.0)
    w.submit("a")
    assert w.flush_through(1, timeout=5)
    assert w.stats.written == 1 and w.stats.failed == 0
    w2 = DecisionWriter(lambda rows: 1 / 0, retries=1, retry_delay_s=0.0, linger_s=0.0)
    w2.submit("b")
    assert w2.flush_through(1, timeout=5)
    assert w2.stats.failed == 1 and "ZeroDivisionError" in w2.stats.last_error
    w.close()
    w2.close()


def test_histogram_quantile_interpolates_like_prometheus():
    bounds = [0.1, 0.2, 0.4, float("inf")]
    assert histogram_quantile(0.5, bounds, [0, 10, 20, 20]) == pytest.approx(0.2)
    assert histogram_quantile(0.75, bounds, [0, 10, 20, 20]) == pytest.approx(0.3)
    assert histogram_quantile(0.99, bounds, [0, 0, 0, 5]) == pytest.approx(0.4)
    assert histogram_quantile(0.5, bounds, [0, 0, 0, 0]) is None


VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{model_name="m"}} {running}
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{model_name="m"}} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{model_name="m"}} 0.25
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{{le="0.5",model_name="m"}} {b1}
vllm:e2e_request_latency_seconds_bucket{{le="1.0",model_name="m"}} {b2}
vllm:e2e_request_latency_seconds_bucket{{le="+Inf",model_name="m"}} {b2}
vllm:e2e_request_latency_seconds_count{{model_name="m"}} {b2}
vllm:e2e_request_latency_seconds_sum{{model_name="m"}} 10.0
# TYPE vllm:request_success_total counter
vllm:request_success_total{{finished_reason="stop",model_name="m"}} {stop}
vllm:request_success_total{{finished_reason="abort",model_name="m"}} {abort}
"""


def test_a_vllm_metrics_page_is_read_as_deltas_between_scrapes():
    deltas = ScrapeDeltas({"b0": 0})
    first = parse_prometheus("b0", VLLM_PAGE.format(running=3, b1=10, b2=10, stop=10, abort=0))
    assert (first.num_requests_running, first.num_requests_waiting) == (3, 2)
    assert first.kv_cache_usage_perc == 0.25
    deltas.metrics(first, 100.0)
    second = parse_prometheus("b0", VLLM_PAGE.format(running=5, b1=10, b2=20, stop=18, abort=2))
    m = deltas.metrics(second, 105.0)
    # The 10 requests finished between the scrapes all took 0.5-1.0 s.
    assert 500.0 <= m.e2e_p50_ms <= 1000.0 and m.e2e_p95_ms == pytest.approx(975.0)
    assert (m.completed, m.errors) == (10, 2)
    with pytest.raises(ValueError, match="num_requests_running"):
        parse_prometheus("b0", "# TYPE foo gauge\nfoo 1\n")


def test_a_restarted_engine_is_not_read_as_negative_traffic():
    deltas = ScrapeDeltas({"b0": 0})
    h = Histogram(buckets=((1.0, 50), (float("inf"), 50)), count=50)
    deltas.metrics(
        EngineScrape(backend="b0", num_requests_running=1, e2e_request_latency_seconds=h), 1
    )
    after = Histogram(buckets=((1.0, 4), (float("inf"), 4)), count=4)
    m = deltas.metrics(
        EngineScrape(backend="b0", num_requests_running=1, e2e_request_latency_seconds=after), 2
    )
    assert m.completed == 4


def test_histogram_rejects_decreasing_buckets():
    with pytest.raises(ValueError, match="non-decreasing"):
        Histogram(buckets=((0.1, 5), (0.2, 3)), count=5)


def test_fleet_file_errors_name_the_entry(tmp_path):
    assert [b.name for b in load_fleet(None).backends] == ["b0", "b1", "b2", "b3"]
    good = tmp_path / "fleet.yaml"
    good.write_text(
        "backends:\n"
        "  - {name: a, cost_per_request: 0.001, metrics_url: 'http://127.0.0.1:9/metrics'}\n"
        "  - {name: b, cost_per_request: 0.002, capacity_rps: 8}\n"
    )
    fleet = load_fleet(good)
    assert fleet.scrape_targets() == {"a": "http://127.0.0.1:9/metrics"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends:\n  - {name: a, cost_per_request: -1}\n  - {name: a, cost_per_request: 1}\n"
    )
    with pytest.raises(FleetFileError, match=r"backends\.0\.cost_per_request"):
        load_fleet(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "backends:\n  - {name: a, cost_per_request: 1}\n  - {name: a, cost_per_request: 1}\n"
    )
    with pytest.raises(FleetFileError, match="duplicate backend names: a"):
        load_fleet(dup)
    with pytest.raises(FleetFileError, match="cannot read"):
        load_fleet(tmp_path / "missing.yaml")


def test_rate_limiter_refills_and_forgets_old_clients():
    now = [0.0]
    rl = RateLimiter(rate=1.0, burst=2, max_clients=2, clock=lambda: now[0])
    assert [rl.take("a") for _ in range(3)] == [0.0, 0.0, 1.0]
    now[0] = 1.0
    assert rl.take("a") == 0.0
    rl.take("b")
    rl.take("c")  # "a" is the least recently seen and is forgotten
    assert len(rl._buckets) == 2 and "a" not in rl._buckets


def test_token_check():
    assert token_ok(None, None)
    assert token_ok("t0k", "Bearer t0k") and token_ok("t0k", "bearer  t0k ")
    assert (
        not token_ok("t0k", None)
        and not token_ok("t0k", "Bearer t0")
        and not token_ok("t0k", "t0k")
    )
