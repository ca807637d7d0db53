"""What a router can see, and the interface every per-request routing policy implements.

One interface for the request-level simulator (`tools.sim`) and for production (`agents.Router`,
`arcpoint serve`), so a policy is written once and raced against the others on equal terms. A
policy sees only what a router in front of a real LLM fleet would see:

* its own requests in flight on each backend (counted router-side, exact and immediate);
* each completed request's TTFT, end-to-end latency and status, when it completes;
* engine metrics scraped from each backend every few seconds, stale by the scrape's age
  (named after vLLM's Prometheus metrics);
* for policies that probe (Prequal), a probe's reply after a network delay;
* for policies that plan per tick (the forecast-driven predictive policy), an optional
  `on_tick(tick)` every telemetry tick (10 s) with the tick's router-side telemetry
  (`tools.sim.run.SimTick`); the environment calls it only on policies that define it.

It never sees a request's output length before the request completes, nor any engine state that
was not scraped or probed. Backends are addressed by index into `RouterView.backends`; times are
seconds on the environment's clock, latencies milliseconds. The hot path is plain slotted
dataclasses: nothing here validates on construction (input is validated where it enters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

STATUSES = ("ok", "timeout", "error", "rejected")
"""A request's outcome: served, timed out, failed (5xx), or rejected because the queue was full
(HTTP 429)."""


@dataclass(frozen=True, slots=True)
class BackendProfile:
    """What the router is configured with for a backend (not what it observes)."""

    name: str
    cost_per_1k_input: float
    """Dollars per 1,000 prompt tokens."""
    cost_per_1k_output: float
    """Dollars per 1,000 generated tokens."""
    kind: str = "default"
    """The hardware/model class, e.g. `large` or `small`."""


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request as the router knows it when it must choose: no output length."""

    request_id: int
    arrival_s: float
    input_tokens: int
    tier: str
    ttft_slo_ms: float
    e2e_slo_ms: float
    prefix_hashes: tuple[int, ...] = ()
    """Hashes of the prompt's fixed-size token blocks (as public LLM traces carry them)."""


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """One scrape of a backend's `/metrics`, named after vLLM's gauges and histograms.

    Latency quantiles are over requests that finished since the previous scrape (read from the
    histograms' deltas); `None` when none finished.
    """

    backend: int
    scraped_at_s: float
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage_perc: float
    """Share of the KV cache in use, 0 to 1."""
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p95_ms: float | None = None
    completed: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Completion:
    """A request's outcome, as the router learns it when the response ends."""

    request_id: int
    backend: int
    arrival_s: float
    finished_at_s: float
    status: str
    ttft_ms: float | None
    """None when no token was produced (timeout before the first token, error, rejection)."""
    e2e_ms: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ProbeReply:
    """A probe's answer (Prequal): the replica's own requests in flight and recent latency."""

    backend: int
    sent_at_s: float
    received_at_s: float
    in_flight: int
    latency_ms: float | None


class RouterView(Protocol):
    """The live signals, maintained by the environment (the simulator or the production Router)."""

    @property
    def now_s(self) -> float: ...

    @property
    def backends(self) -> Sequence[BackendProfile]: ...

    @property
    def in_flight(self) -> Sequence[int]:
        """Requests this router has sent to each backend and not yet seen complete."""
        ...

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        """The latest scrape visible to the router (its age is `now_s - scraped_at_s`)."""
        ...

    def send_probe(self, backend: int) -> None:
        """Ask a backend for its load; the reply arrives later through `on_probe`."""
        ...


@runtime_checkable
class RoutingPolicy(Protocol):
    """A per-request routing policy. `choose` is the hot path: microseconds, no I/O."""

    name: str

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        """The index of the backend this request goes to."""
        ...

    def on_complete(self, completion: Completion, view: RouterView) -> None: ...

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None: ...

    def on_probe(self, reply: ProbeReply, view: RouterView) -> None: ...


class PolicyBase:
    """Convenience base: ignores the signals a policy does not use."""

    name = "base"
    scrape_interval_s: float | None = None
    """How often this router polls the engines' metrics when it has a cadence of its own (the
    llm-d endpoint picker polls every 50 ms); `None`: the environment's scrape interval. Optional:
    an environment reads it with `getattr(policy, "scrape_interval_s", None)`."""

    def choose(self, request: RequestInfo, view: RouterView) -> int:  # pragma: no cover
        raise NotImplementedError

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        return None

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        return None

    def on_probe(self, reply: ProbeReply, view: RouterView) -> None:
        return None

    def on_tick(self, tick: object) -> None:
        """Every telemetry tick (see the module docstring); ignored by default."""
        return None
