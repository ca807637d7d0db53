"""Reactive baseline policies, behind the same interface as the predictive one.

Each reacts only to what has already happened: per-request replies (`observe`) and the last
tick's telemetry. None of them sees a forecast. Outstanding requests, which least-loaded and
peak-EWMA balance on, are tracked the way a proxy would see them: each routed request adds one,
and the count decays with the backend's mean latency (Little's law: in steady state the count is
arrival rate times latency), requests being spread evenly through the tick.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tools.routing import TIERS, BackendInfo, Decision, FleetView, RouteRequest
from tools.telemetry import TICK_SECONDS


class _Base:
    name = "base"
    wants_observations = False

    def __init__(self, backends: Sequence[BackendInfo], id_prefix: str = "d") -> None:
        if not backends:
            raise ValueError("a policy needs at least one backend")
        self.backends = tuple(backends)
        self._names = [b.name for b in self.backends]
        self._index = {n: i for i, n in enumerate(self._names)}
        self._ids = itertools.count()
        self._id_prefix = id_prefix
        self._ts = 0.0

    def on_tick(self, view: FleetView | None) -> None:
        if view is not None:
            self._ts = view.ts

    def observe(self, backend: str, latency_ms: float, ok: bool) -> None:
        """Reactive policies learn from replies; the default ignores them."""

    def _decide(self, request: RouteRequest, i: int, reason: str) -> Decision:
        tier = TIERS.get(request.tier)
        sla = request.sla_ms if request.sla_ms is not None else (tier.sla_ms if tier else 300.0)
        return Decision(
            decision_id=f"{self._id_prefix}{next(self._ids)}",
            request_id=request.request_id,
            ts=self._ts,
            backend=self._names[i],
            policy=self.name,
            reason=reason,
            sla_ms=sla,
            tier=request.tier,
        )


class StaticPolicy(_Base):
    """Everything to the primary (the first backend), whatever happens."""

    name = "static"

    def route(self, request: RouteRequest) -> Decision:
        return self._decide(request, 0, "static_primary")


class RoundRobinPolicy(_Base):
    name = "round_robin"

    def __init__(self, backends: Sequence[BackendInfo], id_prefix: str = "d") -> None:
        super().__init__(backends, id_prefix)
        self._next = itertools.cycle(range(len(self.backends)))

    def route(self, request: RouteRequest) -> Decision:
        return self._decide(request, next(self._next), "round_robin")


class _Outstanding(_Base):
    """Tracks outstanding requests per backend as a proxy would (see the module docstring)."""

    def __init__(self, backends: Sequence[BackendInfo], id_prefix: str = "d") -> None:
        super().__init__(backends, id_prefix)
        n = len(self.backends)
        self._outstanding = np.zeros(n)
        self._mean_latency_s = np.full(n, 0.1)
        self._decay = np.ones(n)

    def on_tick(self, view: FleetView | None) -> None:
        super().on_tick(view)
        if view is None:
            return
        by_name = {b.name: b for b in view.backends}
        for i, name in enumerate(self._names):
            b = by_name.get(name)
            if b is not None and b.rps > 0 and b.in_flight > 0:
                self._mean_latency_s[i] = b.in_flight / b.rps
        gap_s = TICK_SECONDS / max(view.arrivals, 1)
        self._decay = np.exp(-gap_s / np.maximum(self._mean_latency_s, 1e-3))

    def _arrive(self, i: int) -> None:
        self._outstanding *= self._decay
        self._outstanding[i] += 1.0


class LeastLoadedPolicy(_Outstanding):
    """The backend with the fewest outstanding requests (Envoy's least-request, full scan)."""

    name = "least_loaded"

    def route(self, request: RouteRequest) -> Decision:
        i = int(np.argmin(self._outstanding))
        self._arrive(i)
        return self._decide(request, i, "least_outstanding")


class PeakEwmaPolicy(_Outstanding):
    """Finagle/Linkerd peak-EWMA with power-of-two choices.

    Cost of a backend = peak-sensitive EWMA of its reply latency x (outstanding + 1). A slower
    reply than the average replaces it at once; faster ones pull it down with time constant
    `tau_s`. Two distinct backends are drawn at random and the cheaper (by that cost) wins.
    """

    name = "peak_ewma"
    wants_observations = True

    def __init__(
        self,
        backends: Sequence[BackendInfo],
        id_prefix: str = "d",
        tau_s: float = 10.0,
        seed: int = 0,
    ) -> None:
        super().__init__(backends, id_prefix)
        self._ewma = np.full(len(self.backends), math.nan)
        self._tau_s = tau_s
        self._rng = np.random.default_rng(seed)
        self._pairs = self._rng.integers(0, 1 << 30, size=4096)
        self._k = 0
        self._obs_gap_s = 0.01

    def on_tick(self, view: FleetView | None) -> None:
        super().on_tick(view)
        if view is not None:
            self._obs_gap_s = TICK_SECONDS / max(view.arrivals, 1)

    def route(self, request: RouteRequest) -> Decision:
        n = len(self.backends)
        if n == 1:
            i = 0
        else:
            r = int(self._pairs[self._k % self._pairs.size])
            self._k += 1
            if self._k % self._pairs.size == 0:
                self._pairs = self._rng.integers(0, 1 << 30, size=4096)
            a = r % n
            b = (a + 1 + (r // n) % (n - 1)) % n
            i = a if self._cost(a) <= self._cost(b) else b
        self._arrive(i)
        return self._decide(request, i, "peak_ewma_p2c")

    def _cost(self, i: int) -> float:
        e = self._ewma[i]
        if math.isnan(e):
            e = 0.0  # unseen backends are tried first, as in Finagle
        return e * (self._outstanding[i] + 1.0)

    def observe(self, backend: str, latency_ms: float, ok: bool) -> None:
        i = self._index[backend]
        e = self._ewma[i]
        if math.isnan(e) or latency_ms > e:
            self._ewma[i] = latency_ms
        else:
            w = math.exp(-self._obs_gap_s / self._tau_s)
            self._ewma[i] = e * w + latency_ms * (1.0 - w)


@dataclass(slots=True)
class _Ejection:
    consecutive_failures: int = 0
    consecutive_slow: int = 0
    ejections: int = 0
    ejected_until: float = -math.inf
    last_ejected_at: float = -math.inf


class OutlierEjectionPolicy(_Base):
    """Round robin with Envoy-style outlier detection.

    `consecutive_failures` errors or `consecutive_slow` replies slower than `slow_ms` in a row
    eject a backend for `base_ejection_s` x its ejection count (capped at `max_ejection_s`); at
    most `max_ejection_percent` of the fleet is ejected at once (at least one backend may be).
    The ejection count decays by one for every `base_ejection_s` spent back in service.
    """

    name = "outlier_ejection"
    wants_observations = True

    def __init__(
        self,
        backends: Sequence[BackendInfo],
        id_prefix: str = "d",
        consecutive_failures: int = 5,
        consecutive_slow: int = 5,
        slow_ms: float = 300.0,
        base_ejection_s: float = 30.0,
        max_ejection_s: float = 300.0,
        max_ejection_percent: float = 50.0,
    ) -> None:
        super().__init__(backends, id_prefix)
        self._state = [_Ejection() for _ in self.backends]
        self._limits = (consecutive_failures, consecutive_slow)
        self._slow_ms = slow_ms
        self._base_s = base_ejection_s
        self._max_s = max_ejection_s
        self._max_ejected = max(1, int(len(self.backends) * max_ejection_percent / 100.0))
        self._rr = 0
        self._healthy = list(range(len(self.backends)))

    def on_tick(self, view: FleetView | None) -> None:
        super().on_tick(view)
        for st in self._state:
            if st.ejections and self._ts - st.ejected_until >= self._base_s:
                # One ejection forgiven per base period back in service; moving the (past)
                # return time forward keeps the next decrement one period later.
                st.ejections -= 1
                st.ejected_until += self._base_s
        self._refresh_healthy()

    def _refresh_healthy(self) -> None:
        healthy = [i for i, st in enumerate(self._state) if st.ejected_until <= self._ts]
        self._healthy = healthy or list(range(len(self.backends)))

    def route(self, request: RouteRequest) -> Decision:
        healthy = self._healthy
        i = healthy[self._rr % len(healthy)]
        self._rr += 1
        return self._decide(request, i, "round_robin_outlier_ejection")

    def observe(self, backend: str, latency_ms: float, ok: bool) -> None:
        i = self._index[backend]
        st = self._state[i]
        st.consecutive_failures = 0 if ok else st.consecutive_failures + 1
        st.consecutive_slow = st.consecutive_slow + 1 if latency_ms > self._slow_ms else 0
        if st.ejected_until > self._ts:
            return
        if (
            st.consecutive_failures >= self._limits[0] or st.consecutive_slow >= self._limits[1]
        ) and self._ejected_count() < self._max_ejected:
            st.ejections += 1
            st.ejected_until = self._ts + min(self._base_s * st.ejections, self._max_s)
            st.consecutive_failures = st.consecutive_slow = 0
            self._refresh_healthy()

    def _ejected_count(self) -> int:
        return sum(st.ejected_until > self._ts for st in self._state)


BASELINES = {
    "static": StaticPolicy,
    "round_robin": RoundRobinPolicy,
    "least_loaded": LeastLoadedPolicy,
    "outlier_ejection": OutlierEjectionPolicy,
    "peak_ewma": PeakEwmaPolicy,
}
