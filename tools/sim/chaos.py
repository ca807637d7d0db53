"""Chaos events: faults injected into a run, and what each does to the engines or the arrivals.

Every event acts inside its window `[start_s, start_s + duration_s)` (seconds from the start);
several compose (slowdowns multiply). `magnitude` per kind, default in brackets:

- `latency_spike` (backend; iteration-time factor [2.0], 5 min): the GPU throttles or a noisy
  neighbour shares it: every engine iteration takes `magnitude` times longer, so both latency and
  capacity suffer for the window.
- `slow_replica` (backend; factor [8.0], 4 to 16 in the field, 10 min): one replica degrades for
  minutes (a failing GPU in a tensor-parallel group, a bad NVLink, thermal limits).
- `backend_failure` (backend; share of capacity lost in (0, 1] [1.0], 15 min): at 1.0 the backend
  fails in `mode` `hang` (it accepts connections and never answers: requests time out) or `error`
  (it answers every request with a fast 5xx); requests in flight are lost either way, and a hung
  backend restarts empty at the end. Below 1.0 that share of its speed is gone.
- `cascading_failure` (backend; saturation threshold [0.9], 20 min): `backend` fails as above; any
  other backend that stays saturated (requests queued, or KV cache above `magnitude` full) at
  every 10 s check for CASCADE_SUSTAIN_S fails too, until the window ends. Neighbours absorbing
  the failed backend's load is what spreads it, so a router that spreads load carefully stops it.
- `traffic_surge` (fleet; arrival-rate factor [3.0], 10 min): every request in the window brings
  Poisson(m(t) - 1) copies of itself (jittered by up to 2.5 s), m(t) ramping over the first and
  last minute: the surge keeps the workload's own mix and burst shape.
- `gradual_drift` (backend or none for all; iteration-time factor at the end [1.6], 1 h): the
  factor grows linearly from 1 (in 10 s steps), so capacity falls and latency bends earlier.
- `anomaly_burst` (backend; factor within a burst [4.0], 5 min): short bursts (1-3 ticks of 10 s,
  gaps of 2-8 ticks) of slowness x magnitude, a 30% fast-error rate, or both. Only burst ticks
  are labelled.
- `kv_pressure` (fleet; extra prompt tokens as a multiple of the workload's own [1.0], 10 min):
  a surge of long-context requests (prompts of 8k-24k tokens) whose prompt tokens add
  `magnitude` times the workload's mean prompt-token rate: KV caches fill and requests wait.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.sim.workload import TIERS, Workload, draw_tiers
from tools.telemetry import TICK_SECONDS

ChaosKind = Literal[
    "latency_spike",
    "backend_failure",
    "cascading_failure",
    "traffic_surge",
    "gradual_drift",
    "anomaly_burst",
    "slow_replica",
    "kv_pressure",
]
CHAOS_KINDS: tuple[str, ...] = ChaosKind.__args__  # type: ignore[attr-defined]

DEFAULT_DURATION_S: dict[str, float] = {
    "latency_spike": 300.0,
    "backend_failure": 900.0,
    "cascading_failure": 1200.0,
    "traffic_surge": 600.0,
    "gradual_drift": 3600.0,
    "anomaly_burst": 300.0,
    "slow_replica": 600.0,
    "kv_pressure": 600.0,
}
DEFAULT_MAGNITUDE: dict[str, float] = {
    "latency_spike": 2.0,
    "backend_failure": 1.0,
    "cascading_failure": 0.9,
    "traffic_surge": 3.0,
    "gradual_drift": 1.6,
    "anomaly_burst": 4.0,
    "slow_replica": 8.0,
    "kv_pressure": 1.0,
}
CASCADE_SUSTAIN_S = 60.0
ANOMALY_ERROR_RATE = 0.3
SURGE_RAMP_S = 60.0
SURGE_JITTER_S = 2.5
KV_PRESSURE_PROMPT = (8_000, 24_000)
"""Prompt tokens of the long-context requests `kv_pressure` adds (uniform)."""

_BACKEND_REQUIRED = {
    "latency_spike",
    "backend_failure",
    "cascading_failure",
    "anomaly_burst",
    "slow_replica",
}
_FLEET_WIDE = {"traffic_surge", "kv_pressure"}
_FAILURES = {"backend_failure", "cascading_failure"}


class ChaosEvent(BaseModel):
    """One fault injected into a scenario. `duration_s` and `magnitude` default per kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ChaosKind
    start_s: float = Field(ge=0, allow_inf_nan=False)
    duration_s: float = Field(None, gt=0, allow_inf_nan=False)  # type: ignore[assignment]
    backend: str | None = None
    magnitude: float = Field(None, allow_inf_nan=False)  # type: ignore[assignment]
    mode: Literal["hang", "error"] = "hang"
    """How a failed backend fails: hangs (timeouts) or answers a fast 5xx (failures only)."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("kind") in DEFAULT_DURATION_S:
            data = dict(data)
            if data.get("duration_s") is None:
                data["duration_s"] = DEFAULT_DURATION_S[data["kind"]]
            if data.get("magnitude") is None:
                data["magnitude"] = DEFAULT_MAGNITUDE[data["kind"]]
        return data

    @model_validator(mode="after")
    def _check(self) -> ChaosEvent:
        k, m = self.kind, self.magnitude
        if k in _BACKEND_REQUIRED and not self.backend:
            raise ValueError(f"{k} needs a target backend")
        if k in _FLEET_WIDE and self.backend is not None:
            raise ValueError(f"{k} acts on the whole fleet's arrivals: leave backend unset")
        if k in ("latency_spike", "anomaly_burst", "slow_replica") and m <= 1:
            raise ValueError(f"{k} magnitude is a slowdown factor and must be > 1, got {m}")
        if k == "backend_failure" and not 0 < m <= 1:
            raise ValueError(f"backend_failure magnitude is the capacity lost, in (0, 1], got {m}")
        if k == "cascading_failure" and not 0 < m <= 1:
            raise ValueError(
                f"cascading_failure magnitude is a KV-usage threshold in (0, 1], got {m}"
            )
        if k in ("traffic_surge", "gradual_drift", "kv_pressure") and m <= 0:
            raise ValueError(f"{k} magnitude must be > 0, got {m}")
        if self.mode != "hang" and k not in _FAILURES:
            raise ValueError(f"mode applies to failures only, not {k}")
        return self

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


def check_chaos(
    chaos: tuple[ChaosEvent, ...] | list[ChaosEvent], names: list[str], duration_s: float
) -> None:
    """Every event targets a backend of the fleet and starts before the run ends."""
    for i, ev in enumerate(chaos):
        if ev.backend is not None and ev.backend not in names:
            raise ValueError(
                f"chaos[{i}] ({ev.kind}) targets unknown backend {ev.backend!r}; "
                f"fleet: {', '.join(names)}"
            )
        if ev.start_s >= duration_s:
            raise ValueError(
                f"chaos[{i}] ({ev.kind}) starts at {ev.start_s:g} s, at or after the end of "
                f"the scenario ({duration_s:g} s)"
            )


# --- what the engines see: a compiled timeline -------------------------------------------------

FACTOR, ERROR_RATE, FAIL, RECOVER = 0, 1, 2, 3


@dataclass(frozen=True)
class ChaosPlan:
    """Timed actions per backend, sorted: (t_s, backend index, action, value).

    FACTOR sets the backend's iteration-time factor (the product of every slowdown active),
    ERROR_RATE its extra fast-error probability, FAIL (value: 0 hang, 1 error) and RECOVER bracket
    a failure. `labels[b]` maps tick index -> chaos kinds acting on backend b that tick (known in
    advance; cascades add theirs as they happen). `cascades` are (start_s, end_s, threshold,
    origin backend, mode) windows the run watches for spreading failures."""

    actions: tuple[tuple[float, int, int, float], ...]
    labels: tuple[dict[int, tuple[str, ...]], ...]
    cascades: tuple[tuple[float, float, float, int, int], ...]

    @classmethod
    def empty(cls, n_backends: int) -> ChaosPlan:
        return cls((), tuple({} for _ in range(n_backends)), ())


def _burst_ticks(ev: ChaosEvent, seed: int, j: int) -> dict[int, str]:
    rng = np.random.default_rng([abs(seed), 7, j, int(seed < 0)])
    first = math.ceil(ev.start_s / TICK_SECONDS - 1e-9)
    end = math.ceil(ev.end_s / TICK_SECONDS - 1e-9)
    out: dict[int, str] = {}
    k = first + int(rng.integers(0, 3))
    while k < end:
        kind = ("latency", "errors", "both")[int(rng.integers(0, 3))]
        for i in range(int(rng.integers(1, 4))):
            if k + i < end:
                out[k + i] = kind
        k += 3 + int(rng.integers(2, 9))
    return out


def compile_plan(
    events: tuple[ChaosEvent, ...] | list[ChaosEvent],
    names: tuple[str, ...] | list[str],
    duration_s: float,
    seed: int,
) -> ChaosPlan:
    """The engine-side timeline of `events` over a fleet (arrival-side kinds are ignored here:
    `apply_arrival_chaos` handles them)."""
    index = {n: i for i, n in enumerate(names)}
    nb = len(names)
    # Piecewise-constant multiplicative factors and additive error rates, per backend.
    factors: list[list[tuple[float, float, float]]] = [[] for _ in range(nb)]  # (start,end,f)
    errors: list[list[tuple[float, float, float]]] = [[] for _ in range(nb)]
    fails: list[tuple[float, float, int, int]] = []  # (start, end, backend, mode)
    labels: list[dict[int, list[str]]] = [{} for _ in range(nb)]
    cascades = []

    def label(b: int, start: float, end: float, kind: str) -> None:
        end = min(end, duration_s)
        k0 = int(start // TICK_SECONDS)
        k1 = math.ceil(end / TICK_SECONDS - 1e-9)
        for k in range(k0, k1):
            labels[b].setdefault(k, []).append(kind)

    for j, ev in enumerate(events):
        if ev.backend is not None and ev.backend not in index:
            raise ValueError(f"chaos event {ev.kind} targets unknown backend {ev.backend!r}")
        targets = range(nb) if ev.backend is None else (index[ev.backend],)
        kind, m = ev.kind, ev.magnitude
        if kind in _FLEET_WIDE:
            for b in range(nb):
                label(b, ev.start_s, ev.end_s, kind)
            continue
        for b in targets:
            if kind in ("latency_spike", "slow_replica"):
                factors[b].append((ev.start_s, ev.end_s, m))
                label(b, ev.start_s, ev.end_s, kind)
            elif kind in _FAILURES:
                if kind == "cascading_failure" or m >= 1.0:
                    fails.append((ev.start_s, ev.end_s, b, 0 if ev.mode == "hang" else 1))
                else:
                    factors[b].append((ev.start_s, ev.end_s, 1.0 / (1.0 - m)))
                label(b, ev.start_s, ev.end_s, kind)
                if kind == "cascading_failure":
                    cascades.append((ev.start_s, ev.end_s, m, b, 0 if ev.mode == "hang" else 1))
            elif kind == "gradual_drift":
                steps = math.ceil(ev.duration_s / TICK_SECONDS - 1e-9)
                for k in range(steps):
                    a = ev.start_s + k * TICK_SECONDS
                    progress = min(1.0, (k + 1) * TICK_SECONDS / ev.duration_s)
                    factors[b].append((a, min(a + TICK_SECONDS, ev.end_s), 1 + (m - 1) * progress))
                label(b, ev.start_s, ev.end_s, kind)
            elif kind == "anomaly_burst":
                for k, what in _burst_ticks(ev, seed, j).items():
                    a, e = k * TICK_SECONDS, (k + 1) * TICK_SECONDS
                    if what in ("latency", "both"):
                        factors[b].append((a, e, m))
                    if what in ("errors", "both"):
                        errors[b].append((a, e, ANOMALY_ERROR_RATE))
                    label(b, a, e, kind)

    actions: list[tuple[float, int, int, float]] = []
    for b in range(nb):
        for segs, act, combine in ((factors[b], FACTOR, math.prod), (errors[b], ERROR_RATE, sum)):
            if not segs:
                continue
            points = sorted({p for s, e, _ in segs for p in (s, e) if p < duration_s})
            last = None
            for p in points:
                vals = [v for s, e, v in segs if s <= p < e]
                value = float(combine(vals)) if vals else (1.0 if act == FACTOR else 0.0)
                if value != last:
                    actions.append((p, b, act, value))
                    last = value
    for start, end, b, mode in fails:
        actions.append((start, b, FAIL, float(mode)))
        if end < duration_s:
            actions.append((end, b, RECOVER, float(mode)))
    actions.sort(key=lambda a: (a[0], a[1], a[2]))
    return ChaosPlan(
        tuple(actions),
        tuple({k: tuple(v) for k, v in lab.items()} for lab in labels),
        tuple(cascades),
    )


# --- what the arrivals see ---------------------------------------------------------------------


def apply_arrival_chaos(
    w: Workload, events: tuple[ChaosEvent, ...] | list[ChaosEvent], seed: int
) -> Workload:
    """`w` with the surges and long-context bursts of `events` added (seeded, so every policy
    raced on one seed sees the same extra requests)."""
    for j, ev in enumerate(events):
        if ev.kind == "traffic_surge":
            w = _surge(w, ev, np.random.default_rng([abs(seed), 41, j, int(seed < 0)]))
        elif ev.kind == "kv_pressure":
            w = _kv_pressure(w, ev, np.random.default_rng([abs(seed), 43, j, int(seed < 0)]))
    return w


def surge_multiplier(ev: ChaosEvent, t: np.ndarray) -> np.ndarray:
    ramp_s = min(SURGE_RAMP_S, ev.duration_s / 4.0)
    ramp = np.minimum(1.0, np.minimum((t - ev.start_s) / ramp_s, (ev.end_s - t) / ramp_s))
    inside = (t >= ev.start_s) & (t < ev.end_s)
    return np.where(inside, 1.0 + (ev.magnitude - 1.0) * np.maximum(ramp, 0.0), 1.0)


def _merge(w: Workload, extra: Workload) -> Workload:
    t = np.concatenate([w.arrival_s, extra.arrival_s])
    order = np.argsort(t, kind="stable")
    prefix = None
    if w.prefix is not None or extra.prefix is not None:
        a = w.prefix if w.prefix is not None else ((),) * len(w)
        b = extra.prefix if extra.prefix is not None else ((),) * len(extra)
        both = a + b
        prefix = tuple(both[i] for i in order)
    return replace(
        w,
        arrival_s=t[order],
        input_tokens=np.concatenate([w.input_tokens, extra.input_tokens])[order],
        output_tokens=np.concatenate([w.output_tokens, extra.output_tokens])[order],
        tier=np.concatenate([w.tier, extra.tier])[order],
        u=np.concatenate([w.u, extra.u])[order],
        prefix=prefix,
    )


def _surge(w: Workload, ev: ChaosEvent, rng: np.random.Generator) -> Workload:
    mult = surge_multiplier(ev, w.arrival_s)
    copies = rng.poisson(np.maximum(mult - 1.0, 0.0))
    src = np.repeat(np.arange(len(w)), copies)
    n = src.size
    t = w.arrival_s[src] + rng.uniform(-SURGE_JITTER_S, SURGE_JITTER_S, n)
    t = np.clip(t, ev.start_s, min(ev.end_s, w.duration_s) - 1e-6)
    order = np.argsort(t, kind="stable")
    t, src = t[order], src[order]
    extra = replace(
        w,
        arrival_s=t,
        input_tokens=w.input_tokens[src],
        output_tokens=w.output_tokens[src],
        tier=draw_tiers(n, rng),
        u=rng.random(n),
        prefix=None if w.prefix is None else tuple(w.prefix[i] for i in src),
    )
    return _merge(w, extra)


def _kv_pressure(w: Workload, ev: ChaosEvent, rng: np.random.Generator) -> Workload:
    lo, hi = KV_PRESSURE_PROMPT
    prompt_rate = float(w.input_tokens.sum()) / w.duration_s if w.duration_s > 0 else 0.0
    rate = ev.magnitude * prompt_rate / ((lo + hi) / 2.0)
    end = min(ev.end_s, w.duration_s)
    n = int(rng.poisson(rate * max(0.0, end - ev.start_s)))
    t = np.sort(rng.uniform(ev.start_s, end, n))
    out_pool = w.output_tokens if len(w) else np.array([200])
    extra = replace(
        w,
        arrival_s=t,
        input_tokens=rng.integers(lo, hi + 1, n).astype(np.int64),
        output_tokens=out_pool[rng.integers(0, out_pool.size, n)],
        tier=draw_tiers(n, rng),
        u=rng.random(n),
        prefix=None if w.prefix is None else ((),) * n,
    )
    return _merge(w, extra)


def tier_names() -> tuple[str, ...]:
    return tuple(t.name for t in TIERS)
