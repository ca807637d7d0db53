"""What the latency model reads about a (backend, request) pair, computed one way for training and
serving.

`FleetTracker` keeps the router-side state a router in front of a real fleet has: its own
requests in flight on each backend and their prompt tokens, the requests it routed since each
backend's last scrape, running averages of the latencies it observed there (TTFT, time per
output token, end-to-end), and how long ago it last heard from the backend. `FleetTracker.row`
turns that state, the backend's last scrape (`RouterView.last_scrape`) and the request's prompt
tokens into one feature row; the training log (`tools.routers.predictive.training`) and the
router's refresh grid (`tools.routers.predictive.table`) both call it, so the model is always
served the features it was trained on.

Why these features. A request's TTFT on an LLM engine is its wait in the queue plus its own
prefill under the batch in progress; its end-to-end latency adds the decode of an output length
nobody knows in advance. The queue is what the router has sent and not yet seen return (exact,
router-side), refined by the last scrape's running/waiting split and KV-cache usage (stale by its
age, hence the age and the requests routed since). The backend's speed is not configured: it is
learnt from completions (latency per prompt token, per output token), so the same model serves a
fleet of GPUs it has never seen, and a backend that slows down reads as slower within seconds.
The tier is left out on purpose: engines do not prioritise tiers, so it changes the SLO a
prediction is compared with, never the latency. The prompt enters as the tokens the backend must
prefill: its length less the leading blocks the router believes that backend has cached
(llm-d's approximate prefix index), so prefix reuse shortens the predicted TTFT where it helps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tools.routers.base import Completion, EngineMetrics, RouterView

FEATURES: tuple[str, ...] = (
    "log_prefill_tokens",
    "in_flight",
    "log_in_flight_tokens",
    "log_recent_tokens",
    "log_pending_work",
    "routed_since_scrape",
    "scrape_running",
    "scrape_waiting",
    "scrape_kv_usage",
    "scrape_age_s",
    "log_ttft_ms",
    "log_ttft_per_token",
    "log_tpot_ms",
    "log_e2e_ms",
    "since_heard_s",
)
"""Column order of a feature row (the artifact records it; a mismatch refuses to load)."""
F = {name: i for i, name in enumerate(FEATURES)}
N_FEATURES = len(FEATURES)
MONOTONE_INCREASING = frozenset(
    {
        "log_prefill_tokens",
        "in_flight",
        "log_in_flight_tokens",
        "log_recent_tokens",
        "log_pending_work",
        "routed_since_scrape",
        "scrape_running",
        "scrape_waiting",
        "scrape_kv_usage",
    }
)
"""Features latency can only grow with (the forest is constrained so): more queued work never
predicts a faster answer, so one more request sent always counts against a backend."""
RECENT_TAU_S = 1.0
"""Prompt tokens routed to a backend are counted in `log_recent_tokens` with this decay: the
prefill work most likely still queued or running there."""

PROMPT_TOKEN_OFFSET = 256.0
"""`log_ttft_per_token` divides a TTFT by prompt tokens plus this (a fixed cost per request)."""
MAX_AGE_S = 60.0
"""Ages are capped here: a minute without news is as bad as it gets."""
PRIOR = {
    "log_ttft_ms": math.log(150.0),
    "log_ttft_per_token": math.log(150.0 / (1000.0 + PROMPT_TOKEN_OFFSET)),
    "log_tpot_ms": math.log(25.0),
    "log_e2e_ms": math.log(5000.0),
}
"""Before a backend's first completion: an ordinary A100-class backend (the averages then move
at once, see `FleetTracker.on_complete`)."""


class FleetTracker:
    """Router-side state per backend (see the module docstring). Plain lists: the hot path."""

    __slots__ = (
        "alpha",
        "err",
        "hard_err",
        "heard_s",
        "in_flight_tokens",
        "log_e2e",
        "log_tpot",
        "log_ttft",
        "log_ttft_tok",
        "mean_input",
        "mean_output",
        "n",
        "observed",
        "recent_t",
        "recent_tokens",
        "routed_since_scrape",
        "started_s",
    )

    def __init__(self, n: int, alpha: float = 0.1, start_s: float = 0.0) -> None:
        if n < 1:
            raise ValueError("a fleet needs at least one backend")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must lie in (0, 1]")
        self.n = n
        self.alpha = alpha
        self.in_flight_tokens = [0] * n
        self.recent_tokens = [0.0] * n
        self.recent_t = [start_s] * n
        self.routed_since_scrape = [0] * n
        self.log_ttft = [PRIOR["log_ttft_ms"]] * n
        self.log_ttft_tok = [PRIOR["log_ttft_per_token"]] * n
        self.log_tpot = [PRIOR["log_tpot_ms"]] * n
        self.log_e2e = [PRIOR["log_e2e_ms"]] * n
        self.observed = [0] * n
        """Completions seen per backend (successes and failures)."""
        self.err = [0.0] * n
        """Running share of failed requests (timeouts, errors, rejections)."""
        self.hard_err = [0.0] * n
        """Running share of requests answered with an error or a 429 (not timeouts: an overloaded
        backend times out, a broken one errors): what ejection reads."""
        self.heard_s = [start_s] * n
        """When the backend last completed a request or answered a scrape."""
        self.started_s = start_s
        self.mean_input = 1000.0
        self.mean_output = 200.0

    # -- events ---------------------------------------------------------------------------------
    def recent(self, b: int, now: float) -> float:
        """Prompt tokens routed to b, decayed by `RECENT_TAU_S` to `now`."""
        dt = now - self.recent_t[b]
        return (
            self.recent_tokens[b] * math.exp(-dt / RECENT_TAU_S)
            if dt > 0
            else self.recent_tokens[b]
        )

    def on_route(self, b: int, input_tokens: int, now: float) -> None:
        self.recent_tokens[b] = self.recent(b, now) + input_tokens
        self.recent_t[b] = now
        self.in_flight_tokens[b] += input_tokens
        self.routed_since_scrape[b] += 1
        self.mean_input += 0.01 * (input_tokens - self.mean_input)

    def unroute(self, b: int, input_tokens: int, now: float) -> None:
        """Undo `on_route(b, input_tokens, now)` (the request went elsewhere after all)."""
        self.recent_tokens[b] = max(0.0, self.recent(b, now) - input_tokens)
        self.recent_t[b] = now
        self.in_flight_tokens[b] = max(0, self.in_flight_tokens[b] - input_tokens)
        self.routed_since_scrape[b] = max(0, self.routed_since_scrape[b] - 1)

    def on_complete(self, c: Completion) -> None:
        b = c.backend
        self.in_flight_tokens[b] = max(0, self.in_flight_tokens[b] - c.input_tokens)
        self.heard_s[b] = max(self.heard_s[b], c.finished_at_s)
        # The first completions replace the prior quickly (1/k weights), then a fixed alpha.
        k = self.observed[b] + 1
        self.observed[b] = k
        a = max(self.alpha, 1.0 / k)
        failed = c.status != "ok"
        self.err[b] += a * (float(failed) - self.err[b])
        hard = c.status in ("error", "rejected")
        self.hard_err[b] += a * (float(hard) - self.hard_err[b])
        if c.ttft_ms is not None and c.ttft_ms > 0:
            lt = math.log(c.ttft_ms)
            self.log_ttft[b] += a * (lt - self.log_ttft[b])
            per_tok = lt - math.log(c.input_tokens + PROMPT_TOKEN_OFFSET)
            self.log_ttft_tok[b] += a * (per_tok - self.log_ttft_tok[b])
        elif c.status == "timeout":
            # No token within the router's timeout: the TTFT was at least that long.
            lt = math.log(max(c.e2e_ms, 1.0))
            self.log_ttft[b] += a * (lt - self.log_ttft[b])
            per_tok = lt - math.log(c.input_tokens + PROMPT_TOKEN_OFFSET)
            self.log_ttft_tok[b] += a * (per_tok - self.log_ttft_tok[b])
        if not failed or c.status == "timeout":
            self.log_e2e[b] += a * (math.log(max(c.e2e_ms, 1.0)) - self.log_e2e[b])
        if not failed and c.ttft_ms is not None and c.output_tokens > 1:
            tpot = (c.e2e_ms - c.ttft_ms) / (c.output_tokens - 1)
            if tpot > 0:
                self.log_tpot[b] += a * (math.log(tpot) - self.log_tpot[b])
        if not failed:
            self.mean_output += 0.01 * (c.output_tokens - self.mean_output)

    def on_scrape(self, m: EngineMetrics) -> None:
        self.routed_since_scrape[m.backend] = 0
        self.heard_s[m.backend] = max(self.heard_s[m.backend], m.scraped_at_s)

    # -- features -------------------------------------------------------------------------------
    def row(
        self, b: int, view: RouterView, prefill_tokens: float, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The feature row of a request needing `prefill_tokens` of prefill on backend `b`, as
        the router sees the fleet now (before the request is sent)."""
        x = np.empty(N_FEATURES) if out is None else out
        now = view.now_s
        m = view.last_scrape(b)
        x[0] = math.log1p(max(prefill_tokens, 0.0))
        x[1] = view.in_flight[b]
        x[2] = math.log1p(self.in_flight_tokens[b])
        recent = self.recent(b, now)
        x[3] = math.log1p(recent)
        x[4] = self.log_ttft_tok[b] + math.log(recent + prefill_tokens + PROMPT_TOKEN_OFFSET)
        x[5] = self.routed_since_scrape[b]
        if m is None:
            x[6] = x[7] = x[8] = 0.0
            x[9] = min(MAX_AGE_S, max(0.0, now - self.started_s))
        else:
            x[6] = m.num_requests_running
            x[7] = m.num_requests_waiting
            x[8] = m.kv_cache_usage_perc
            x[9] = min(MAX_AGE_S, max(0.0, now - m.scraped_at_s))
        x[10] = self.log_ttft[b]
        x[11] = self.log_ttft_tok[b]
        x[12] = self.log_tpot[b]
        x[13] = self.log_e2e[b]
        x[14] = min(MAX_AGE_S, max(0.0, now - self.heard_s[b]))
        return x


