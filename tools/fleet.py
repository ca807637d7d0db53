"""What a backend is, and its steady-state queueing curve.

A backend is a G/G/c queue: `servers` concurrency slots, each serving one request at a time
with a lognormal service time (log-sd `service_sigma`), plus a fixed per-request overhead
(network, tokenisation) that occupies no slot. Capacity is `servers / E[service time]`, so
the mean service time is *derived* from `capacity_rps` and `servers`; the overhead is then set
so that the median latency of an idle backend equals `base_latency_ms`.

Waiting time uses the Allen-Cunneen approximation for G/G/c, with Poisson arrivals (ca² = 1):

    Wq = C(c, a) / (c·mu·(1 - rho)) · (ca² + cs²) / 2

where C is the Erlang C probability of waiting (M/M/c) and cs² the squared coefficient of
variation of service. For c = 1 this is exactly Pollaczek-Khinchine (M/G/1). Given that a
request waits, its wait is taken as exponential (the heavy-traffic limit), so the wait is a
mixture: zero with probability 1 - C, exponential with mean Wq / C with probability C.

The per-request latency `overhead + service + wait` is summarised as a lognormal matched to
its mean and variance: that is what `BackendTick` carries and what `steady_state_latency`
reports. This module is the *stationary* picture; `tools.simulator` adds time (a pointwise
stationary fluid flow approximation), overload, noise and chaos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.6448536269514722
"""Standard normal 95% quantile."""

ARRIVAL_SCV = 1.0
"""Squared coefficient of variation of inter-arrival times: Poisson within a tick."""


def _finite_positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A model-serving backend's fixed characteristics.

    `capacity_rps` is the saturation throughput (all slots busy), `base_latency_ms` the median
    latency when idle, `cost_per_request` in dollars. `timeout_ms` caps every request: a request
    that would take longer times out and counts as an error.
    """

    name: str
    capacity_rps: float
    base_latency_ms: float
    cost_per_request: float
    servers: int = 1
    base_error_rate: float = 0.002
    service_sigma: float = 0.5
    timeout_ms: float = 30_000.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"backend name must be a non-empty string, got {self.name!r}")
        _finite_positive("capacity_rps", self.capacity_rps)
        _finite_positive("base_latency_ms", self.base_latency_ms)
        _finite_positive("timeout_ms", self.timeout_ms)
        _finite_positive("service_sigma", self.service_sigma)
        if not isinstance(self.servers, int) or isinstance(self.servers, bool) or self.servers < 1:
            raise ValueError(f"servers must be an integer >= 1, got {self.servers!r}")
        for field_name in ("cost_per_request", "base_error_rate"):
            v = getattr(self, field_name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"{field_name} must be a finite number, got {v!r}")
            if v < 0:
                raise ValueError(f"{field_name} must be >= 0, got {v!r}")
        if self.base_error_rate >= 1:
            raise ValueError(f"base_error_rate must be < 1, got {self.base_error_rate!r}")
        if self.base_latency_ms >= self.timeout_ms:
            raise ValueError("base_latency_ms must be below timeout_ms")
        if self.overhead_ms < 0:
            raise ValueError(
                f"backend {self.name}: {self.servers} servers at {self.capacity_rps} rps mean "
                f"{self.mean_service_ms:.0f} ms of service per request, more than an idle median "
                f"latency of {self.base_latency_ms} ms allows; lower servers or raise base latency"
            )

    @property
    def service_rate(self) -> float:
        """Requests per second one slot completes (mu)."""
        return self.capacity_rps / self.servers

    @property
    def mean_service_ms(self) -> float:
        return 1000.0 * self.servers / self.capacity_rps

    @property
    def service_scv(self) -> float:
        """Squared coefficient of variation of the lognormal service time."""
        return math.expm1(self.service_sigma**2)

    @property
    def service_var_ms2(self) -> float:
        return self.mean_service_ms**2 * self.service_scv

    @property
    def overhead_ms(self) -> float:
        """Fixed overhead that makes the idle median (of the matched lognormal) the base latency.

        With y = overhead + E[S] and V = Var[S], the matched lognormal's median is
        y² / sqrt(y² + V); setting it to m gives y² = (m² + sqrt(m⁴ + 4 m² V)) / 2.
        """
        m2 = self.base_latency_ms**2
        v = self.service_var_ms2
        y = math.sqrt((m2 + math.sqrt(m2 * m2 + 4.0 * m2 * v)) / 2.0)
        return y - self.mean_service_ms


