"""What the field measures on a run: SLO violations, goodput, TTFT, TPOT, end-to-end latency.

A request violates its tier's SLO when it fails (timeout, error, or rejected with a 429), or its
time to first token or its end-to-end latency is over the tier's limit (`tools.sim.workload.TIERS`).
Goodput is requests per second that met their SLO (DistServe's definition), over the workload's
duration. Percentiles are over requests that produced the figure (TTFT: requests that got a
first token; TPOT: successful requests with more than one output token; end-to-end: every
request, failures at the moment the router gave up or learnt of the failure).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tools.sim.engine import OK
from tools.sim.run import SimResult
from tools.sim.workload import TIERS

METRIC_KEYS = (
    "sla_violation_pct",
    "goodput_rps",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "e2e_p99_ms",
    "error_pct",
    "mean_cost",
)
"""The per-run figures every comparison reports (lower is better except goodput)."""


def violations(result: SimResult) -> np.ndarray:
    """Per request: True when it violated its tier's SLO."""
    ttft_slo = np.array([t.ttft_slo_ms for t in TIERS])[result.tier]
    e2e_slo = np.array([t.e2e_slo_ms for t in TIERS])[result.tier]
    failed = result.status != OK
    with np.errstate(invalid="ignore"):
        slow = (result.ttft_ms > ttft_slo) | (result.e2e_ms > e2e_slo)
    return failed | slow


def _pct(x: np.ndarray, q: float) -> float | None:
    x = x[~np.isnan(x)]
    return float(np.percentile(x, q)) if x.size else None


def summarise(result: SimResult) -> dict[str, float | None]:
    """The `METRIC_KEYS` of one run (mean cost in dollars per request)."""
    n = len(result)
    if n == 0:
        return dict.fromkeys(METRIC_KEYS)
    bad = violations(result)
    return {
        "sla_violation_pct": 100.0 * float(bad.mean()),
        "goodput_rps": float((~bad).sum()) / result.duration_s,
        "ttft_p50_ms": _pct(result.ttft_ms, 50),
        "ttft_p99_ms": _pct(result.ttft_ms, 99),
        "tpot_p99_ms": _pct(result.tpot_ms, 99),
        "e2e_p99_ms": _pct(result.e2e_ms, 99),
        "error_pct": 100.0 * float((result.status != OK).mean()),
        "mean_cost": float(result.cost.mean()),
    }


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its two-sided 95% confidence interval (Student t, n - 1 degrees
    of freedom; seeds are independent replications). None with fewer than two values."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def to_json(self) -> dict[str, float | int | None]:
        return {"mean": self.mean, "ci95": [self.low, self.high], "n": self.n}


def mean_interval(values: Iterable[float | None]) -> Interval | None:
    xs = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if xs.size == 0:
        return None
    m = float(xs.mean())
    if xs.size < 2:
        return Interval(m, None, None, 1)
    half = float(stats.t.ppf(0.975, xs.size - 1) * xs.std(ddof=1) / math.sqrt(xs.size))
    return Interval(m, m - half, m + half, int(xs.size))


def across_seeds(runs: Sequence[Mapping[str, float | None]]) -> dict[str, Interval | None]:
    """Each metric's mean and 95% interval over the seeds' summaries."""
    keys = list(runs[0]) if runs else []
    return {k: mean_interval(r.get(k) for r in runs) for k in keys}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """Mean of a - b over seeds run with common random numbers, with its 95% interval (paired
    t: the seeds' differences are independent; assumes them roughly normal, which with 3-10
    seeds is an assumption, not a check)."""
    if len(a) != len(b):
        raise ValueError("paired samples differ in length")
    return mean_interval(x - y for x, y in zip(a, b, strict=True))
