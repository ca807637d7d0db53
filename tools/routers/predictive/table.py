"""The refresh grid: the latency model evaluated ahead of time, so a request only reads numbers.

Between two refreshes, what changes for a backend is the request (its prompt tokens) and how many
requests the router has sent there or seen return since the refresh. So at each refresh (a new
scrape, a fixed interval, or an in-flight count that left the grid) the model is evaluated once
per backend over a grid of prefill tokens (log-spaced) x in-flight changes (-48 .. +64, finest
near zero), in one batched forest walk; a request then interpolates bilinearly in log tokens and
in-flight change. Probabilities of meeting an SLO are tabulated per (TTFT SLO, end-to-end SLO)
pair the first time the pair is asked for after a refresh (a fleet has a handful of tiers).

Everything the hot path reads is a Python list: indexing a list is several times faster than
indexing a numpy array element by element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tools.routers.base import RouterView
from tools.routers.predictive.features import FleetTracker, vary
from tools.routers.predictive.model import LatencyModel

TOKEN_GRID = np.exp(np.linspace(math.log(16.0), math.log(32768.0), 16))
"""Prefill tokens at which the model is evaluated (a factor 1.66 apart)."""
LOG_T0 = math.log(float(TOKEN_GRID[0]))
INV_STEP = (len(TOKEN_GRID) - 1) / (math.log(float(TOKEN_GRID[-1])) - LOG_T0)
NT = len(TOKEN_GRID)
DELTAS = (-48, -24, -12, -6, -3, -1, 0, 1, 2, 3, 4, 6, 8, 11, 15, 20, 27, 36, 48, 64)
"""In-flight changes since the refresh at which the model is evaluated: every step near zero,
where one request more or less matters, coarser further out."""
D_MIN, D_MAX = DELTAS[0], DELTAS[-1]
ND = len(DELTAS)


def _delta_positions() -> list[tuple[int, float]]:
    out = []
    for d in range(D_MIN, D_MAX + 1):
        j = max(k for k in range(ND - 1) if DELTAS[k] <= d)
        out.append((j, (d - DELTAS[j]) / (DELTAS[j + 1] - DELTAS[j])))
    return out


DELTA_POSITION = _delta_positions()
"""For each in-flight change d (index d - D_MIN): (grid index j, weight of j + 1)."""


def token_position(tokens: float) -> tuple[int, float]:
    """(grid index i, weight of i + 1) for linear interpolation in log tokens, clamped."""
    pos = (math.log(tokens if tokens > 1.0 else 1.0) - LOG_T0) * INV_STEP
    if pos <= 0.0:
        return 0, 0.0
    if pos >= NT - 1:
        return NT - 2, 1.0
    i = int(pos)
    return i, pos - i


class PredictionTable:
    """Per backend: the model's (mu, sd) of log TTFT and log e2e over the grid, and P(meet SLO)
    tables per SLO pair; `base_in_flight` is each backend's in-flight count at the refresh."""

    __slots__ = ("base_in_flight", "fail", "me", "model", "mt", "n", "p", "se", "st")

    def __init__(self, model: LatencyModel, n: int) -> None:
        self.model = model
        self.n = n
        self.base_in_flight = [0] * n
        self.mt: list[np.ndarray] = []
        self.st: list[np.ndarray] = []
        self.me: list[np.ndarray] = []
        self.se: list[np.ndarray] = []
        self.fail = [0.0] * n
        self.p: dict[tuple[float, float], list[list[float]]] = {}

    def refresh(
        self,
        tracker: FleetTracker,
        view: RouterView,
        shift_ttft: Sequence[float],
        shift_e2e: Sequence[float],
        fail: Sequence[float],
    ) -> None:
        """Evaluate the model over the grid for every backend; `shift_*` are added to the
        log-latency means (online residual correction and the forecast prior), `fail` is each
        backend's probability of failing a request."""
        n = self.n
        rows = [
            vary(tracker.row(b, view, 0.0), TOKEN_GRID, DELTAS, tracker.mean_input)
            for b in range(n)
        ]
        mt, st, me, se = self.model.predict(np.vstack(rows))
        k = NT * ND
        self.mt = [mt[b * k : (b + 1) * k] + shift_ttft[b] for b in range(n)]
        self.st = [st[b * k : (b + 1) * k] for b in range(n)]
        self.me = [me[b * k : (b + 1) * k] + shift_e2e[b] for b in range(n)]
        self.se = [se[b * k : (b + 1) * k] for b in range(n)]
        self.fail = [min(max(f, 0.0), 1.0) for f in fail]
        self.base_in_flight = list(view.in_flight)
        self.p = {}

    def p_table(self, ttft_slo_ms: float, e2e_slo_ms: float) -> list[list[float]]:
        """Per backend, P(meet both SLOs and not fail) over the grid (flat, tokens slowest)."""
        key = (ttft_slo_ms, e2e_slo_ms)
        got = self.p.get(key)
        if got is None:
            m = self.model
            got = [
                (
                    m.p_meet(self.mt[b], self.st[b], self.me[b], self.se[b], *key)
                    * (1.0 - self.fail[b])
                ).tolist()
                for b in range(self.n)
            ]
            self.p[key] = got
        return got

    def moments(self, b: int, tokens: float, delta: int) -> tuple[float, float, float, float]:
        """(mu_ttft, sd_ttft, mu_e2e, sd_e2e) for backend b, interpolated (decisions, logs)."""
        i, f = token_position(tokens)
        j, g = DELTA_POSITION[min(max(delta, D_MIN), D_MAX) - D_MIN]
        a, c = i * ND + j, (i + 1) * ND + j
        out = []
        for arr in (self.mt[b], self.st[b], self.me[b], self.se[b]):
            lo = arr[a] * (1.0 - g) + arr[a + 1] * g
            hi = arr[c] * (1.0 - g) + arr[c + 1] * g
            out.append(float(lo * (1.0 - f) + hi * f))
        return out[0], out[1], out[2], out[3]
