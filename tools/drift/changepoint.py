"""Online change-point detection for an operator's metric series: Bayesian online change points.

The detector is Adams and MacKay's (2007) Bayesian online change-point detection: after each row
it holds the posterior probability of every *run length* (rows since the last change), each
segment modelled as Gaussian with unknown mean and variance (a Normal-Gamma prior, so the
predictive of the next value is a Student t), and a constant hazard 1/`expected_run` that a
segment ends at any row.

Two choices make it work on raw values of any scale and from the first rows, with no look-ahead:

* **Empirical prior from the past only.** A new segment's prior is centred on the mean of the
  rows seen so far and scaled by their standard deviation, so the detector needs no
  normalisation of the series (which would look ahead) and no tuning per unit. The warm-up is
  `warmup` rows, short enough for series of 50 rows.
* **Decisions from earlier rows only.** After row t the most probable segment start is
  c = t - r* + 1. A change is reported at row t (`detected_at`) when that start is new, has
  stayed the most probable one for `confirm` rows, and the posterior probability that the
  current segment began within `confirm` rows of c is at least `threshold`. The reported
  location is c, estimated from rows up to t; nothing after t is ever read.

Run lengths whose posterior probability falls below 1e-12 of the largest are pruned, and at most
`max_runs` are kept, so a row costs O(max_runs). The defaults were chosen on synthetic series
with known change points (`benchmarks/bench_changepoints.py --tune`), never on the real
annotated series the benchmark reports on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numba import njit

_LOG_PI = math.log(math.pi)


@dataclass(frozen=True, slots=True)
class ChangePointConfig:
    """Settings of `ChangePointDetector` (rows are samples of the series)."""

    expected_run: float = 3000.0
    threshold: float = 0.999
    confirm: int = 8
    warmup: int = 5
    prior_weight: float = 1.0
    max_runs: int = 500

    def __post_init__(self) -> None:
        if not self.expected_run > 1.0:
            raise ValueError("expected_run must be > 1 row")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must lie in (0, 1)")
        if self.confirm < 1 or self.warmup < 2 or self.max_runs < 10:
            raise ValueError("need confirm >= 1, warmup >= 2 and max_runs >= 10")
        if not self.prior_weight > 0.0:
            raise ValueError("prior_weight must be > 0")


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """One reported change: where the new segment starts and what moved.

    location     first row of the new segment (estimated from rows up to `detected_at`)
    detected_at  the row after which the change was reported
    probability  posterior probability that the current segment began at most `confirm` rows
                 before `location` (and after the previous reported change)
    mean_before  mean of the previous segment (since the last reported change)
    mean_after   mean of the new segment so far
    shift_sigmas (mean_after - mean_before) / standard deviation of the previous segment (of
                 every earlier row when that segment has fewer than 3 rows)
    """

    location: int
    detected_at: int
    probability: float
    mean_before: float
    mean_after: float
    shift_sigmas: float

    @property
    def shift(self) -> float:
        return self.mean_after - self.mean_before


@njit(cache=True)
def _step(v, log_h, log_1mh, mu0, k0, a0, b0, run, log_r, mu, kappa, alpha, beta, n, max_runs):
    """One row of the run-length recursion on the first n entries; returns the new count."""
    best = -np.inf
    total = -np.inf
    for i in range(n):  # predictive of v under each run (Student t), joint with its mass
        nu = 2.0 * alpha[i]
        scale2 = beta[i] * (kappa[i] + 1.0) / (alpha[i] * kappa[i])
        z = (v - mu[i]) ** 2 / (nu * scale2)
        lp = (
            math.lgamma((nu + 1.0) / 2.0)
            - math.lgamma(nu / 2.0)
            - 0.5 * (math.log(nu * scale2) + _LOG_PI)
            - (nu + 1.0) / 2.0 * math.log1p(z)
        )
        j = log_r[i] + lp
        log_r[i] = j + log_1mh
        total = np.logaddexp(total, j)
        # absorb v into the run
        k = kappa[i]
        beta[i] = beta[i] + k * (v - mu[i]) ** 2 / (2.0 * (k + 1.0))
        mu[i] = (k * mu[i] + v) / (k + 1.0)
        kappa[i] = k + 1.0
        alpha[i] = alpha[i] + 0.5
        run[i] += 1
    # the new run (length 0) enters at the front with the prior of now
    for i in range(n, 0, -1):
        run[i] = run[i - 1]
        log_r[i] = log_r[i - 1]
        mu[i] = mu[i - 1]
        kappa[i] = kappa[i - 1]
        alpha[i] = alpha[i - 1]
        beta[i] = beta[i - 1]
    run[0] = 0
    log_r[0] = total + log_h
    mu[0] = mu0
    kappa[0] = k0
    alpha[0] = a0
    beta[0] = b0
    n += 1
    norm = -np.inf
    for i in range(n):
        norm = np.logaddexp(norm, log_r[i])
        if log_r[i] > best:
            best = log_r[i]
    # prune runs below 1e-12 of the most probable, keeping order
    m = 0
    for i in range(n):
        if log_r[i] > best - 27.6:
            run[m] = run[i]
            log_r[m] = log_r[i] - norm
            mu[m] = mu[i]
            kappa[m] = kappa[i]
            alpha[m] = alpha[i]
            beta[m] = beta[i]
            m += 1
    if m > max_runs:  # keep the max_runs most probable, in order
        cut = np.sort(log_r[:m])[m - max_runs]
        k2 = 0
        for i in range(m):
            if log_r[i] >= cut and k2 < max_runs:
                run[k2] = run[i]
                log_r[k2] = log_r[i]
                mu[k2] = mu[i]
                kappa[k2] = kappa[i]
                alpha[k2] = alpha[i]
                beta[k2] = beta[i]
                k2 += 1
        m = k2
        norm = -np.inf
        for i in range(m):
            norm = np.logaddexp(norm, log_r[i])
        for i in range(m):
            log_r[i] -= norm
    return m


class ChangePointDetector:
    """Bayesian online change-point detection over one series, one row at a time."""

    def __init__(self, config: ChangePointConfig | None = None) -> None:
        self.config = config or ChangePointConfig()
        cap = self.config.max_runs + 2
        self.n_seen = 0
        self._values: list[float] = []
        self._sumsq_dev = 0.0  # Welford: sum of squared deviations of all rows seen
        self._mean = 0.0
        # per run: run length and Normal-Gamma posterior (mu, kappa, alpha, beta)
        self._run = np.zeros(cap, dtype=np.int64)
        self._log_r = np.zeros(cap)
        self._mu = np.zeros(cap)
        self._kappa = np.ones(cap)
        self._alpha = np.ones(cap)
        self._beta = np.ones(cap)
        self._n = 0
        self._candidate = -1
        self._streak = 0
        self._last_start = 0
        self.changes: list[ChangePoint] = []

    # --------------------------------------------------------------------- prior
    def _prior(self) -> tuple[float, float, float, float]:
        n = self.n_seen
        mu0 = self._mean
        var = self._sumsq_dev / n if n > 1 else 0.0
        floor = (1e-9 * (1.0 + abs(mu0))) ** 2
        alpha0 = 1.0
        return mu0, self.config.prior_weight, alpha0, alpha0 * max(var, floor)

    def _welford(self, x: float) -> None:
        self.n_seen += 1
        delta = x - self._mean
        self._mean += delta / self.n_seen
        self._sumsq_dev += delta * (x - self._mean)

    # -------------------------------------------------------------------- update
    def update(self, x: float) -> ChangePoint | None:
        """Feed one row; the change reported after it, if any."""
        v = float(x)
        if not math.isfinite(v):
            raise ValueError(f"value must be a finite number, got {x!r}")
        t = self.n_seen
        self._values.append(v)
        cfg = self.config
        if t < cfg.warmup:
            self._welford(v)
            if t == cfg.warmup - 1:  # one run holding the warm-up rows
                mu0, k0, a0, b0 = self._prior()
                k = k0
                mu = mu0
                beta = b0
                for w in self._values:
                    beta += k * (w - mu) ** 2 / (2.0 * (k + 1.0))
                    mu = (k * mu + w) / (k + 1.0)
                    k += 1.0
                self._run[0] = len(self._values)
                self._log_r[0] = 0.0
                self._mu[0], self._kappa[0] = mu, k
                self._alpha[0], self._beta[0] = a0 + 0.5 * len(self._values), beta
                self._n = 1
            return None
        self._welford(v)
        mu0, k0, a0, b0 = self._prior()
        self._n = _step(
            v,
            -math.log(cfg.expected_run),
            math.log1p(-1.0 / cfg.expected_run),
            mu0,
            k0,
            a0,
            b0,
            self._run,
            self._log_r,
            self._mu,
            self._kappa,
            self._alpha,
            self._beta,
            self._n,
            cfg.max_runs,
        )
        return self._decide(t)

    def _decide(self, t: int) -> ChangePoint | None:
        """Report a change after row t when the most probable segment start is new, stable
        for `confirm` rows and probable enough."""
        cfg = self.config
        n = self._n
        r_star = int(self._run[int(np.argmax(self._log_r[:n]))])
        start = t - r_star + 1
        if start <= self._last_start or start > t:
            self._candidate, self._streak = -1, 0
            return None
        if abs(start - self._candidate) <= 1:
            self._streak += 1
        else:
            self._candidate, self._streak = start, 1
        if self._streak < cfg.confirm:
            return None
        # began within `confirm` rows before the candidate start, or later (and after the
        # last reported change): the exact row of a change is uncertain by a few rows
        earliest = max(start - cfg.confirm, self._last_start + 2)
        recent = self._run[:n] <= t - earliest + 1
        prob = float(np.exp(np.logaddexp.reduce(self._log_r[:n][recent])))
        if prob < cfg.threshold:
            return None
        before = np.asarray(self._values[self._last_start : start])
        after = np.asarray(self._values[start : t + 1])
        # the previous segment's spread, or every earlier row's if it is too short to tell
        ref = before if before.size >= 3 else np.asarray(self._values[:start])
        sd = float(ref.std())
        shift = float(after.mean() - before.mean())
        floor = 1e-12 * (1.0 + abs(float(before.mean())))
        change = ChangePoint(
            location=start,
            detected_at=t,
            probability=prob,
            mean_before=float(before.mean()),
            mean_after=float(after.mean()),
            shift_sigmas=shift / max(sd, floor),
        )
        self.changes.append(change)
        self._last_start = start
        self._candidate, self._streak = -1, 0
        return change

    def detect(self, values: Iterable[float] | np.ndarray) -> list[ChangePoint]:
        """Feed a series row by row; the changes reported along the way."""
        out = []
        for v in np.asarray(values, dtype=np.float64).tolist():
            c = self.update(v)
            if c is not None:
                out.append(c)
        return out


def merge_locations(per_column: Iterable[Iterable[int]], min_gap: int = 5) -> list[int]:
    """Change locations of several columns as one sorted list, keeping the earliest of any
    that lie within `min_gap` rows of the last one kept (one change seen in two columns is one
    change)."""
    out: list[int] = []
    for c in sorted(c for col in per_column for c in col):
        if not out or c - out[-1] > min_gap:
            out.append(c)
    return out
