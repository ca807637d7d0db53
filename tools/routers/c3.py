"""`c3`: C3 (Suresh, Canini, Schmid, Feldmann, "C3: Cutting Tail Latency in Cloud Data Stores via
Adaptive Replica Selection", NSDI 2015): replica ranking with a cubic queue penalty, and cubic
rate control with backpressure.

Sources: the paper's replica-ranking and rate-control sections, and the authors' simulator
(lalithsuresh/absim, `simulations/client.py`: `computeExpectedDelay`, `updateEma`, `updateRates`,
`RateLimiter`, `ReceiveRate`, `BackpressureScheduler`), whose defaults are used.

* **Ranking**: each server s is scored `psi_s = (R_s - 1/mu_s) + q_hat_s**3 / mu_s` with
  `q_hat_s = 1 + os_s * n + q_s`: `R_s` an EWMA of the response time the client sees, `1/mu_s`
  an EWMA of the server's service time, `q_s` an EWMA of the server's queue size, `os_s` the
  client's outstanding requests to s and `n` the number of clients (concurrency compensation).
  EWMAs weigh the new sample by alpha = 0.9. A server with no feedback yet scores 0 (tried first).
  The lowest score wins.
* **Rate control**: per server, a token bucket at `srate` requests per interval δ (starting at 10,
  burst 10) and the receive rate `rrate` (responses per δ, an EWMA with weight 0.1 per interval).
  On each response: if `srate < rrate`, grow along the cubic `gamma * (T - (beta * R0 / gamma) **
  (1/3)) ** 3 + R0` (T the time since the last decrease, R0 the rate before it), at most `s_max` =
  10 per step; if `srate > rrate` and the last increase is older than `hysteresis` = 2 intervals,
  remember R0 = srate and cut to `beta * srate` (beta = 0.2). A request goes to the best-ranked
  server whose bucket has a token.

Mapping to an LLM fleet (no server piggybacks feedback on responses here): the response time is
the request's end-to-end latency; the service time is its decode time (end-to-end minus time to
first token), so that `R - 1/mu` is the time to first token (queueing, prefill, network); the
queue size is the scraped `num_requests_waiting`; `os` is `RouterView.in_flight`.
Scales: absim works in milliseconds with δ = 10 ms against ~4 ms service times and
gamma = 4e-6 ms^-3; here T is measured in intervals (gamma = 4e-6 * 10**3 = 0.004 per δ³, the
same curve in units of δ). δ has no LLM-scale value in the sources, so it was chosen on held-out
traffic: the request-level simulator's default fleet, synthetic traffic without chaos at 50% and
80% load, seeds 900 and 901, 900 s each (none of the evaluation scenarios). Mean goodput over the
four runs for δ = 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2 s: 16.73, 16.69, 16.64, 11.51, 5.82, 7.76, 11.48
req/s (ranking alone: 16.51). From 0.2 s up the limiters starve servers: at moderate load the
sending limit falls whenever it exceeds the receive rate, which it does whenever demand is below
it. 0.02 to 0.1 s tie within noise; 0.1 s, the largest of them, keeps the rate control acting
(about 5% of requests meet an empty bucket at 80% load).
Backpressure: C3 holds a request in a client-side backlog until a bucket has a token; a router
here must answer at once, so when every bucket is empty the request goes at once to the server
whose next token frees first, and spends that token in advance (the bucket goes into debt): the
held requests are spread over the servers in the order the backlog would have released them,
only earlier.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tools.routers.base import (
    BackendProfile,
    Completion,
    EngineMetrics,
    PolicyBase,
    RequestInfo,
    RouterView,
)


class C3Policy(PolicyBase):
    name = "c3"

    def __init__(
        self,
        backends: Sequence[BackendProfile],
        seed: int = 0,
        alpha: float = 0.9,
        concurrency_weight: float = 1.0,
        cost_exponent: float = 3.0,
        rate_control: bool = True,
        rate_interval_s: float = 0.1,
        beta: float = 0.2,
        gamma: float = 0.004,
        s_max: float = 10.0,
        hysteresis: float = 2.0,
        max_tokens: float = 10.0,
        receive_alpha: float = 0.1,
    ) -> None:
        n = len(backends)
        if n == 0:
            raise ValueError("c3 needs at least one backend")
        if not 0.0 < alpha <= 1.0 or not 0.0 < receive_alpha <= 1.0:
            raise ValueError("c3: EWMA weights must be in (0, 1]")
        if rate_interval_s <= 0 or not 0.0 < beta < 1.0 or gamma <= 0 or max_tokens < 1:
            raise ValueError("c3: rate interval, beta in (0,1), gamma and max_tokens >= 1")
        self._n = n
        self._rng = random.Random(seed)
        self.alpha = alpha
        self.concurrency_weight = concurrency_weight
        self.cost_exponent = cost_exponent
        self.rate_control = rate_control
        self.delta = float(rate_interval_s)
        self.beta = beta
        self.gamma = gamma
        self.s_max = s_max
        self.hysteresis = hysteresis
        self.max_tokens = float(max_tokens)
        self.receive_alpha = receive_alpha
        self.response_ms: list[float | None] = [None] * n
        self.service_ms: list[float | None] = [None] * n
        self.queue: list[float | None] = [None] * n
        # Rate control, per server (absim's RateLimiter, ReceiveRate and bookkeeping).
        self.srate = [self.max_tokens] * n
        self.tokens = [self.max_tokens] * n
        self._last_sent = [0.0] * n
        self.rrate = [0.0] * n
        self._received = [0] * n
        self._last_decrease = [0.0] * n
        self._last_increase = [0.0] * n
        self._rate_at_decrease = [self.max_tokens] * n
        self._next_tick: float | None = None
        self.backpressured = 0
        """Requests that found every rate limiter empty."""

    # -- ranking --------------------------------------------------------------------------------

    def score(self, i: int, outstanding: int) -> float:
        """psi_i; 0 for a server that has not answered yet."""
        r = self.response_ms[i]
        if r is None:
            return 0.0
        s = self.service_ms[i] or 0.0
        q = self.queue[i] or 0.0
        q_hat = 1.0 + outstanding * self.concurrency_weight + q
        return (r - s) + q_hat**self.cost_exponent * s

    def choose(self, request: RequestInfo, view: RouterView) -> int:
        now = view.now_s
        self._tick(now)
        n = self._n
        start = self._rng.randrange(n)  # ties broken by a random rotation, as absim's replica set
        out = view.in_flight
        score = self.score
        keyed = [(score(i, out[i]), k) for k, i in enumerate([*range(start, n), *range(start)])]
        keyed.sort()
        order = [(start + k) % n for _, k in keyed]
        if not self.rate_control:
            return order[0]
        best_wait = float("inf")
        best = order[0]
        best_tokens = 0.0
        for i in order:
            tokens = min(
                self.max_tokens,
                self.tokens[i] + self.srate[i] / self.delta * (now - self._last_sent[i]),
            )
            if tokens >= 1.0:
                self.tokens[i] = tokens - 1.0
                self._last_sent[i] = now
                return i
            wait = (1.0 - tokens) * self.delta / self.srate[i]
            if wait < best_wait:
                best_wait, best, best_tokens = wait, i, tokens
        # Backpressure: C3 would hold the request until the first token frees up. It goes now to
        # the server whose token frees first, and that token is spent in advance (the bucket goes
        # into debt), so the next held request waits for the token after it, on whichever server
        # frees one first: the order C3's backlog would have sent them in.
        self.backpressured += 1
        self.tokens[best] = best_tokens - 1.0
        self._last_sent[best] = now
        return best

    # -- feedback -------------------------------------------------------------------------------

    def _ewma(self, old: float | None, new: float) -> float:
        return new if old is None else self.alpha * new + (1.0 - self.alpha) * old

    def on_complete(self, completion: Completion, view: RouterView) -> None:
        i = completion.backend
        now = completion.finished_at_s
        self._tick(now)
        self.response_ms[i] = self._ewma(self.response_ms[i], completion.e2e_ms)
        if completion.ttft_ms is not None:
            decode_ms = max(completion.e2e_ms - completion.ttft_ms, 0.0)
            self.service_ms[i] = self._ewma(self.service_ms[i], decode_ms)
        self._received[i] += 1
        if self.rate_control:
            self._update_rate(i, now)

    def on_scrape(self, metrics: EngineMetrics, view: RouterView) -> None:
        i = metrics.backend
        if 0 <= i < self._n:
            self.queue[i] = self._ewma(self.queue[i], float(metrics.num_requests_waiting))

    def _tick(self, now: float) -> None:
        """Close the receive-rate intervals that ended by `now` (absim's ReceiveRate process)."""
        if self._next_tick is None:
            self._next_tick = now + self.delta
            for i in range(self._n):
                self._last_decrease[i] = self._last_increase[i] = self._last_sent[i] = now
            return
        if now < self._next_tick:
            return
        elapsed = int((now - self._next_tick) / self.delta) + 1
        a = self.receive_alpha
        idle = (1.0 - a) ** (elapsed - 1)
        for i in range(self._n):
            self.rrate[i] = (a * self._received[i] + (1.0 - a) * self.rrate[i]) * idle
            self._received[i] = 0
        self._next_tick += elapsed * self.delta

    def _update_rate(self, i: int, now: float) -> None:
        """absim's `updateRates`: cubic growth below the receive rate, multiplicative cut above."""
        srate, rrate = self.srate[i], self.rrate[i]
        if srate < rrate:
            t = (now - self._last_decrease[i]) / self.delta
            self._last_increase[i] = now
            r0 = self._rate_at_decrease[i]
            target = self.gamma * (t - (r0 * self.beta / self.gamma) ** (1.0 / 3.0)) ** 3 + r0
            self.srate[i] = srate + self.s_max if target - srate > self.s_max else target
        elif rrate == 0.0:
            return
        elif srate > rrate and now - self._last_increase[i] > self.delta * self.hysteresis:
            self._rate_at_decrease[i] = srate
            self.srate[i] = max(srate * self.beta, 0.01)
            self._last_decrease[i] = now
        self.srate[i] = max(self.srate[i], 0.01)
