"""The service's Prometheus metrics (prometheus-client), on a registry of its own.

Label values are bounded by construction: backends come from the fleet file, reasons and
results are code words, HTTP paths are route templates (never raw paths, never bodies,
headers or tokens). Gauges that mirror live state (queue depths, requests in flight, the
serving model) are read at scrape time through callbacks, so the request path pays nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

ROUTE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
disable_created_metrics()  # `_created` series double the page and no dashboard reads them

HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Live(Collector):
    """Gauges computed when Prometheus scrapes."""

    def __init__(self, read: Callable[[], dict]) -> None:
        self._read = read

    def collect(self):
        snap = self._read()
        depth = GaugeMetricFamily(
            "arcpoint_queue_depth", "Items waiting in a background writer", labels=["writer"]
        )
        cap = GaugeMetricFamily(
            "arcpoint_queue_capacity", "Capacity of a background writer's queue", labels=["writer"]
        )
        for name, (d, c) in snap.get("queues", {}).items():
            depth.add_metric([name], d)
            cap.add_metric([name], c)
        yield depth
        yield cap
        inflight = GaugeMetricFamily(
            "arcpoint_requests_in_flight",
            "Requests routed to a backend whose outcome has not been reported",
            labels=["backend"],
        )
        for backend, n in snap.get("in_flight", {}).items():
            inflight.add_metric([backend], n)
        yield inflight
        alarms = GaugeMetricFamily(
            "arcpoint_alarm_active", "1 while a backend has an active alarm", labels=["backend"]
        )
        for backend, on in snap.get("alarms", {}).items():
            alarms.add_metric([backend], 1.0 if on else 0.0)
        yield alarms
        info = InfoMetricFamily("arcpoint_serving_model", "The forecaster version in service")
        info.add_metric([], {"version": snap.get("model_version") or "none"})
        yield info
        share = GaugeMetricFamily(
            "arcpoint_planned_share", "The policy's planned traffic share", labels=["backend"]
        )
        for backend, s in snap.get("shares", {}).items():
            share.add_metric([backend], s)
        yield share


class ServeMetrics:
    def __init__(self, backends: Sequence[str]) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.route_latency = Histogram(
            "arcpoint_route_latency_seconds",
            "Time to decide a route inside the service (excludes HTTP parsing)",
            buckets=ROUTE_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "arcpoint_decisions", "Routing decisions", ["backend", "reason"], registry=r
        )
        self.ambiguous = Counter(
            "arcpoint_ambiguous", "Ambiguous routing decisions", ["reason"], registry=r
        )
        self.escalations = Counter(
            "arcpoint_escalations",
            "Requests sent to the router agent, by result (accepted, advised, fallback)",
            ["result"],
            registry=r,
        )
        self.fallbacks = Counter(
            "arcpoint_escalation_fallbacks",
            "Escalations where the policy's answer stood, by reason",
            ["reason"],
            registry=r,
        )
        self.decisions_dropped = Counter(
            "arcpoint_decisions_dropped",
            "Decisions not stored because the writer queue was full (routing went on)",
            registry=r,
        )
        self.decision_write_failures = Counter(
            "arcpoint_decision_write_failures",
            "Decisions whose batch failed to commit after retries",
            registry=r,
        )
        self.outcomes = Counter(
            "arcpoint_outcomes",
            "Outcome rows by result (accepted, duplicate, rejected)",
            ["result"],
            registry=r,
        )
        self.outcomes_rejected = Counter(
            "arcpoint_outcomes_rejected", "Rejected outcome rows by reason", ["reason"], registry=r
        )
        self.telemetry = Counter(
            "arcpoint_telemetry_scrapes",
            "Engine scrapes taken in, by source (push, scrape) and result",
            ["source", "result"],
            registry=r,
        )
        self.alerts = Counter(
            "arcpoint_alarms_raised", "Alarms raised by the fleet monitor", ["reason"], registry=r
        )
        self.ticks = Counter("arcpoint_ticks", "Telemetry ticks applied to the router", registry=r)
        self.tick_errors = Counter(
            "arcpoint_tick_errors",
            "Ticks that failed (logged; routing kept its last plan)",
            registry=r,
        )
        self.http = Counter(
            "arcpoint_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "code"],
            registry=r,
        )
        self.http_latency = Histogram(
            "arcpoint_http_request_duration_seconds",
            "HTTP request duration by route template",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "arcpoint_auth_failures", "Requests refused for a missing or wrong token", registry=r
        )
        self.rate_limited = Counter(
            "arcpoint_rate_limited", "Requests refused by a rate limit", ["endpoint"], registry=r
        )
        self.body_too_large = Counter(
            "arcpoint_body_too_large", "Requests refused for an oversized body", registry=r
        )
        self.monitor_runs = Counter(
            "arcpoint_monitor_runs",
            "Scheduled monitor runs by result",
            ["monitor", "result"],
            registry=r,
        )
        self.monitor_last = Gauge(
            "arcpoint_monitor_last_run_timestamp_seconds",
            "When a monitor last finished",
            ["monitor"],
            registry=r,
        )
        self.live: _Live | None = None

    def watch(self, read: Callable[[], dict]) -> None:
        self.live = _Live(read)
        self.registry.register(self.live)
