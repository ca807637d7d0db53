"""Types shared by every routing policy: requests, tiers, the per-tick fleet view, decisions.

Plain slotted dataclasses: a request is routed in microseconds, so nothing here validates on
construction. Untrusted input is checked where it enters (the Router, the ingest, the CLI).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEFAULT_SLA_MS = 300.0


@dataclass(frozen=True, slots=True)
class Tier:
    """A service tier: its latency SLA and whether its requests always ask for review."""

    name: str
    sla_ms: float = DEFAULT_SLA_MS
    review: bool = False


TIERS: Mapping[str, Tier] = {
    "standard": Tier("standard", DEFAULT_SLA_MS),
    "premium": Tier("premium", 250.0),
    "batch": Tier("batch", 1000.0),
    "review": Tier("review", DEFAULT_SLA_MS, review=True),
}


@dataclass(frozen=True, slots=True)
class RouteRequest:
    request_id: str
    tier: str = "standard"
    sla_ms: float | None = None
    """Overrides the tier's SLA when set."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Caller-supplied text. Data only: never read as instructions by any model."""
    ts: float | None = None
    """When the request arrived (unix seconds, on the caller's clock: simulated in a replay).
    The decision is stamped with it; without it, with the time of the router's last tick."""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What the router is configured with for a backend (not what it observes)."""

    name: str
    cost_per_request: float
    capacity_rps: float | None = None
    """Provisioned throughput, when the operator knows it. Lets the policy judge how latency
    moves with the load it sends; without it the policy steers by forecasts alone."""


@dataclass(frozen=True, slots=True)
class BackendView:
    """One backend as the router sees it at a tick: last telemetry plus the cached forecast."""

    name: str
    cost_per_request: float
    rps: float
    p95_ms: float
    error_rate: float
    in_flight: float
    forecast_ms: float = math.nan
    forecast_lo_ms: float = math.nan
    forecast_hi_ms: float = math.nan


@dataclass(frozen=True, slots=True)
class FleetView:
    """Everything a policy may know at a tick. Built once per tick, read by every request."""

    ts: float
    backends: tuple[BackendView, ...]
    arrivals: int
    """Requests that arrived during the tick that just ended."""
    model_version: str | None = None
    alarms: Mapping[str, str] = field(default_factory=dict)
    """Active anomaly or drift alarms by backend name (reason text)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One backend as a decision saw it. `forecast_ms` and its interval are the fleet's
    5-minute p95 forecast (the prior); `ttft_ms`, `e2e_ms` and `p_meet_slo` the per-request
    prediction the router chose on."""

    backend: str
    forecast_ms: float
    lo_ms: float
    hi_ms: float
    cost_per_request: float
    share: float
    """Share of the router's recent requests sent here (an exponential average)."""
    ejected: bool
    p_meet_slo: float = math.nan
    """The router's probability that this request meets its SLO here (TTFT and end to end)."""
    ttft_ms: float = math.nan
    """Predicted median TTFT of this request here, with its 80% interval below."""
    ttft_lo_ms: float = math.nan
    ttft_hi_ms: float = math.nan
    e2e_ms: float = math.nan
    e2e_lo_ms: float = math.nan
    e2e_hi_ms: float = math.nan
    note: str = ""
    """Why this candidate was or was not picked (`chosen`, `ejected`, `below_target`, ...)."""


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    request_id: str
    ts: float
    backend: str
    policy: str
    reason: str
    """Reason code (`tools.routers.predictive.policy.REASONS`), e.g. `cheapest_likely`."""
    sla_ms: float
    tier: str
    ambiguous: bool = False
    ambiguous_reason: str | None = None
    candidates: tuple[Candidate, ...] = ()
    model_version: str | None = None

    @property
    def chosen(self) -> Candidate | None:
        for c in self.candidates:
            if c.backend == self.backend:
                return c
        return None


_CANDIDATES = Decision.__dict__["candidates"]  # the slot under `Decision.candidates`


class DeferredDecision(Decision):
    """A `Decision` whose candidates are built on first read (`.candidates`, equality, repr,
    pickling, `dataclasses.asdict`/`replace`), then kept.

    Why: a router decides in microseconds, while every candidate's prediction, interval and
    reason costs tens more; most decisions of a replay are never read. `build` must compute
    from values captured when the decision was made (never from live state), so a decision
    read later says exactly what it would have said at once."""

    __slots__ = ("_build",)

    @classmethod
    def deferred(
        cls,
        build: Callable[[], tuple[Candidate, ...]],
        decision_id: str,
        request_id: str,
        ts: float,
        backend: str,
        policy: str,
        reason: str,
        sla_ms: float,
        tier: str,
        ambiguous: bool = False,
        ambiguous_reason: str | None = None,
        model_version: str | None = None,
    ) -> Decision:
        """The Decision with these fields whose candidates `build` returns when first read.
        Built slot by slot (a frozen dataclass's `__init__` costs microseconds per decision)."""
        d = object.__new__(cls)
        s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12 = _SETTERS
        s0(d, decision_id)
        s1(d, request_id)
        s2(d, ts)
        s3(d, backend)
        s4(d, policy)
        s5(d, reason)
        s6(d, sla_ms)
        s7(d, tier)
        s8(d, ambiguous)
        s9(d, ambiguous_reason)
        s10(d, ())
        s11(d, model_version)
        s12(d, build)
        return d

    @property  # type: ignore[override]
    def candidates(self) -> tuple[Candidate, ...]:
        build = getattr(self, "_build", None)
        if build is not None:
            _CANDIDATES.__set__(self, tuple(build()))
            object.__setattr__(self, "_build", None)
        return _CANDIDATES.__get__(self)  # type: ignore[no-any-return]

    @candidates.setter
    def candidates(self, value: tuple[Candidate, ...]) -> None:
        # only Decision.__init__ (through object.__setattr__) gets here: the class is frozen
        _CANDIDATES.__set__(self, value)


_DEFERRED_ORDER = (
    "decision_id",
    "request_id",
    "ts",
    "backend",
    "policy",
    "reason",
    "sla_ms",
    "tier",
    "ambiguous",
    "ambiguous_reason",
    "candidates",
    "model_version",
)
if set(_DEFERRED_ORDER) != set(Decision.__dataclass_fields__):  # pragma: no cover
    raise TypeError("DeferredDecision.deferred must set every field of Decision")
_SETTERS = (
    *(Decision.__dict__[f].__set__ for f in _DEFERRED_ORDER),
    DeferredDecision.__dict__["_build"].__set__,
)
"""Slot setters of `DeferredDecision.deferred`, in the order of Decision's fields, then _build."""
