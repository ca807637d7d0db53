"""Chaos events and the scenarios that compose them.

Every event acts only inside its window `[start_s, start_s + duration_s)` (seconds from the
scenario start); several events compose freely and their effects multiply. What each kind does
in `tools.simulator.FleetSimulator`, and what `magnitude` means for it (default in brackets):

- `latency_spike` (backend required; latency factor [2.0]): every request's latency times
  magnitude. A slow dependency: slots are not held longer, so capacity is unchanged.
- `backend_failure` (backend required; share of capacity lost, in (0, 1] [1.0]): at 1.0 the
  backend hangs and every request times out (an error, latency at the timeout cap); below 1
  that share of its capacity is gone.
- `cascading_failure` (backend required; utilisation threshold [0.9]): `backend` fails as
  above; any other backend whose offered load stays above magnitude x its capacity for
  CASCADE_SUSTAIN_S (60 s) fails too, until the window ends. Neighbours absorbing the failed
  backend's load is what spreads it, so a router that spreads load carefully can stop it.
- `traffic_surge` (no backend; arrival-rate factor [3.0]): arrivals times magnitude, ramped
  linearly over the first and last minute of the window.
- `gradual_drift` (backend optional, none = all; service-time factor at the window end [1.6]):
  the service time grows linearly from x1 to x magnitude over the window, so capacity falls
  and the load-latency curve bends earlier.
- `anomaly_burst` (backend required; latency factor within a burst [4.0]): short bursts (1-3
  ticks, gaps of 2-8 ticks) of latency x magnitude, an error rate raised by 0.3, or both.
  `BackendTick.chaos` names the kind only on burst ticks: those are the labels.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.fleet import DEFAULT_FLEET, BackendSpec
from tools.traffic import TrafficModel

ChaosKind = Literal[
    "latency_spike",
    "backend_failure",
    "cascading_failure",
    "traffic_surge",
    "gradual_drift",
    "anomaly_burst",
]
CHAOS_KINDS: tuple[str, ...] = ChaosKind.__args__  # type: ignore[attr-defined]

DEFAULT_DURATION_S: dict[str, float] = {
    "latency_spike": 300.0,
    "backend_failure": 900.0,
    "cascading_failure": 1200.0,
    "traffic_surge": 600.0,
    "gradual_drift": 3600.0,
    "anomaly_burst": 300.0,
}
DEFAULT_MAGNITUDE: dict[str, float] = {
    "latency_spike": 2.0,
    "backend_failure": 1.0,
    "cascading_failure": 0.9,
    "traffic_surge": 3.0,
    "gradual_drift": 1.6,
    "anomaly_burst": 4.0,
}
CASCADE_SUSTAIN_S = 60.0
"""How long a neighbour's offered load must stay above the threshold before it fails too."""
ANOMALY_ERROR_RATE = 0.3
"""Error probability added during an anomaly burst of the error type."""

_BACKEND_REQUIRED = {"latency_spike", "backend_failure", "cascading_failure", "anomaly_burst"}


class ChaosEvent(BaseModel):
    """One fault injected into a scenario. `duration_s` and `magnitude` default per kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ChaosKind
    start_s: float = Field(ge=0, allow_inf_nan=False)
    duration_s: float = Field(None, gt=0, allow_inf_nan=False)  # type: ignore[assignment]
    backend: str | None = None
    magnitude: float = Field(None, allow_inf_nan=False)  # type: ignore[assignment]

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
        if k == "traffic_surge" and self.backend is not None:
            raise ValueError(
                "traffic_surge acts on the whole fleet's arrivals: leave backend unset"
            )
        if k in ("latency_spike", "anomaly_burst") and m <= 1:
            raise ValueError(f"{k} magnitude is a latency factor and must be > 1, got {m}")
        if k == "backend_failure" and not 0 < m <= 1:
            raise ValueError(f"backend_failure magnitude is the capacity lost, in (0, 1], got {m}")
        if k == "cascading_failure" and not 0 < m <= 2:
            raise ValueError(
                f"cascading_failure magnitude is a utilisation threshold in (0, 2], got {m}"
            )
        if k in ("traffic_surge", "gradual_drift") and m <= 0:
            raise ValueError(f"{k} magnitude must be > 0, got {m}")
        return self

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


class Scenario(BaseModel):
    """A reproducible experiment: seed, fleet, traffic and chaos events over a duration.

    `fleet` entries are `BackendSpec`s (or dicts of their fields) or names from DEFAULT_FLEET;
    None means DEFAULT_FLEET.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    seed: int = 0
    duration_s: float = Field(3600.0, gt=0, allow_inf_nan=False)
    fleet: tuple[BackendSpec | str, ...] | None = None
    traffic: TrafficModel = Field(default_factory=TrafficModel)
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
                    f"chaos[{i}] ({ev.kind}) starts at {ev.start_s} s, after the scenario ends "
                    f"({self.duration_s} s)"
                )
        return self

    def backends(self) -> tuple[BackendSpec, ...]:
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
                        f"{', '.join(known)} (or give a full BackendSpec)"
                    )
                out.append(known[entry])
            else:
                out.append(entry)
        if not out:
            raise ValueError("fleet is empty")
        return tuple(out)

    @property
    def effective_duration_s(self) -> float:
        """The scenario's duration, shortened to the traffic trace's length if that is shorter."""
        return min(self.duration_s, self.traffic.duration_s)


CHAOS_START_S = 1320.0
"""Minute 22: after the forecaster's feature windows and the policies have warmed up."""


def _one(name: str, seed: int, **event: object) -> Scenario:
    """A one-hour scenario named after its single event's kind."""
    chaos = (ChaosEvent(kind=name, **event),)  # type: ignore[arg-type]
    return Scenario(name=name, seed=seed, duration_s=3600.0, chaos=chaos)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _one("latency_spike", 101, start_s=CHAOS_START_S, backend="b0"),
        _one("backend_failure", 102, start_s=CHAOS_START_S, backend="b0"),
        _one("cascading_failure", 103, start_s=CHAOS_START_S, backend="b0"),
        _one("traffic_surge", 104, start_s=CHAOS_START_S),
        _one("gradual_drift", 105, start_s=1200.0, duration_s=2400.0, backend="b0"),
        _one("anomaly_burst", 106, start_s=CHAOS_START_S, backend="b0"),
    )
}
"""One hour each, one event on the primary (or the whole fleet) starting around minute 20-22."""


def scenario(name: str) -> Scenario:
    """The built-in scenario called `name` (a copy), or a ValueError listing the known names."""
    found = SCENARIOS.get(name)
    if found is None:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown scenario {name!r}{hint}; known: {', '.join(SCENARIOS)}")
    return found.model_copy(deep=True)
