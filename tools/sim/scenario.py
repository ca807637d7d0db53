"""Scenarios: a fleet, a traffic source and chaos over a duration, and the built-in set the demo
replays.

A `Scenario` is configuration only; `build(scenario, seed, trace)` turns it into what one run
needs (the requests, the compiled chaos plan, the fleet). Every policy raced on one scenario and
seed gets the same build: common random numbers. A trace-driven scenario gets its recorded
requests from the caller (`tools/` reads no files: `evals.workload_files` does).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.sim.chaos import ChaosEvent, ChaosPlan, apply_arrival_chaos, compile_plan
from tools.sim.spec import DEFAULT_FLEET, EngineSpec, TokenStats, check_fleet
from tools.sim.workload import (
    Workload,
    at_load,
    draw_tiers,
    synthetic,
    synthetic_at_load,
)


class SyntheticTraffic(BaseModel):
    """`tools.sim.workload.synthetic` traffic; its mean rate is `load` x the fleet's capacity
    for the token mix, or `mean_rps` when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["synthetic"] = "synthetic"
    load: float = Field(0.5, gt=0, le=5, allow_inf_nan=False)
    mean_rps: float | None = Field(None, gt=0, allow_inf_nan=False)
    lengths: Literal["conv", "code"] = "conv"
    diurnal_amplitude: float = Field(0.3, ge=0, lt=1, allow_inf_nan=False)
    period_s: float = Field(86_400.0, gt=0, allow_inf_nan=False)
    phase_s: float = Field(0.0, allow_inf_nan=False)
    burst_rate_per_hour: float = Field(3.0, ge=0, allow_inf_nan=False)
    burst_mean_duration_s: float = Field(90.0, gt=0, allow_inf_nan=False)
    burst_multiplier: float = Field(1.4, ge=1, allow_inf_nan=False)