DEFAULT_FLEET: tuple[BackendSpec, ...] = (
    # The primary: large, mid-cost, three slots. Alone it carries the diurnal mean at ~80%.
    BackendSpec("b0", capacity_rps=32.0, base_latency_ms=110.0, cost_per_request=0.0010,
                servers=3, base_error_rate=0.002),
    # Cheap, slow and small: within a 300 ms SLA only when nearly idle (a batch-tier backend).
    BackendSpec("b1", capacity_rps=8.0, base_latency_ms=170.0, cost_per_request=0.0004,
                servers=1, base_error_rate=0.004),
    # Fast and expensive.
    BackendSpec("b2", capacity_rps=16.0, base_latency_ms=65.0, cost_per_request=0.0020,
                servers=1, base_error_rate=0.001),
    # Middle of the road: cheaper than the primary, slower under load.
    BackendSpec("b3", capacity_rps=10.0, base_latency_ms=110.0, cost_per_request=0.0008,
                servers=1, base_error_rate=0.003),
)  # fmt: skip
"""Four backends, 66 rps in all; b0 is the primary.

Stationary (p50, p95) ms at 40% / 70% / 90% utilisation: b0 114/223, 136/296, 230/665;
b1 207/473, 300/863, 676/2366; b2 83/217, 129/410, 318/1158; b3 139/354, 213/662, 514/1861.
"""


def erlang_c(servers: int, rho: float) -> float:
    """Probability that an arrival waits in M/M/c at per-slot utilisation rho (0 <= rho < 1).

    Uses the Erlang B recurrence B(k) = a·B(k-1) / (k + a·B(k-1)), stable for any c, and
    C = B / (1 - rho·(1 - B)).
    """
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    a = servers * rho
    b = 1.0
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    return b / (1.0 - rho * (1.0 - b))


def allen_cunneen_wait_s(spec: BackendSpec, rho: float, speed: float = 1.0) -> float:
    """Mean wait in queue (s) at per-slot utilisation rho, service `speed` times nominal."""
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return math.inf
    c = erlang_c(spec.servers, rho)
    return c / (spec.capacity_rps * speed * (1.0 - rho)) * (ARRIVAL_SCV + spec.service_scv) / 2.0


def lognormal_from_moments(mean: float, var: float) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with this mean and variance (mean > 0)."""
    s2 = math.log1p(var / (mean * mean))
    return math.log(mean) - s2 / 2.0, math.sqrt(s2)


def latency_moments_ms(
    spec: BackendSpec, wait_s: float, p_wait: float, speed: float = 1.0
) -> tuple[float, float]:
    """Mean and variance (ms, ms²) of overhead + service + wait, wait a zero/exponential mixture."""
    wq = 1000.0 * wait_s
    mean = spec.overhead_ms + spec.mean_service_ms / speed + wq
    var = spec.service_var_ms2 / (speed * speed)
    if wq > 0.0 and p_wait > 0.0:
        var += wq * wq * (2.0 / p_wait - 1.0)
    return mean, var


def steady_state_latency(spec: BackendSpec, rps: float) -> tuple[float, float]:
    """Stationary (p50, p95) latency in ms at an offered load of `rps`, capped at the timeout.

    Undefined (and reported as the timeout) at or beyond capacity: no steady state exists there.
    """
    if not math.isfinite(rps) or rps < 0:
        raise ValueError(f"rps must be finite and >= 0, got {rps!r}")
    rho = rps / spec.capacity_rps
    if rho >= 1.0:
        return spec.timeout_ms, spec.timeout_ms
    wait = allen_cunneen_wait_s(spec, rho)
    mean, var = latency_moments_ms(spec, wait, erlang_c(spec.servers, rho))
    mu, sigma = lognormal_from_moments(mean, var)
    cap = spec.timeout_ms
    return min(math.exp(mu), cap), min(math.exp(mu + Z95 * sigma), cap)
