"""Physical bounds on what telemetry and outcomes may claim.

A latency of 1e308 ms is a parse error or a unit mix-up, not a slow request; stored, it turns
every mean, square and sum downstream into overflow or infinity. The defaults sit far beyond
anything a serving fleet reports (the simulator's timeout is 30 s; a label that arrives a day
after its decision is long expired), so they only refuse the impossible. Settings can widen or
narrow them (`ARCPOINT_MAX_LATENCY_MS`, `ARCPOINT_MAX_RPS`, `ARCPOINT_MAX_LABEL_LAG_S`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIN_TS = 0.0
"""1970-01-01: nothing Arcpoint reads happened earlier."""
MAX_TS = 4_102_444_800.0
"""2100-01-01 UTC: a later time is a unit mix-up (milliseconds read as seconds), not data."""


class ValueBounds(BaseModel):
    """Upper bounds (inclusive) on stored values; lower bounds are physical (>= 0)."""

    model_config = ConfigDict(frozen=True)

    max_latency_ms: float = Field(600_000.0, gt=0, allow_inf_nan=False)
    """10 minutes: 20 times the simulator's 30 s request timeout."""
    max_rps: float = Field(1_000_000.0, gt=0, allow_inf_nan=False)
    """Requests per second for one backend (also bounds in-flight requests)."""
    max_label_lag_s: float = Field(86_400.0, gt=0, allow_inf_nan=False)
    """How long after its decision an outcome may be observed (a day)."""


DEFAULT_BOUNDS = ValueBounds()
