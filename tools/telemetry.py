"""The one telemetry record every part of Arcpoint speaks.

A plain slotted dataclass rather than a pydantic model: the simulator emits millions of these and
the feature windows read them on every tick, so construction must stay cheap. Validation of
untrusted input happens at the ingest boundary, which builds these only from checked values.
"""

from __future__ import annotations

from dataclasses import dataclass

TICK_SECONDS = 10.0
"""Telemetry cadence: one point per backend every 10 s."""

HORIZON_SECONDS = 300.0
"""The forecaster predicts p95 latency this far ahead (5 minutes)."""

HORIZON_TICKS = int(HORIZON_SECONDS // TICK_SECONDS)


@dataclass(frozen=True, slots=True)
class TelemetryPoint:
    """One backend's state over one tick.

    `ts` is unix seconds at the end of the tick. `rps` is the request rate the backend served,
    `in_flight` the mean number of requests in progress. Sources that do not know the load
    (a single-column series) set `rps` and `in_flight` to 0.0 and `load_known` to False.
    """

    ts: float
    backend: str
    rps: float
    p50_ms: float
    p95_ms: float
    error_rate: float
    in_flight: float
    load_known: bool = True
