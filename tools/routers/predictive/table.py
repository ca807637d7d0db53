"""The refresh grid: the latency model evaluated ahead of time, so a request only reads numbers.

Between two refreshes, what changes for a backend is the request (its prompt tokens) and how many
requests the router has sent there or seen return since the refresh. So at each refresh of a
backend (its new scrape, or a fixed interval checked as completions arrive: never on the
request path) the model is evaluated over a grid of prefill tokens (log-spaced) x in-flight
changes (-48 .. +64, finest near zero), in one batched forest walk; a request then interpolates
bilinearly in log tokens and in-flight change. Probabilities of meeting an SLO are tabulated
per (TTFT SLO, end-to-end SLO) pair the first time the pair is asked for, and kept up to date
at every refresh after that (a fleet has a handful of tiers).

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


def interpolate(row: Sequence[float], tokens: float, delta: int) -> float:
    """A flat grid's value at (tokens, in-flight change), bilinear, clamped to the grid."""
    i, f = token_position(tokens)
    j, g = DELTA_POSITION[min(max(delta, D_MIN), D_MAX) - D_MIN]
    a = i * ND + j
    c = a + ND
    lo = row[a] + (row[a + 1] - row[a]) * g
    hi = row[c] + (row[c + 1] - row[c]) * g
    return lo + (hi - lo) * f


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

    __slots__ = (
        "base_in_flight",
        "fail",
        "me",
        "me_raw",
        "model",
        "mt",
        "mt_raw",
        "n",
        "p",
        "quantiles",
        "se",
        "snap",
        "st",
    )

    def __init__(self, model: LatencyModel, n: int) -> None:
        self.model = model
        self.n = n
        k = NT * ND
        self.base_in_flight = [0] * n
        self.mt: list[np.ndarray] = [np.zeros(k) for _ in range(n)]
        self.st: list[np.ndarray] = [np.ones(k) for _ in range(n)]
        self.me: list[np.ndarray] = [np.zeros(k) for _ in range(n)]
        self.se: list[np.ndarray] = [np.ones(k) for _ in range(n)]
        self.mt_raw: list[list[float]] = [[0.0] * k for _ in range(n)]
        """Means before the shifts, as lists: what a decision records for its correction."""
        self.me_raw: list[list[float]] = [[0.0] * k for _ in range(n)]
        self.fail = [0.0] * n
        self.p: dict[tuple[float, float], list[list[float]]] = {}
        self.snap: GridSnapshot | None = None
        """The grids since the last refresh, for decisions (`snapshot`); None: none yet."""
        self.quantiles = tuple(
            tuple(part.zq(q) for q in (0.1, 0.5, 0.9)) for part in (model.ttft, model.e2e)
        )
        """The calibrated residual quantiles of the 80% intervals and the median (constants of
        the model, each an interpolation: computed once, not per decision)."""

    def refresh(
        self,
        backends: Sequence[int],
        tracker: FleetTracker,
        view: RouterView,
        shift_ttft: Sequence[float],
        shift_e2e: Sequence[float],
        fail: Sequence[float],
    ) -> None:
        """Evaluate the model over the grid for `backends` (one batched walk); `shift_*` are
        added to the log-latency means (online residual correction and the forecast prior),
        `fail` is each backend's probability of failing a request. The P tables of every SLO
        pair seen so far are brought up to date at once, so requests never pay for it."""
        if not backends:
            return
        rows = [
            vary(tracker.row(b, view, 0.0), TOKEN_GRID, DELTAS, tracker.mean_input)
            for b in backends
        ]
        mt, st, me, se = self.model.predict(np.vstack(rows), block=NT * ND)
        k = NT * ND
        for i, b in enumerate(backends):
            sl = slice(i * k, (i + 1) * k)
            self.mt[b] = mt[sl] + shift_ttft[b]
            self.st[b] = st[sl]
            self.me[b] = me[sl] + shift_e2e[b]
            self.se[b] = se[sl]
            self.mt_raw[b] = mt[sl].tolist()
            self.me_raw[b] = me[sl].tolist()
            self.fail[b] = min(max(fail[b], 0.0), 1.0)
            self.base_in_flight[b] = view.in_flight[b]
            for key, tabs in self.p.items():
                tabs[b] = self._p(b, key)
        self.snap = GridSnapshot(
            self.mt[:], self.st[:], self.me[:], self.se[:], self.base_in_flight[:]
        )  # here, off the request path, for the decisions made until the next refresh

    def _p(self, b: int, key: tuple[float, float]) -> list[float]:
        p = self.model.p_meet(self.mt[b], self.st[b], self.me[b], self.se[b], *key)
        return (p * (1.0 - self.fail[b])).tolist()

    def p_table(self, ttft_slo_ms: float, e2e_slo_ms: float) -> list[list[float]]:
        """Per backend, P(meet both SLOs and not fail) over the grid (flat, tokens slowest)."""
        key = (ttft_slo_ms, e2e_slo_ms)
        got = self.p.get(key)
        if got is None:
            got = [self._p(b, key) for b in range(self.n)]
            if len(self.p) >= 64:  # requests with ever-new SLOs: keep the table bounded
                self.p.pop(next(iter(self.p)))
            self.p[key] = got
        return got

    def moments(self, b: int, tokens: float, delta: int) -> tuple[float, float, float, float]:
        """(mu_ttft, sd_ttft, mu_e2e, sd_e2e) for backend b, interpolated (decisions, logs)."""
        return self.snapshot().moments(b, tokens, delta)

    def snapshot(self) -> GridSnapshot:
        """The grids as they are now, for a decision whose predictions are computed when it is
        read: list copies (a refresh replaces arrays, never edits them) taken at each refresh."""
        snap = self.snap
        if snap is None:
            snap = GridSnapshot(
                self.mt[:], self.st[:], self.me[:], self.se[:], self.base_in_flight[:]
            )
            self.snap = snap
        return snap


class GridSnapshot:
    """`PredictionTable.snapshot`: per backend, the grid arrays and in-flight count at refresh."""

    __slots__ = ("base_in_flight", "me", "mt", "rows", "se", "st")

    def __init__(
        self,
        mt: list[np.ndarray],
        st: list[np.ndarray],
        me: list[np.ndarray],
        se: list[np.ndarray],
        base_in_flight: list[int],
    ) -> None:
        self.mt, self.st, self.me, self.se = mt, st, me, se
        self.base_in_flight = base_in_flight
        self.rows: list[tuple[list[float], ...] | None] = [None] * len(mt)
        """(mt, st, me, se) of each backend as lists, made on first use: a decision reads 16
        cells, which costs less from lists than from numpy scalars."""

    def moments(self, b: int, tokens: float, delta: int) -> tuple[float, float, float, float]:
        """(mu_ttft, sd_ttft, mu_e2e, sd_e2e) for backend b, interpolated."""
        i, f = token_position(tokens)
        j, g = DELTA_POSITION[min(max(delta, D_MIN), D_MAX) - D_MIN]
        a, c = i * ND + j, (i + 1) * ND + j
        rows = self.rows[b]
        if rows is None:
            rows = self.rows[b] = tuple(x[b].tolist() for x in (self.mt, self.st, self.me, self.se))
        out = []
        for arr in rows:
            lo = arr[a] * (1.0 - g) + arr[a + 1] * g
            hi = arr[c] * (1.0 - g) + arr[c + 1] * g
            out.append(lo * (1.0 - f) + hi * f)
        return out[0], out[1], out[2], out[3]
