"""Engine metrics as a router sees them: vLLM's Prometheus names, parsed and turned into deltas.

A backend's `/metrics` page (or a pushed `/v1/telemetry` batch) gives gauges (requests running
and waiting, KV-cache usage) and cumulative histograms (TTFT, end-to-end latency). What a
router needs is what happened *since the previous scrape*: the histograms' bucket deltas give
the quantiles of the requests that finished in between (as Prometheus' `histogram_quantile`
does over a `rate()`), and the success counter's delta gives completions and aborts.
The result is a `tools.routers.base.EngineMetrics`, the type every per-request policy reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.routers.base import EngineMetrics

VLLM_PREFIX = "vllm:"
RUNNING = "num_requests_running"
WAITING = "num_requests_waiting"
KV_CACHE = "kv_cache_usage_perc"
KV_CACHE_V0 = "gpu_cache_usage_perc"
"""vLLM's V0 engine name for the same gauge."""
TTFT = "time_to_first_token_seconds"
E2E = "e2e_request_latency_seconds"
SUCCESS = "request_success_total"
ABORT_REASONS = frozenset({"abort", "error"})


class Histogram(BaseModel):
    """A cumulative Prometheus histogram: `buckets` as [upper bound, cumulative count] pairs
    (the last bound may be "+Inf"), plus `count` and `sum` (seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    buckets: tuple[tuple[float, float], ...] = Field(min_length=1, max_length=200)
    count: float = Field(ge=0, allow_inf_nan=False)
    sum: float = Field(0.0, ge=0, allow_inf_nan=False)

    @field_validator("buckets")
    @classmethod
    def _ordered(cls, value: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        bounds = [b for b, _ in value]
        counts = [c for _, c in value]
        if any(math.isnan(b) for b in bounds) or any(not math.isfinite(c) for c in counts):
            raise ValueError("bucket bounds must be numbers and counts finite")
        if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
            raise ValueError("bucket bounds must be strictly increasing")
        if any(c < 0 for c in counts) or counts != sorted(counts):
            raise ValueError("cumulative bucket counts must be >= 0 and non-decreasing")
        return value


class EngineScrape(BaseModel):
    """One backend's engine metrics at one time, as `POST /v1/telemetry` takes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str = Field(min_length=1, max_length=64)
    scraped_at: float | None = Field(None, allow_inf_nan=False)
    """Unix seconds; default: when the service received it."""
    num_requests_running: int = Field(ge=0, le=1_000_000)
    num_requests_waiting: int = Field(0, ge=0, le=1_000_000)
    kv_cache_usage_perc: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    time_to_first_token_seconds: Histogram | None = None
    e2e_request_latency_seconds: Histogram | None = None
    request_success_total: dict[str, float] | None = None
    """Cumulative finished requests by vLLM's `finished_reason` (stop, length, abort, ...)."""


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The q-quantile from cumulative bucket counts, interpolated linearly inside the bucket (as
    Prometheus does); None when no observation. The +Inf bucket answers with the last finite
    bound."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def _delta_quantiles(
    now: Histogram | None, before: Histogram | None
) -> tuple[float | None, float | None, float]:
    """(p50 ms, p95 ms, observations) of the requests observed between two scrapes."""
    if now is None:
        return None, None, 0.0
    bounds = [b for b, _ in now.buckets]
    counts = [c for _, c in now.buckets]
    if before is not None and [b for b, _ in before.buckets] == bounds:
        old = [c for _, c in before.buckets]
        if all(c >= o for c, o in zip(counts, old, strict=True)):  # else: the engine restarted
            counts = [c - o for c, o in zip(counts, old, strict=True)]
    n = counts[-1]
    if n <= 0:
        return None, None, 0.0
    p50 = histogram_quantile(0.5, bounds, counts)
    p95 = histogram_quantile(0.95, bounds, counts)
    return (
        None if p50 is None else p50 * 1000.0,
        None if p95 is None else p95 * 1000.0,
        n,
    )


