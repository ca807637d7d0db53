"""What the service knows live, router-side: requests in flight, completions, engine scrapes.

`LiveFleet` implements `tools.routers.base.RouterView`, the view a per-request policy reads, and
accumulates each tick's completions and scrapes into the tick-level `TelemetryPoint`s that the
current `agents.Router` (forecaster, policy, fleet monitor) consumes. All of it is touched only on
the event loop's thread, so it needs no locks. Memory is bounded: at most `max_open` decisions
are tracked in flight (the oldest are forgotten first, counted in `forgotten`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from tools.routers.base import BackendProfile, EngineMetrics
from tools.telemetry import TelemetryPoint

SCRAPE_FRESH_S = 30.0
"""A scrape older than this no longer stands for a backend's load."""


@dataclass
class _TickBuffer:
    routed: int = 0
    e2e: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    errors: int = 0
    timeouts: int = 0


@dataclass(frozen=True, slots=True)
class BackendTick:
    """One backend over one tick, for the dashboard's history and the monitor."""

    backend: str
    routed: int
    completed: int
    errors: int
    e2e_p50_ms: float | None
    e2e_p95_ms: float | None
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    in_flight: int
    source: str
    """`outcomes` (from reported completions), `scrape` (engine histograms) or `none`."""


def _q(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


class LiveFleet:
    def __init__(
        self,
        profiles: Sequence[BackendProfile],
        *,
        clock: Callable[[], float] = time.time,
        max_open: int = 1_000_000,
    ) -> None:
        self._backends = tuple(profiles)
        self.names = tuple(p.name for p in profiles)
        self.index = {n: i for i, n in enumerate(self.names)}
        self._clock = clock
        self._in_flight = [0] * len(self.names)
        self._open: dict[str, tuple[int, float, int, int]] = {}
        """decision id -> (backend index, opened at, request number, input tokens)."""
        self._max_open = max_open
        self.forgotten = 0
        self.expired = 0
        self._scrapes: list[EngineMetrics | None] = [None] * len(self.names)
        self._tick = [_TickBuffer() for _ in self.names]
        self.probes_requested = 0
        self.history: deque[tuple[float, tuple[BackendTick, ...]]] = deque(maxlen=360)

    # -- RouterView ---------------------------------------------------------------------------

    @property
    def now_s(self) -> float:
        return self._clock()

    @property
    def backends(self) -> Sequence[BackendProfile]:
        return self._backends

    @property
    def in_flight(self) -> Sequence[int]:
        return self._in_flight

    def last_scrape(self, backend: int) -> EngineMetrics | None:
        return self._scrapes[backend]

    def send_probe(self, backend: int) -> None:
        """No probe transport yet: counted, so a probing policy's requests are visible."""
        self.probes_requested += 1

    # -- events -------------------------------------------------------------------------------

    def opened(
        self, decision_id: str, backend: str, ts: float, request_no: int = 0, input_tokens: int = 0
    ) -> None:
        i = self.index[backend]
        self._in_flight[i] += 1
        self._tick[i].routed += 1
        self._open[decision_id] = (i, ts, request_no, input_tokens)
        if len(self._open) > self._max_open:
            old_id = next(iter(self._open))
            j = self._open.pop(old_id)[0]
            self._in_flight[j] -= 1
            self.forgotten += 1

    def completed(
        self, decision_id: str, status: str, e2e_ms: float, ttft_ms: float | None
    ) -> tuple[int, float, int, int] | None:
        """Close a decision's request; returns what `opened` was told (None when it was not in
        flight: already expired, or routed before a restart)."""
        entry = self._open.pop(decision_id, None)
        if entry is None:
            return None
        i = entry[0]
        self._in_flight[i] -= 1
        buf = self._tick[i]
        if status == "ok":
            buf.e2e.append(e2e_ms)
            if ttft_ms is not None:
                buf.ttft.append(ttft_ms)
        else:
            buf.errors += 1
            if status == "timeout":
                buf.e2e.append(e2e_ms)  # a timeout is a latency the user saw
                buf.timeouts += 1
        return entry

    def scraped(self, metrics: EngineMetrics) -> None:
        self._scrapes[metrics.backend] = metrics

    def expire(self, now: float, max_age_s: float) -> int:
        """Forget in-flight requests older than `max_age_s` (their outcome will never come)."""
        cutoff = now - max_age_s
        opened = self._open
        n = 0
        while opened:  # insertion order is time order: stop at the first fresh one
            d = next(iter(opened))
            i, ts = opened[d][:2]
            if ts >= cutoff:
                break
            del opened[d]
            self._in_flight[i] -= 1
            n += 1
        self.expired += n
        return n

    # -- ticks --------------------------------------------------------------------------------

    def end_tick(self, now: float, tick_s: float) -> tuple[list[TelemetryPoint], int]:
        """Close the tick: its telemetry points (backends with evidence only) and its arrivals."""
        points: list[TelemetryPoint] = []
        rows: list[BackendTick] = []
        arrivals = 0
        for i, name in enumerate(self.names):
            buf = self._tick[i]
            self._tick[i] = _TickBuffer()
            arrivals += buf.routed
            scrape = self._scrapes[i]
            fresh = scrape is not None and now - scrape.scraped_at_s <= SCRAPE_FRESH_S
            load = (
                scrape.num_requests_running + scrape.num_requests_waiting
                if fresh and scrape is not None
                else self._in_flight[i]
            )
            tick = BackendTick(
                name,
                buf.routed,
                len(buf.e2e) + buf.errors - buf.timeouts,
                buf.errors,
                _q(buf.e2e, 0.5),
                _q(buf.e2e, 0.95),
                _q(buf.ttft, 0.5),
                _q(buf.ttft, 0.95),
                self._in_flight[i],
                "none",
            )
            n = tick.completed
            if buf.e2e:
                p50, p95 = tick.e2e_p50_ms, tick.e2e_p95_ms
                err = buf.errors / n
                source = "outcomes"
            elif fresh and scrape is not None and scrape.e2e_p95_ms is not None:
                p50 = scrape.e2e_p50_ms if scrape.e2e_p50_ms is not None else scrape.e2e_p95_ms
                p95 = scrape.e2e_p95_ms
                err = scrape.errors / scrape.completed if scrape.completed else 0.0
                source = "scrape"
                tick = _replace_tick(tick, scrape)
            else:
                rows.append(tick)
                continue
            rows.append(replace(tick, source=source))
            if p50 is None or p95 is None:
                continue
            points.append(
                TelemetryPoint(
                    ts=now,
                    backend=name,
                    rps=buf.routed / tick_s,
                    p50_ms=float(p50),
                    p95_ms=float(p95),
                    error_rate=float(min(max(err, 0.0), 1.0)),
                    in_flight=float(load),
                )
            )
        self.history.append((now, tuple(rows)))
        return points, arrivals


def _replace_tick(tick: BackendTick, scrape: EngineMetrics) -> BackendTick:
    return replace(
        tick,
        completed=scrape.completed,
        errors=scrape.errors,
        e2e_p50_ms=scrape.e2e_p50_ms,
        e2e_p95_ms=scrape.e2e_p95_ms,
        ttft_p50_ms=scrape.ttft_p50_ms,
        ttft_p95_ms=scrape.ttft_p95_ms,
    )


def finite_or_none(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None
