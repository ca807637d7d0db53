"""Fleet history to train the forecaster on: hours of simulated telemetry with chaos.

The history is a request-level run like any other, so the forecaster learns the telemetry the
router will really see (router-side TTFT quantiles per 10 s tick, error rates, load). To show it
every backend at every load, the routing explores: each backend's weight is its capacity times
exp(z), z an Ornstein-Uhlenbeck process per backend (time constant 20 min, sd 0.4 / (1 - capacity
share)), re-drawn per tick, and requests pick a backend in proportion. Traffic is synthetic with
a deep diurnal swing (amplitude 0.45) at a random phase around `load` of the fleet's capacity;
chaos events of every kind arrive at `chaos_per_hour` with uniformly drawn kinds and targets and
their default durations and magnitudes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

from tools.routers.base import PolicyBase, RequestInfo, RouterView
from tools.sim.chaos import CHAOS_KINDS, ChaosEvent, apply_arrival_chaos, compile_plan
from tools.sim.run import SimConfig, SimTick, simulate
from tools.sim.spec import DEFAULT_FLEET, EngineSpec, capacity_rps, check_fleet
from tools.sim.workload import synthetic_at_load
from tools.telemetry import TICK_SECONDS, TelemetryPoint

EXPLORE_SD = 0.4
EXPLORE_TAU_S = 1200.0
DIURNAL_AMPLITUDE = 0.45
_FLEET_WIDE = ("traffic_surge", "kv_pressure")


class ExploringPolicy(PolicyBase):
    """Random routing with slowly wandering, capacity-proportional weights (see the module)."""

    name = "explore"

    def __init__(self, fleet: Sequence[EngineSpec], seed: int) -> None:
        caps = np.array([capacity_rps(s) for s in fleet])
        share = caps / caps.sum()
        self._caps = caps
        self._sd = EXPLORE_SD / (1.0 - np.minimum(share, 0.8))
        self._a = math.exp(-TICK_SECONDS / EXPLORE_TAU_S)
        self._rng = np.random.default_rng([abs(seed), 13, int(seed < 0)])
        self._z = self._rng.normal(0.0, self._sd)
        self._pick = random.Random(seed)
        self._cum = self._weights()

    def _weights(self) -> list[float]:
        w = self._caps * np.exp(self._z)
        return np.cumsum(w / w.sum()).tolist()

    def on_tick(self, tick: object) -> None:
        b = self._sd * math.sqrt(1.0 - self._a * self._a)
        self._z = self._a * self._z + b * self._rng.standard_normal(self._z.size)
        self._cum = self._weights()

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        u = self._pick.random()
        cum = self._cum
        for i, c in enumerate(cum):
            if u < c:
                return i
        return len(cum) - 1


def random_chaos(
    duration_s: float,
    names: Sequence[str],
    rng: np.random.Generator,
    chaos_per_hour: float = 1.0,
) -> list[ChaosEvent]:
    """Chaos events at Poisson times, of uniformly drawn kinds and targets."""
    if not math.isfinite(chaos_per_hour) or chaos_per_hour < 0:
        raise ValueError(f"chaos_per_hour must be finite and >= 0, got {chaos_per_hour!r}")
    n = int(rng.poisson(chaos_per_hour * duration_s / 3600.0))
    events = []
    for start in np.sort(rng.uniform(0.0, duration_s, n)):
        kind = CHAOS_KINDS[int(rng.integers(len(CHAOS_KINDS)))]
        backend = None if kind in _FLEET_WIDE else names[int(rng.integers(len(names)))]
        extra = {}
        if kind == "backend_failure" and rng.random() < 0.5:
            extra["mode"] = "error"
        events.append(ChaosEvent(kind=kind, start_s=float(start), backend=backend, **extra))
    return events


def simulate_history(
    duration_s: float,
    *,
    fleet: Sequence[EngineSpec] = DEFAULT_FLEET,
    seed: int = 0,
    load: float = 0.45,
    chaos_per_hour: float = 1.0,
    start_ts: float = 1_700_000_000.0,
) -> list[TelemetryPoint]:
    """Telemetry for training (see the module docstring), tick by tick in fleet order."""
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise ValueError(f"duration_s must be finite and > 0, got {duration_s!r}")
    specs = check_fleet(tuple(fleet))
    names = [s.name for s in specs]
    rng = np.random.default_rng([abs(seed), 11, int(seed < 0)])
    events = random_chaos(duration_s, names, rng, chaos_per_hour)
    w = synthetic_at_load(
        specs,
        load,
        duration_s=duration_s,
        seed=seed,
        diurnal_amplitude=DIURNAL_AMPLITUDE,
        phase_s=float(rng.uniform(0.0, 86_400.0)),
    )
    w = apply_arrival_chaos(w, events, seed)
    plan = compile_plan(events, names, duration_s, seed)
    points: list[TelemetryPoint] = []

    def keep(tick: SimTick) -> None:
        points.extend(tick.telemetry)

    simulate(
        w,
        specs,
        ExploringPolicy(specs, seed),
        plan=plan,
        config=SimConfig(start_ts=start_ts),
        on_tick=keep,
    )
    return points