class TraceTraffic(BaseModel):
    """Recorded requests (`source`: `azure_conv`, `azure_code` or a trace file), time-scaled to
    `load` x the fleet's capacity for the trace's own token mix, or at its own rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["trace"] = "trace"
    source: str = Field(min_length=1)
    load: float | None = Field(None, gt=0, le=5, allow_inf_nan=False)


Traffic = Annotated[SyntheticTraffic | TraceTraffic, Field(discriminator="kind")]


class Scenario(BaseModel):
    """A reproducible experiment. `fleet` entries are `EngineSpec`s or names from
    `DEFAULT_FLEET`; None means the default fleet. `seed` is the first seed of a run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    seed: int = 0
    duration_s: float = Field(1200.0, gt=0, allow_inf_nan=False)
    fleet: tuple[EngineSpec | str, ...] | None = None
    traffic: Traffic = Field(default_factory=SyntheticTraffic)
    chaos: tuple[ChaosEvent, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        names = [b.name for b in self.backends()]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate backend names in fleet: {names}")
        for i, ev in enumerate(self.chaos):
            if ev.backend is not None and ev.backend not in names:
                raise ValueError(
                    f"chaos[{i}] ({ev.kind}) targets unknown backend {ev.backend!r}; "
                    f"fleet: {', '.join(names)}"
                )
            if ev.start_s >= self.duration_s:
                raise ValueError(
                    f"chaos[{i}] ({ev.kind}) starts at {ev.start_s:g} s, at or after the end of "
                    f"the scenario ({self.duration_s:g} s)"
                )
        return self

    def backends(self) -> tuple[EngineSpec, ...]:
        """The fleet as specs, names resolved against DEFAULT_FLEET."""
        if self.fleet is None:
            return DEFAULT_FLEET
        known = {b.name: b for b in DEFAULT_FLEET}
        out = []
        for entry in self.fleet:
            if isinstance(entry, str):
                if entry not in known:
                    raise ValueError(
                        f"unknown backend name {entry!r} in fleet; default fleet: "
                        f"{', '.join(known)} (or give a full engine spec)"
                    )
                out.append(known[entry])
            else:
                out.append(entry)
        return check_fleet(out)

    @property
    def trace_source(self) -> str | None:
        return self.traffic.source if isinstance(self.traffic, TraceTraffic) else None


@dataclass(frozen=True)
class Built:
    """One seed of a scenario, ready to simulate."""

    scenario: Scenario
    seed: int
    fleet: tuple[EngineSpec, ...]
    workload: Workload
    plan: ChaosPlan
    stats: TokenStats | None = None
    """The traffic's token mix before any chaos (what an operator knows of their workload)."""

    def token_stats(self) -> TokenStats:
        """`stats`, or the workload's own mix when the build did not record one."""
        return self.stats if self.stats is not None else self.workload.token_stats()


def reseed(trace: Workload, seed: int) -> Workload:
    """The recorded requests with tiers and per-request draws from `seed`, the trace rotated to
    start at a seeded offset (its end wraps to its beginning), so seeds see different stretches
    of the same real traffic."""
    ss = np.random.SeedSequence([abs(int(seed)), 31, int(seed < 0)])
    rot_ss, draw_ss = ss.spawn(2)
    rng = np.random.default_rng(draw_ss)
    shift = float(np.random.default_rng(rot_ss).uniform(0.0, trace.duration_s))
    t = (trace.arrival_s + shift) % trace.duration_s
    order = np.argsort(t, kind="stable")
    n = len(trace)
    prefix = None if trace.prefix is None else tuple(trace.prefix[i] for i in order)
    return replace(
        trace,
        arrival_s=t[order],
        input_tokens=trace.input_tokens[order],
        output_tokens=trace.output_tokens[order],
        tier=draw_tiers(n, rng),
        u=rng.random(n),
        prefix=prefix,
        notes={**trace.notes, "rotated_s": round(shift, 3)},
    )


def build(scenario: Scenario, seed: int | None = None, trace: Workload | None = None) -> Built:
    """The requests, chaos plan and fleet of one seed of `scenario` (default: its own seed)."""
    seed = scenario.seed if seed is None else seed
    fleet = scenario.backends()
    t = scenario.traffic
    duration = scenario.duration_s
    if isinstance(t, SyntheticTraffic):
        kwargs = {
            "diurnal_amplitude": t.diurnal_amplitude,
            "period_s": t.period_s,
            "phase_s": t.phase_s,
            "burst_rate_per_hour": t.burst_rate_per_hour,
            "burst_mean_duration_s": t.burst_mean_duration_s,
            "burst_multiplier": t.burst_multiplier,
        }
        if t.mean_rps is not None:
            w = synthetic(
                duration_s=duration, mean_rps=t.mean_rps, seed=seed, lengths=t.lengths, **kwargs
            )
        else:
            w = synthetic_at_load(
                fleet, t.load, duration_s=duration, seed=seed, lengths=t.lengths, **kwargs
            )
    else:
        if trace is None:
            raise ValueError(f"scenario {scenario.name} replays {t.source!r}: pass its requests")
        w = reseed(trace, seed)
        w = at_load(w, t.load, fleet, duration) if t.load is not None else w.cut(duration)
    stats = w.token_stats() if len(w) else TokenStats.fixed(1, 1)
    w = replace(apply_arrival_chaos(w, scenario.chaos, seed), name=scenario.name)
    plan = compile_plan(scenario.chaos, [s.name for s in fleet], duration, seed)
    return Built(scenario, seed, fleet, w, plan, stats)


# --- the built-in scenarios --------------------------------------------------------------------

CHAOS_START_S = 360.0
"""Minute 6: after the 5-minute feature windows have filled and the policies have settled."""
SCENARIO_DURATION_S = 900.0


def _one(name: str, seed: int, *, load: float = 0.5, **event: object) -> Scenario:
    chaos = (ChaosEvent(kind=name, start_s=CHAOS_START_S, **event),)  # type: ignore[arg-type]
    return Scenario(
        name=name,
        seed=seed,
        duration_s=SCENARIO_DURATION_S,
        traffic=SyntheticTraffic(load=load),
        chaos=chaos,
    )


def _trace(name: str, seed: int, source: str, load: float) -> Scenario:
    return Scenario(
        name=name,
        seed=seed,
        duration_s=SCENARIO_DURATION_S,
        traffic=TraceTraffic(source=source, load=load),
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _one("latency_spike", 101, backend="b0", duration_s=240.0, magnitude=3.0),
        _one("backend_failure", 102, backend="b2", duration_s=360.0),
        _one("cascading_failure", 103, backend="b2", duration_s=480.0),
        _one("traffic_surge", 104, duration_s=300.0, magnitude=2.0),
        _one("gradual_drift", 105, backend="b0", duration_s=540.0, magnitude=3.0),
        _one("anomaly_burst", 106, backend="b0", duration_s=300.0),
        _one("slow_replica", 107, backend="b0", duration_s=300.0, magnitude=8.0),
        _one("kv_pressure", 108, duration_s=300.0, magnitude=1.5),
        _trace("azure_conv", 109, "azure_conv", 0.6),
        _trace("azure_code", 110, "azure_code", 0.3),
    )
}
"""Fifteen minutes each at half the fleet's capacity, one event from minute 6; the real traces
at 60% (conversation) and 30% (code: its bursts reach several times its mean) with no chaos.
Slowdowns hit b0, the H100 that carries half the fleet's capacity, so a router that keeps
sending it its usual share pays; failures hit b2, an A100 (a fifth of the capacity), whose loss
the rest of the fleet can absorb when the load is spread with care."""


def scenario(name: str) -> Scenario:
    """The built-in scenario called `name`, or a ValueError listing the known names."""
    found = SCENARIOS.get(name)
    if found is None:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown scenario {name!r}{hint}; known: {', '.join(SCENARIOS)}")
    return found
