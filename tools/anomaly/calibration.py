"""Turning raw outlier scores into rarities that mean the same thing on every series.

`TailCalibrator` answers "how often did the training data score at least this high?": a conformal
empirical tail probability inside the training range and, past its upper `tail_quantile`, an
exponential tail fitted to the exceedances (peaks over threshold with a zero shape parameter),
so points stranger than anything in training still get ordered by how much stranger they are.
`AlertGate` turns a stream of rarities into alerts: it speaks only at a new peak, so one incident
raises one alert rather than one per tick.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


class TailCalibrator:
    """p(score) = P(training score >= score), with an exponential tail past the upper quantile."""

    def __init__(self, train_scores: np.ndarray, tail_quantile: float = 0.98) -> None:
        tr = np.sort(np.asarray(train_scores, dtype=np.float64))
        if tr.size == 0 or not np.all(np.isfinite(tr)):
            raise ValueError("calibration needs a non-empty set of finite training scores")
        if not 0.5 <= tail_quantile < 1.0:
            raise ValueError("tail_quantile must lie in [0.5, 1)")
        self._sorted = tr
        n = tr.size
        k = min(int(tail_quantile * n), n - 1)
        self.u = float(tr[k])
        above = tr[tr > self.u]
        spread = float(tr[-1] - tr[0])
        floor = max(1e-9, 1e-3 * spread)
        self.beta = max(float((above - self.u).mean()) if above.size else 0.0, floor)
        self._p_u = (1.0 + above.size) / (n + 1.0)

    @property
    def n(self) -> int:
        return int(self._sorted.size)

    def p_value(self, score: float) -> float:
        """Tail probability of one score (never 0: at least 1/(n+1) times the tail factor)."""
        if score > self.u:
            return self._p_u * math.exp(-(score - self.u) / self.beta)
        at_least = self.n - int(np.searchsorted(self._sorted, score, side="left"))
        return (1.0 + at_least) / (self.n + 1.0)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        at_least = self.n - np.searchsorted(self._sorted, s, side="left")
        p = (1.0 + at_least) / (self.n + 1.0)
        tail = s > self.u
        p[tail] = self._p_u * np.exp(-(s[tail] - self.u) / self.beta)
        return p


def surprise_of(p: float) -> float:
    """-log10 p, the rarity in decimal orders of magnitude (p floored at 1e-300)."""
    return -math.log10(max(p, 1e-300))


def alert_strength(surprise: float) -> float:
    """A [0, 1] alert level, 1 - p ** 0.1: still ordered for p down to ~1e-150, where 1 - p
    itself stopped changing at double precision long before."""
    return 1.0 - 10.0 ** (-surprise / 10.0)


class AlertGate:
    """Speak only at a new peak: a rarity above every rarity of the last `memory` ticks.

    `margin` (decimal orders of magnitude) asks a later peak to be that much rarer before it
    alerts again, so a sustained anomaly that wobbles does not re-alert at each wobble.
    `memory=0` turns the gate off: every tick reports its own strength.
    """

    def __init__(self, memory: int = 100, margin: float = 0.0) -> None:
        if memory < 0:
            raise ValueError("memory must be >= 0 ticks")
        self.memory = memory
        self.margin = margin
        self._tick = 0
        # (tick, surprise) pairs with decreasing surprise: the running maximum of the last
        # `memory` ticks is at the front (a monotonic queue, O(1) amortised per tick).
        self._peaks: deque[tuple[int, float]] = deque()

    def update(self, surprise: float) -> float:
        """The alert strength for this tick: 0 unless `surprise` is a new peak."""
        peaks = self._peaks
        while peaks and peaks[0][0] < self._tick - self.memory:
            peaks.popleft()
        fire = surprise > 0.0 and (not peaks or surprise > peaks[0][1] + self.margin)
        if self.memory > 0:
            while peaks and peaks[-1][1] <= surprise:
                peaks.pop()
            peaks.append((self._tick, surprise))
        self._tick += 1
        return alert_strength(surprise) if fire else 0.0