def _counter_delta(
    now: Mapping[str, float] | None, before: Mapping[str, float] | None
) -> tuple[int, int]:
    """(completed, aborted) since the previous scrape; a counter that went down means a restart."""
    if not now:
        return 0, 0
    done = errors = 0.0
    for reason, value in now.items():
        prev = (before or {}).get(reason, 0.0)
        d = value - prev if value >= prev else value
        done += d
        if reason in ABORT_REASONS:
            errors += d
    return int(done), int(errors)


@dataclass
class ScrapeDeltas:
    """Keeps each backend's previous scrape so the next one can be read as a delta."""

    index: Mapping[str, int]
    _previous: dict[str, EngineScrape] = field(default_factory=dict)

    def metrics(self, scrape: EngineScrape, scraped_at: float) -> EngineMetrics:
        before = self._previous.get(scrape.backend)
        self._previous[scrape.backend] = scrape
        ttft50, ttft95, _ = _delta_quantiles(
            scrape.time_to_first_token_seconds,
            before.time_to_first_token_seconds if before else None,
        )
        e2e50, e2e95, n_e2e = _delta_quantiles(
            scrape.e2e_request_latency_seconds,
            before.e2e_request_latency_seconds if before else None,
        )
        completed, errors = _counter_delta(
            scrape.request_success_total, before.request_success_total if before else None
        )
        return EngineMetrics(
            backend=self.index[scrape.backend],
            scraped_at_s=scraped_at,
            num_requests_running=scrape.num_requests_running,
            num_requests_waiting=scrape.num_requests_waiting,
            kv_cache_usage_perc=scrape.kv_cache_usage_perc,
            ttft_p50_ms=ttft50,
            ttft_p95_ms=ttft95,
            e2e_p50_ms=e2e50,
            e2e_p95_ms=e2e95,
            completed=max(completed, int(n_e2e)),
            errors=errors,
        )


def parse_prometheus(backend: str, text: str) -> EngineScrape:
    """A vLLM `/metrics` page as an `EngineScrape` (labels such as model_name are summed over).

    Raises ValueError when the page has none of the gauges a router needs.
    """
    from prometheus_client.parser import text_string_to_metric_families

    gauges: dict[str, float] = {}
    hists: dict[str, dict[str, object]] = {}
    success: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        name = family.name.removeprefix(VLLM_PREFIX)
        for s in family.samples:
            sample = s.name.removeprefix(VLLM_PREFIX)
            if name in (RUNNING, WAITING, KV_CACHE, KV_CACHE_V0) and sample == name:
                gauges[name] = gauges.get(name, 0.0) + s.value
            elif name in (TTFT, E2E):
                h = hists.setdefault(name, {"buckets": {}, "count": 0.0, "sum": 0.0})
                if sample.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets: dict[float, float] = h["buckets"]  # type: ignore[assignment]
                    buckets[le] = buckets.get(le, 0.0) + s.value
                elif sample.endswith("_count"):
                    h["count"] = float(h["count"]) + s.value  # type: ignore[arg-type]
                elif sample.endswith("_sum"):
                    h["sum"] = float(h["sum"]) + s.value  # type: ignore[arg-type]
            elif name in (SUCCESS, SUCCESS.removesuffix("_total")) and sample == SUCCESS:
                reason = s.labels.get("finished_reason", "stop")
                success[reason] = success.get(reason, 0.0) + s.value
    if RUNNING not in gauges:
        raise ValueError(f"no vllm:{RUNNING} gauge on the metrics page of {backend}")
    kv = gauges.get(KV_CACHE, gauges.get(KV_CACHE_V0, 0.0))
    histograms = {
        name: Histogram(
            buckets=tuple(sorted(h["buckets"].items())),  # type: ignore[union-attr]
            count=h["count"],
            sum=h["sum"],
        )
        for name, h in hists.items()
        if h["buckets"]
    }
    return EngineScrape(
        backend=backend,
        num_requests_running=int(gauges[RUNNING]),
        num_requests_waiting=int(gauges.get(WAITING, 0.0)),
        kv_cache_usage_perc=min(max(kv, 0.0), 1.0),
        time_to_first_token_seconds=histograms.get(TTFT),
        e2e_request_latency_seconds=histograms.get(E2E),
        request_success_total=success or None,
    )
