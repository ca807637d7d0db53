"""Requests to replay: real traces, synthetic traffic fitted to them, and their service tiers.

A `Workload` is a sorted list of requests, each with an arrival time, prompt (input) tokens,
output tokens, a service tier and optionally the hashes of its prompt's fixed-size blocks (the
format public LLM-serving traces such as Mooncake's use for prefix sharing). It is fixed before a
run and shared by every policy raced on it: the same requests arrive at the same times whatever
the routing (common random numbers), with one uniform draw per request (`u`) that decides, for
example, whether the backend it lands on fails it.

Sources (files are read outside `tools/`, which does no I/O: `evals.workload_files`):
* the Azure LLM inference traces (Splitwise, ISCA 2024), conversation or code, one hour each,
  with their real arrival times and token counts (`evals.workload_files.azure_trace`);
* `synthetic(...)`: a Markov-modulated Poisson process with a diurnal swing and bursts, with
  token lengths drawn from a bivariate lognormal fitted to one of those traces;
* any user's CSV or JSONL trace (`evals.workload_files.read_trace`), through `from_arrays`.
`at_load` time-scales a workload so its mean offered load is a chosen share of a fleet's capacity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from tools.sim.spec import EngineSpec, TokenStats, fleet_capacity_rps


@dataclass(frozen=True, slots=True)
class Tier:
    """A service tier's SLO: a request violates it when its TTFT or its end-to-end latency is
    over the limit, or when it fails."""

    name: str
    ttft_slo_ms: float
    e2e_slo_ms: float


TIERS: tuple[Tier, ...] = (
    Tier("standard", 1_000.0, 30_000.0),
    Tier("premium", 500.0, 15_000.0),
    Tier("batch", 5_000.0, 60_000.0),
)
"""Interactive chat SLOs in the range serving papers use (DistServe's chatbot TTFT 0.25-2.5 s;
Splitwise's 2-5x idle latency): standard 1 s to first token, premium 0.5 s, batch 5 s."""
TIER_INDEX = {t.name: i for i, t in enumerate(TIERS)}
TIER_WEIGHTS = (0.8, 0.1, 0.1)
"""Share of requests in each tier, in `TIERS` order."""


@dataclass(frozen=True)
class LengthFit:
    """A bivariate lognormal of (prompt, output) tokens, clipped to the trace's range."""

    mu_in: float
    sd_in: float
    mu_out: float
    sd_out: float
    rho: float
    min_in: int
    max_in: int
    min_out: int
    max_out: int

    @classmethod
    def of(cls, inputs: np.ndarray, outputs: np.ndarray) -> LengthFit:
        li, lo = np.log(np.maximum(inputs, 1)), np.log(np.maximum(outputs, 1))
        rho = float(np.corrcoef(li, lo)[0, 1]) if li.size > 2 else 0.0
        return cls(
            float(li.mean()), float(li.std()), float(lo.mean()), float(lo.std()),
            rho if math.isfinite(rho) else 0.0,
            int(inputs.min()), int(inputs.max()), int(outputs.min()), int(outputs.max()),
        )  # fmt: skip

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        z1 = rng.standard_normal(n)
        z2 = self.rho * z1 + math.sqrt(max(0.0, 1.0 - self.rho**2)) * rng.standard_normal(n)
        i = np.exp(self.mu_in + self.sd_in * z1)
        o = np.exp(self.mu_out + self.sd_out * z2)
        i = np.clip(np.rint(i), self.min_in, self.max_in).astype(np.int64)
        o = np.clip(np.rint(o), self.min_out, self.max_out).astype(np.int64)
        return i, o


LENGTH_FITS: dict[str, LengthFit] = {
    # Fitted on the Azure traces (log-mean, log-sd, correlation of the logs; the traces' ranges).
    "conv": LengthFit(6.6333, 0.9852, 5.0190, 0.8590, 0.0875, 2, 14050, 7, 1000),
    "code": LengthFit(6.9986, 1.3602, 2.7882, 0.8472, -0.0045, 3, 7437, 6, 1899),
}
"""`tests/test_sim_workload.py` refits these on the trace files and checks they agree."""


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival. Times in seconds from the start."""

    name: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    tier: np.ndarray
    """Index into `TIERS` per request."""
    u: np.ndarray
    """One uniform draw per request (common random numbers for per-request chance events)."""
    duration_s: float
    prefix: tuple[tuple[int, ...], ...] | None = None
    block_tokens: int = 16
    """Tokens per prefix block hash."""
    notes: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.arrival_s.size
        for name in ("input_tokens", "output_tokens", "tier", "u"):
            if getattr(self, name).size != n:
                raise ValueError(f"workload {self.name}: {name} has the wrong length")
        if self.prefix is not None and len(self.prefix) != n:
            raise ValueError(f"workload {self.name}: prefix has the wrong length")
        if n and (np.any(np.diff(self.arrival_s) < 0) or self.arrival_s[0] < 0):
            raise ValueError(f"workload {self.name}: arrivals must be sorted and >= 0")
        if n and (self.input_tokens.min() < 1 or self.output_tokens.min() < 1):
            raise ValueError(f"workload {self.name}: every request needs >= 1 token each way")
        if self.block_tokens < 1:
            raise ValueError("block_tokens must be >= 1")

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def rate_rps(self) -> float:
        return len(self) / self.duration_s if self.duration_s > 0 else 0.0

    def token_stats(self) -> TokenStats:
        return TokenStats.of(self.input_tokens, self.output_tokens)

    def offered_load(self, fleet: Sequence[EngineSpec]) -> float:
        """Mean arrival rate as a share of the fleet's capacity for this token mix."""
        return self.rate_rps / fleet_capacity_rps(tuple(fleet), self.token_stats())

    def select(self, mask: np.ndarray) -> Workload:
        prefix = None
        if self.prefix is not None:
            prefix = tuple(p for p, keep in zip(self.prefix, mask, strict=True) if keep)
        return replace(
            self,
            arrival_s=self.arrival_s[mask],
            input_tokens=self.input_tokens[mask],
            output_tokens=self.output_tokens[mask],
            tier=self.tier[mask],
            u=self.u[mask],
            prefix=prefix,
        )

    def time_scaled(self, factor: float, duration_s: float | None = None) -> Workload:
        """Arrival times x `factor` (< 1 compresses: a higher rate), cut to `duration_s`."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"time scale must be finite and > 0, got {factor!r}")
        scaled = replace(
            self, arrival_s=self.arrival_s * factor, duration_s=self.duration_s * factor
        )
        if duration_s is None:
            return scaled
        return scaled.cut(duration_s)

    def cut(self, duration_s: float) -> Workload:
        """The first `duration_s` seconds; a shorter workload is repeated end to end to fill
        them (each repeat keeps its own requests' draws)."""
        if not (math.isfinite(duration_s) and duration_s > 0):
            raise ValueError(f"duration must be finite and > 0, got {duration_s!r}")
        w = self
        if len(w) == 0:
            return replace(w, duration_s=duration_s)
        copies = max(1, math.ceil(duration_s / w.duration_s))
        if copies > 1:
            w = repeat(w, copies)
        out = w.select(w.arrival_s < duration_s)
        return replace(out, duration_s=duration_s)


def repeat(w: Workload, copies: int) -> Workload:
    shifts = np.repeat(np.arange(copies) * w.duration_s, len(w))
    prefix = None if w.prefix is None else w.prefix * copies
    return replace(
        w,
        arrival_s=np.tile(w.arrival_s, copies) + shifts,
        input_tokens=np.tile(w.input_tokens, copies),
        output_tokens=np.tile(w.output_tokens, copies),
        tier=np.tile(w.tier, copies),
        u=np.tile(w.u, copies),
        prefix=prefix,
        duration_s=w.duration_s * copies,
    )


def draw_tiers(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(len(TIERS), size=n, p=TIER_WEIGHTS).astype(np.int8)


def _rngs(seed: int, tag: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Separate streams for the arrivals/sizes and for tiers and per-request draws."""
    ss = np.random.SeedSequence([abs(int(seed)), tag, int(seed < 0)])
    a, b = ss.spawn(2)
    return np.random.default_rng(a), np.random.default_rng(b)


def from_arrays(
    name: str,
    arrival_s: np.ndarray,
    input_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    seed: int = 0,
    duration_s: float | None = None,
    prefix: tuple[tuple[int, ...], ...] | None = None,
    block_tokens: int = 16,
    notes: dict[str, object] | None = None,
) -> Workload:
    """A workload from raw arrays (sorted here, shifted to start at 0); tiers and draws seeded."""
    t = np.asarray(arrival_s, dtype=float)
    order = np.argsort(t, kind="stable")
    t = t[order]
    if t.size:
        t = t - t[0]
    _, rng = _rngs(seed, 17)
    n = t.size
    if prefix is not None:
        prefix = tuple(prefix[i] for i in order)
    if duration_s is None:
        gaps = np.diff(t)
        tail = float(np.median(gaps)) if gaps.size else 1.0
        duration_s = float(t[-1] + tail) if n else 0.0
    return Workload(
        name=name,
        arrival_s=t,
        input_tokens=np.asarray(input_tokens, dtype=np.int64)[order],
        output_tokens=np.asarray(output_tokens, dtype=np.int64)[order],
        tier=draw_tiers(n, rng),
        u=rng.random(n),
        duration_s=duration_s,
        prefix=prefix,
        block_tokens=block_tokens,
        notes=dict(notes or {}),
    )


def at_load(
    w: Workload,
    load: float,
    fleet: Sequence[EngineSpec],
    duration_s: float | None = None,
) -> Workload:
    """Time-scale `w` so its mean offered load is `load` x the fleet's capacity for its own
    token mix, then cut (or repeat) it to `duration_s`."""
    if not (math.isfinite(load) and load > 0):
        raise ValueError(f"load must be finite and > 0, got {load!r}")
    if len(w) == 0:
        raise ValueError(f"workload {w.name} has no requests to scale")
    target = load * fleet_capacity_rps(tuple(fleet), w.token_stats())
    out = w.time_scaled(w.rate_rps / target, duration_s)
    return replace(out, notes={**w.notes, "load": load, "target_rps": target})


def synthetic(
    *,
    duration_s: float,
    mean_rps: float,
    seed: int = 0,
    lengths: str | LengthFit = "conv",
    diurnal_amplitude: float = 0.3,
    period_s: float = 86_400.0,
    phase_s: float = 0.0,
    burst_rate_per_hour: float = 3.0,
    burst_mean_duration_s: float = 90.0,
    burst_multiplier: float = 1.4,
    rate_step_s: float = 1.0,
) -> Workload:
    """Poisson arrivals whose rate follows a diurnal sinusoid and Markov-modulated bursts.

    The rate at t is mean x (1 + amplitude x sin(2 pi (t + phase) / period)) x the burst level;
    bursts start at `burst_rate_per_hour` and last `burst_mean_duration_s` on average (both
    exponential), each at a level drawn in [1 + (m-1)/2, 1 + 3(m-1)/2]. The rate is held
    constant over `rate_step_s` steps. Token lengths come from `LENGTH_FITS[lengths]`.
    """
    for name, v in (("duration_s", duration_s), ("mean_rps", mean_rps), ("period_s", period_s)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v!r}")
    if not 0 <= diurnal_amplitude < 1:
        raise ValueError("diurnal_amplitude must lie in [0, 1)")
    if burst_multiplier < 1 or burst_rate_per_hour < 0 or burst_mean_duration_s <= 0:
        raise ValueError("bursts need multiplier >= 1, rate >= 0 and a positive duration")
    fit = LENGTH_FITS[lengths] if isinstance(lengths, str) else lengths
    rng, _ = _rngs(seed, 23)
    steps = math.ceil(duration_s / rate_step_s)
    starts = np.arange(steps) * rate_step_s
    angle = 2 * math.pi * (starts + rate_step_s / 2 + phase_s) / period_s
    rate = mean_rps * (1.0 + diurnal_amplitude * np.sin(angle))
    level = np.ones(steps)
    t = 0.0
    p_on = burst_rate_per_hour / 3600.0
    while p_on > 0:
        t += rng.exponential(1.0 / p_on)
        if t >= duration_s:
            break
        length = rng.exponential(burst_mean_duration_s)
        m = 1.0 + (burst_multiplier - 1.0) * (0.5 + rng.random())
        a, b = int(t // rate_step_s), int(min(duration_s, t + length) // rate_step_s) + 1
        level[a:b] = np.maximum(level[a:b], m)
        t += length
    lam = rate * level * rate_step_s
    counts = rng.poisson(lam)
    n = int(counts.sum())
    arrivals = np.repeat(starts, counts) + rng.random(n) * rate_step_s
    arrivals = np.sort(np.minimum(arrivals, np.nextafter(duration_s, 0)))
    i, o = fit.draw(n, rng)
    w = from_arrays(
        "synthetic", arrivals, i, o, seed=seed, duration_s=duration_s,
        notes={"mean_rps": mean_rps, "lengths": lengths if isinstance(lengths, str) else "custom"},
    )  # fmt: skip
    # from_arrays shifts to the first arrival; keep the real start at 0 instead.
    return replace(w, arrival_s=arrivals)


def synthetic_at_load(
    fleet: Sequence[EngineSpec],
    load: float,
    *,
    duration_s: float,
    seed: int = 0,
    lengths: str = "conv",
    **kwargs: float,
) -> Workload:
    """`synthetic` with its mean rate set to `load` x the fleet's capacity for the token mix."""
    fit = LENGTH_FITS[lengths]
    rng = np.random.default_rng(12345)
    i, o = fit.draw(200_000, rng)  # the mix's moments, for the capacity (fixed, not the seed's)
    stats = TokenStats.of(i, o)
    mean = load * fleet_capacity_rps(tuple(fleet), stats)
    w = synthetic(duration_s=duration_s, mean_rps=mean, seed=seed, lengths=lengths, **kwargs)
    return replace(w, name=f"synthetic_{lengths}", notes={**w.notes, "load": load})
