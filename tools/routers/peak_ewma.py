"""`peak_ewma`: Finagle's (and Linkerd's) peak-EWMA load metric with power-of-two choices.

Source: Finagle `finagle-core/src/main/scala/com/twitter/finagle/loadbalancer/PeakEwma.scala`
(the `Metric` class) and `Balancers.p2cPeakEwma(decayTime = 10.seconds)`:

* each backend keeps `cost`, a moving average of round-trip time that is *peak sensitive*: a
  sample above the current cost replaces it at once, a lower one is blended in with weight
  `1 - w`, `w = exp(-Δt / τ)`, Δt the time since the previous observation (an unevenly spaced
  EWMA) and τ the decay time (10 s by default);
* reading the load first decays the cost towards zero by the time elapsed (`observe(0.0)`), then
  returns `cost * (pending + 1)`: the latency a new request would see if it queued behind the
  requests already outstanding; a backend with no latency history but pending requests gets a
  huge penalty (`Long.MaxValue >> 16 + pending`) so it is probed by one request at a time;
* the balancer (P2C) draws two *distinct* backends at random and sends to the lower load.

The round-trip time is the request's end-to-end latency as the router sees it (Finagle stops the
clock when the response is closed), failures included: Finagle observes failed requests too,
which is why a backend that fails fast looks fast to it. `pending` is the router's own in-flight
count (`RouterView.in_flight`), the same count Finagle keeps per node.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from tools.routers.base import BackendProfile, Completion, PolicyBase, RequestInfo, RouterView

DEFAULT_DECAY_TIME_S = 10.0
PENALTY = float((2**63 - 1) >> 16)
"""Finagle's load for a backend with pending requests and no latency sample yet."""


class PeakEwmaPolicy(PolicyBase):
    name = "peak_ewma"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        decay_time_s: float = DEFAULT_DECAY_TIME_S,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("peak_ewma needs at least one backend")
        if decay_time_s <= 0:
            raise ValueError("peak_ewma: decay_time_s must be positive")
        self._n = n
        self._rng = random.Random(seed)
        self.tau = float(decay_time_s)
        self.cost = [0.0] * n
        """Peak-sensitive EWMA of round-trip time per backend, milliseconds."""
        self._stamp = [0.0] * n

    def _observe(self, i: int, rtt_ms: float, now_s: float) -> None:
        td = now_s - self._stamp[i]
        w = math.exp(-td / self.tau) if td > 0.0 else 1.0
        c = self.cost[i]
        self.cost[i] = rtt_ms if rtt_ms > c else c * w + rtt_ms * (1.0 - w)
        self._stamp[i] = now_s

    def load(self, i: int, pending: int, now_s: float) -> float:
        """Finagle's `Metric.get()`: decay to now, then cost times (pending + 1)."""
        self._observe(i, 0.0, now_s)
        c = self.cost[i]
        if c == 0.0 and pending != 0:
            return PENALTY + pending
        return c * (pending + 1)

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        n = self._n
        if n == 1:
            return 0
        rand = self._rng.random
        a = int(rand() * n)
        b = int(rand() * (n - 1))
        if b >= a:
            b += 1
        now = view.now_s
        pending = view.in_flight
        return a if self.load(a, pending[a], now) <= self.load(b, pending[b], now) else b

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        self._observe(completion.backend, completion.e2e_ms, completion.finished_at_s)
