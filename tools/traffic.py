"""Request arrivals: diurnal rhythm, bursts and Poisson noise, or a replayed trace.

The rate is a Markov-modulated Poisson process (MMPP): a sinusoidal diurnal mean
`mean_rps · (1 + amplitude · sin(2π (t + phase) / period))`, multiplied while a burst is on by
a burst intensity, with bursts switching on and off as a two-state Markov chain (on with
probability rate·tick per tick, off with probability tick / mean duration). The count in a
tick is Poisson with that rate times the tick length, so small ticks are noisy the way real
traffic is. `TrafficModel.from_counts` replays a recorded per-tick count series instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.telemetry import TICK_SECONDS

DEFAULT_MEAN_RPS = 26.4
"""40% of the default fleet's 66 rps (80% of the primary's): a 3x surge overloads the fleet."""


class TrafficModel(BaseModel):
    """Parameters of the arrival process (pure data; `process(seed)` makes the random stream)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean_rps: float = Field(DEFAULT_MEAN_RPS, gt=0, allow_inf_nan=False)
    diurnal_amplitude: float = Field(0.3, ge=0, lt=1, allow_inf_nan=False)
    period_s: float = Field(86_400.0, gt=0, allow_inf_nan=False)
    phase_s: float = Field(0.0, allow_inf_nan=False)
    """Shifts the sinusoid: at t = -phase_s the load is at its mean and rising."""
    burst_rate_per_hour: float = Field(3.0, ge=0, allow_inf_nan=False)
    burst_mean_duration_s: float = Field(90.0, gt=0, allow_inf_nan=False)
    burst_multiplier: float = Field(1.4, ge=1, allow_inf_nan=False)
    """Mean rate multiplier in a burst; each burst draws one in [1 + (m-1)/2, 1 + 3(m-1)/2]."""
    trace_counts: tuple[float, ...] | None = None
    """Per-tick arrival counts to replay instead of the synthetic process."""
    trace_scale: float = Field(1.0, gt=0, allow_inf_nan=False)

    @field_validator("trace_counts")
    @classmethod
    def _check_counts(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is None:
            return v
        if len(v) == 0:
            raise ValueError("trace_counts is empty")
        for i, c in enumerate(v):
            if not math.isfinite(c) or c < 0:
                raise ValueError(f"trace_counts[{i}] must be finite and >= 0, got {c!r}")
        return v

    @classmethod
    def from_counts(cls, counts: Sequence[float] | np.ndarray, *, scale: float = 1.0):
        """Replay a recorded series: `counts[i]` requests arrive during tick i."""
        return cls(trace_counts=tuple(float(c) for c in counts), trace_scale=scale)

    @property
    def duration_s(self) -> float:
        """How long the traffic lasts: the trace's length, or forever for the synthetic process."""
        if self.trace_counts is None:
            return math.inf
        return len(self.trace_counts) * TICK_SECONDS

    def rate_at(self, t_s: float) -> float:
        """Expected requests/s at `t_s` seconds from the start, without bursts."""
        if not math.isfinite(t_s) or t_s < 0:
            raise ValueError(f"t_s must be finite and >= 0, got {t_s!r}")
        if self.trace_counts is not None:
            i = int(t_s // TICK_SECONDS)
            if i >= len(self.trace_counts):
                raise ValueError(f"t_s={t_s} is past the end of the trace ({self.duration_s} s)")
            return self.trace_counts[i] * self.trace_scale / TICK_SECONDS
        angle = 2.0 * math.pi * (t_s + self.phase_s) / self.period_s
        return self.mean_rps * (1.0 + self.diurnal_amplitude * math.sin(angle))

    def process(self, seed: int | np.random.Generator) -> ArrivalProcess:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return ArrivalProcess(self, rng)


class ArrivalProcess:
    """The seeded, stateful arrival stream of a `TrafficModel`: one count per tick, in order."""

    __slots__ = ("_burst", "_model", "_p_off", "_p_on", "_rng", "expected", "tick")

    def __init__(self, model: TrafficModel, rng: np.random.Generator) -> None:
        self._model = model
        self._rng = rng
        self._p_on = min(1.0, model.burst_rate_per_hour * TICK_SECONDS / 3600.0)
        self._p_off = min(1.0, TICK_SECONDS / model.burst_mean_duration_s)
        self._burst = 1.0
        self.tick = 0
        self.expected = 0.0
        """The mean of the count last drawn (the Poisson rate times the tick), before noise."""

    @property
    def in_burst(self) -> bool:
        """Whether the tick last drawn was inside a traffic burst."""
        return self._burst > 1.0

    def next_count(self, multiplier: float = 1.0) -> int:
        """Requests arriving in the next tick; `multiplier` scales the rate (e.g. a surge)."""
        if not math.isfinite(multiplier) or multiplier < 0:
            raise ValueError(f"multiplier must be finite and >= 0, got {multiplier!r}")
        m = self._model
        t = self.tick * TICK_SECONDS
        self.tick += 1
        # A fixed number of draws per tick keeps streams aligned across runs that differ only
        # in routing (common random numbers).
        u_switch, u_size, u_round = self._rng.random(3)
        if m.trace_counts is not None:
            expected = m.rate_at(t) * TICK_SECONDS * multiplier
            whole = math.floor(expected)
            count = int(whole + (u_round < expected - whole))
            self.expected = float(count)  # a recorded trace is the offered load itself
            return count
        if self._burst > 1.0:
            if u_switch < self._p_off:
                self._burst = 1.0
        elif u_switch < self._p_on:
            extra = m.burst_multiplier - 1.0
            self._burst = 1.0 + extra * (0.5 + u_size)
        lam = m.rate_at(t + TICK_SECONDS / 2.0) * self._burst * multiplier * TICK_SECONDS
        self.expected = lam
        return int(self._rng.poisson(lam))