def vary(
    base: np.ndarray, prefill_tokens: Sequence[float], deltas: Sequence[int], mean_input: float
) -> np.ndarray:
    """Rows of `base` for every (prefill tokens, extra requests in flight) pair, shape
    (len(prefill_tokens) * len(deltas), N_FEATURES), tokens varying slowest.

    `deltas` are requests sent (positive) or completed (negative) since `base` was taken; each
    moves the in-flight count, the in-flight prompt tokens by the mean prompt, and (if sent) the
    requests routed since the scrape: what `FleetTracker.row` would read after them.
    """
    raw = np.maximum(np.asarray(prefill_tokens, dtype=float), 0.0)
    d = np.asarray(deltas, dtype=float)
    nt, nd = raw.size, d.size
    X = np.repeat(base[None, :], nt * nd, axis=0)
    dd = np.tile(d, nt)
    sent = np.maximum(dd, 0.0)
    tok = np.repeat(raw, nd)
    X[:, 0] = np.log1p(tok)
    X[:, 1] = np.maximum(base[1] + dd, 0.0)
    X[:, 2] = np.log1p(np.maximum(np.expm1(base[2]) + dd * mean_input, 0.0))
    recent = np.expm1(base[3]) + sent * mean_input
    X[:, 3] = np.log1p(recent)
    X[:, 4] = base[11] + np.log(recent + tok + PROMPT_TOKEN_OFFSET)
    X[:, 5] = base[5] + sent
    return X
