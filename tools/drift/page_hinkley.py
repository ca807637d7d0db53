"""Page-Hinkley change detection: river-compatible, vectorised in batch, self-calibrating.

`PageHinkley` with its default parameters reproduces ``river.drift.PageHinkley`` (river 0.26):
a running mean since the last reset, two faded cumulative sums of deviations from it
(``alpha`` is the forgetting factor, ``delta`` the tolerated drift per sample), a two-sided test
against ``threshold``, no test before ``min_instances`` samples, and a *lazy* reset: after a
detection the state is kept until the next sample arrives, which starts a fresh segment.

Why a batch path: monitoring replays telemetry in arrays, and a Python call per sample costs about
0.5 µs. `detect` works segment by segment: it evaluates the recurrences over a chunk with numpy
(``cumsum`` for the running mean, ``scipy.signal.lfilter`` for the faded sums, ``ufunc.accumulate``
for the running minimum, after screening blocks with a cheap exact bound), stops at the first
detection and restarts after it. `update` and `detect` perform the same floating-point
operations in the same order (the running mean is ``sum / n``; the faded sums are
``f -/+ delta * g`` with ``f = alpha * f + dev`` and ``g = alpha * g + 1``, which ``lfilter``
evaluates exactly as the scalar code does), so they give identical detections and states. River
computes the same quantities in another order (Welford's mean, one sum per side): the results
agree to rounding, and the detections agree on river's reference streams (tested).

Beyond river: ``delta="auto"`` and/or ``threshold="auto"`` (or `PageHinkley.calibrated`) set them
per segment from the stream's own noise level: ``delta = delta_sigmas * sigma`` and
``threshold = threshold_sigmas * sigma``, where ``sigma`` is a robust scale (`robust_sigma`) of the
segment's first ``warmup`` samples; samples are then clipped to the warm-up median
± ``clip_sigmas * sigma`` so that a lone outlier cannot raise an alarm. With the defaults this is a
CUSUM with reference value k = 0.3 sigma and decision interval h = 25 sigma: stationary noise of
any scale practically never alarms (one two-sided alarm in 10 x 100,000 normal samples), and a
3-sigma mean shift is caught after about h / (3 - k) ≈ 10 samples. The defaults were chosen
once, on the tuning seeds of ``benchmarks/bench_drift.py`` (which reports on other seeds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np
from scipy.signal import lfilter

Mode = Literal["up", "down", "both"]
AUTO = "auto"
_MODES = ("up", "down", "both")

# Consistency constant of the median absolute deviation for a normal distribution.
MAD_TO_SIGMA = 1.482602218505602
# Values beyond this magnitude would overflow the running sums; they are rejected.
MAX_ABS_VALUE = 1e100

_CHUNK_MIN = 256
_CHUNK_MAX = 16_384
_G_CACHE_MAX = 1 << 17
_BLOCK = 64
_SCREEN_MIN = 4096  # below this, screening costs more than the exact scan it saves


try:  # lfilter's C core: same arithmetic, without ~3 µs of argument checks per call
    from scipy.signal._sigtools import _linear_filter as _c_linear_filter
except ImportError:  # pragma: no cover - scipy moved it; the public function still works
    _c_linear_filter = None


def _faded_sum(b: np.ndarray, a: np.ndarray, u: np.ndarray, start: float) -> np.ndarray:
    """y[i] = alpha * y[i-1] + u[i] with y[-1] * alpha = ``start``, evaluated in C."""
    global _c_linear_filter
    zi = np.array([start])
    if _c_linear_filter is not None:
        try:
            return _c_linear_filter(b, a, u, -1, zi)[0]
        except TypeError:  # pragma: no cover - private signature changed
            _c_linear_filter = None
    return lfilter(b, a, u, zi=zi)[0]


_TABLES: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def _position_tables(alpha: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shared, read-only tables of segment positions 1..N and faded counts g for ``alpha``.

    g depends only on the position, so every detector with the same alpha can share it; it is
    extended by continuing the same recurrence, so its floats never change.
    """
    counts, g = _TABLES.get(alpha, (np.empty(0), np.empty(0)))
    if counts.size >= size:
        return counts, g
    new_size = min(max(size, 2 * counts.size, 4096), _G_CACHE_MAX)
    new_counts = np.arange(1, new_size + 1, dtype=float)
    if alpha == 1.0:
        new_g = new_counts
    else:
        start = alpha * float(g[-1]) if g.size else 0.0
        tail = _faded_sum(
            np.array([1.0]), np.array([1.0, -alpha]), np.ones(new_size - g.size), start
        )
        new_g = np.concatenate([g, tail])
    new_counts.flags.writeable = False
    new_g.flags.writeable = False
    _TABLES[alpha] = (new_counts, new_g)
    return new_counts, new_g


def robust_sigma(values: Iterable[float] | np.ndarray) -> float:
    """Scale of ``values`` that a few outliers cannot inflate.

    1.4826 * MAD (median absolute deviation), which equals the standard deviation for normal
    data. When more than half of the values are identical (MAD = 0, typical of discrete or
    0/1 streams) the plain standard deviation is used instead; 0.0 only for a constant input.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("robust_sigma needs a non-empty 1-D sequence")
    if not np.all(np.isfinite(x)):
        raise ValueError("robust_sigma got a NaN or infinite value")
    med = np.median(x)
    mad = float(np.median(np.abs(x - med)))
    if mad > 0.0:
        return MAD_TO_SIGMA * mad
    return float(np.std(x))


def _check_value(x: float, where: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a real number, got {x!r}") from None
    if not math.isfinite(v) or abs(v) > MAX_ABS_VALUE:
        raise ValueError(f"{where}: value {v!r} is not finite or beyond ±{MAX_ABS_VALUE:g}")
    return v


class PageHinkley:
    """Page-Hinkley test for a change in the mean of a stream (see the module docstring).

    Parameters
    ----------
    min_instances
        No detection before this many samples since the last reset (river's semantics).
    delta
        Magnitude of change tolerated per sample, or ``"auto"`` (``delta_sigmas * sigma``).
    threshold
        Decision threshold (lambda), or ``"auto"`` (``threshold_sigmas * sigma``).
    alpha
        Forgetting factor of the cumulative sums (the mean itself is not faded, as in river).
    mode
        ``"up"`` detects increases, ``"down"`` decreases, ``"both"`` either.
    warmup
        Auto mode only: samples per segment used to estimate sigma; no detection before
        ``max(min_instances, warmup)`` samples of a segment.
    delta_sigmas, threshold_sigmas
        Auto mode only: delta and threshold in units of the estimated sigma.
    min_sigma
        Auto mode only: lower bound on sigma, e.g. for 0/1 streams whose warm-up may be constant.
    clip_sigmas
        Auto mode only: clip samples to the warm-up median ± ``clip_sigmas * sigma``
        (None: no clipping). A level shift moves the bulk of the samples and still counts fully.
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float | Literal["auto"] = 0.005,
        threshold: float | Literal["auto"] = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Mode = "both",
        *,
        warmup: int = 300,
        delta_sigmas: float = 0.3,
        threshold_sigmas: float = 25.0,
        min_sigma: float = 0.0,
        clip_sigmas: float | None = 4.0,
    ) -> None:
        if isinstance(min_instances, bool) or not isinstance(min_instances, int):
            raise ValueError("min_instances must be an int")
        if min_instances < 1:
            raise ValueError("min_instances must be >= 1")
        if mode not in _MODES:
            raise ValueError(f"Invalid mode {mode!r}; valid: {list(_MODES)}")
        if not (isinstance(alpha, int | float) and 0.0 < alpha <= 1.0):
            raise ValueError("alpha must be in (0, 1]")
        if delta != AUTO and not (
            isinstance(delta, int | float) and math.isfinite(delta) and delta >= 0
        ):
            raise ValueError("delta must be a finite number >= 0 or 'auto'")
        if threshold != AUTO and not (
            isinstance(threshold, int | float) and math.isfinite(threshold) and threshold > 0
        ):
            raise ValueError("threshold must be a finite number > 0 or 'auto'")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 2:
            raise ValueError("warmup must be an int >= 2")
        for name, value, positive in (
            ("delta_sigmas", delta_sigmas, False),
            ("threshold_sigmas", threshold_sigmas, True),
            ("min_sigma", min_sigma, False),
        ):
            ok = isinstance(value, int | float) and math.isfinite(value) and value >= 0
            if not ok or (positive and value == 0):
                raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0")
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = float(alpha)
        self.mode: Mode = mode
        self.warmup = warmup
        self.delta_sigmas = float(delta_sigmas)
        self.threshold_sigmas = float(threshold_sigmas)
        self.min_sigma = float(min_sigma)
        if clip_sigmas is not None and not (
            isinstance(clip_sigmas, int | float) and math.isfinite(clip_sigmas) and clip_sigmas > 0
        ):
            raise ValueError("clip_sigmas must be a finite number > 0 or None")
        self.clip_sigmas = None if clip_sigmas is None else float(clip_sigmas)

        self._auto = delta == AUTO or threshold == AUTO
        self._n_min = max(min_instances, warmup) if self._auto else min_instances
        self._up = mode in ("up", "both")
        self._down = mode in ("down", "both")
        self._b = np.array([1.0])
        self._a = np.array([1.0, -self.alpha])
        self._g_cache = np.empty(0)
        self._counts_cache = np.empty(0)
        self._rows = 2 if mode == "both" else 1
        self._work = np.empty((2 + self._rows, 0))
        self._chunk = 1024
        self.n_detections = 0
        self._reset()

    @classmethod
    def calibrated(
        cls, mode: Mode = "both", alpha: float = 1.0, **kwargs: float | int
    ) -> PageHinkley:
        """A detector whose delta and threshold both come from each segment's noise level.

        ``alpha`` defaults to 1 (no fading) here: with fading, the drift term -delta * g of the
        sums saturates at -delta / (1 - alpha) while their noise keeps a standard deviation of
        sigma / sqrt(1 - alpha**2) (70 sigma at alpha = 0.9999), so after about 1 / (1 - alpha)
        samples any fixed threshold is crossed by noise alone. That is why river's defaults keep
        alarming on long stationary streams.
        """
        return cls(delta=AUTO, threshold=AUTO, alpha=alpha, mode=mode, **kwargs)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- state
    def _reset(self) -> None:
        self._detected = False
        self._n = 0
        self._sum = 0.0
        self._f = 0.0  # faded sum of deviations
        self._g = 0.0  # faded count: sum of alpha**k, so that S = f -/+ delta * g
        self._min_inc = math.inf
        self._max_dec = -1.0  # river's initial value; inert since the first deviation is 0
        self._buf: list[float] = []
        self._clip: float | None = None
        if self._auto:
            self._origin = 0.0
            self._sigma: float | None = None
            self._delta_eff: float | None = None
            self._thr_eff: float | None = None
        else:
            self._origin = 0.0
            self._sigma = None
            self._delta_eff = float(self.delta)  # type: ignore[arg-type]
            self._thr_eff = float(self.threshold)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget everything seen so far (detections count included)."""
        self._reset()
        self.n_detections = 0

    @property
    def drift_detected(self) -> bool:
        """Whether the last sample raised a detection."""
        return self._detected

    @property
    def n_segment(self) -> int:
        """Samples seen since the last reset (including buffered warm-up samples)."""
        return self._n + len(self._buf)

    @property
    def sigma_(self) -> float | None:
        """Noise scale estimated for the current segment (auto mode, after warm-up)."""
        return self._sigma

    @property
    def delta_(self) -> float | None:
        """Delta in force for the current segment (None while an auto detector warms up)."""
        return self._delta_eff

    @property
    def threshold_(self) -> float | None:
        """Threshold in force for the current segment (None while an auto detector warms up)."""
        return self._thr_eff

    def _calibrate(self, warm: np.ndarray) -> None:
        sigma = max(robust_sigma(warm), self.min_sigma)
        # Shifting by the warm-up median changes no statistic mathematically, but keeps the
        # running sums small: a constant stream then gives exact zeros, not rounding drift.
        origin = float(np.median(warm))
        floor = 1e-12 * max(1.0, abs(origin))
        sigma = max(sigma, floor)
        self._sigma = sigma
        self._origin = origin
        self._clip = None if self.clip_sigmas is None else self.clip_sigmas * sigma
        self._delta_eff = (
            self.delta_sigmas * sigma if self.delta == AUTO else float(self.delta)  # type: ignore[arg-type]
        )
        self._thr_eff = (
            self.threshold_sigmas * sigma if self.threshold == AUTO else float(self.threshold)  # type: ignore[arg-type]
        )

    def _shift(self, v: float) -> float:
        x = v - self._origin
        c = self._clip
        if c is not None:
            x = min(max(x, -c), c)
        return x

    def _shift_array(self, v: np.ndarray) -> np.ndarray:
        if self._origin != 0.0:
            v = v - self._origin
        if self._clip is not None:
            v = np.clip(v, -self._clip, self._clip)
        return v

    # ------------------------------------------------------------ streaming
    def _step(self, x: float) -> bool:
        """One sample of the recurrence (``x`` already shifted by the origin)."""
        self._n += 1
        self._sum += x
        dev = x - self._sum / self._n
        self._f = self.alpha * self._f + dev
        self._g = self.alpha * self._g + 1.0
        delta = self._delta_eff
        thr = self._thr_eff
        assert delta is not None and thr is not None
        test_inc = test_dec = -math.inf
        if self._up:
            s_inc = self._f - delta * self._g
            if s_inc < self._min_inc:
                self._min_inc = s_inc
            test_inc = s_inc - self._min_inc
        if self._down:
            s_dec = self._f + delta * self._g
            if s_dec > self._max_dec:
                self._max_dec = s_dec
            test_dec = self._max_dec - s_dec
        return self._n >= self._n_min and (test_inc > thr or test_dec > thr)

    def update(self, x: float) -> bool:
        """Feed one sample; True when a change is detected at this sample."""
        v = _check_value(x, "PageHinkley.update")
        if self._detected:
            self._reset()
        if self._delta_eff is None:  # auto mode, still warming up
            self._buf.append(v)
            if len(self._buf) < self.warmup:
                return False
            warm = np.asarray(self._buf, dtype=float)
            self._buf = []
            self._calibrate(warm)
            detected = False
            for w in warm:
                detected = self._step(self._shift(float(w)))
        else:
            detected = self._step(self._shift(v))
        if detected:
            self._detected = True
            self.n_detections += 1
        return detected

    # ---------------------------------------------------------------- batch
    def _run_chunk(self, x: np.ndarray, final: int = -1) -> int:
        """Advance the state over ``x`` (origin-shifted); index of the first detection or -1.

        Row ``r`` of the "rising sums" holds ``s_inc`` (mode up) or ``-s_dec`` (mode down), so
        both tests read "rise above the running minimum exceeds the threshold"; negation is
        exact, so these are the same floats as `_step`'s. Blocks of ``_BLOCK`` samples are
        screened first with a bound built from the block extremes of the faded sum f and the
        known faded counts g (rounding is monotone, so the bound never hides a detection);
        the exact running minimum is scanned only from the first block that could hold one.
        The state is saved after the last sample, or after a detection at index ``final``
        (the caller's last sample); any other detection ends the segment, so no state is kept.
        """
        n0 = self._n
        length = x.size
        delta = self._delta_eff
        thr = self._thr_eff
        assert delta is not None and thr is not None
        work = self._work
        if work.shape[1] <= length:
            work = self._work = np.empty((2 + self._rows, max(length + 1, _CHUNK_MAX + 1)))
        sums = work[0, : length + 1]
        sums[0] = self._sum
        sums[1:] = x
        np.cumsum(sums, out=sums)
        sums = sums[1:]
        end = n0 + length
        if end <= self._g_cache.size:
            counts = self._counts_cache[n0:end]
            g = self._g_cache[n0:end]
        else:
            counts, g = self._counts_and_g(n0, length)
        f = work[1, :length]
        np.divide(sums, counts, out=f)
        np.subtract(x, f, out=f)  # deviations from the running mean
        if self.alpha == 1.0:  # the same additions as alpha * f + dev with alpha = 1
            f[0] += self._f
            np.cumsum(f, out=f)
        else:
            f = _faded_sum(self._b, self._a, f, self.alpha * self._f)

        up, down = self._up, self._down
        m_inc, m_dec = self._min_inc, -self._max_dec  # running minima of the rising sums
        first = max(0, self._n_min - n0 - 1)  # first index allowed to detect
        start = 0
        if length >= _SCREEN_MIN:
            nb = length // _BLOCK
            fb = f[: nb * _BLOCK].reshape(nb, _BLOCK)
            f_hi = fb.max(axis=1)
            f_lo = fb.min(axis=1)
            dg_first = g[0 : nb * _BLOCK : _BLOCK] * delta
            dg_last = g[_BLOCK - 1 : nb * _BLOCK : _BLOCK] * delta
            cand = np.zeros(nb, dtype=bool)
            if up:  # s_inc = f - delta * g
                low = np.minimum.accumulate(f_lo - dg_last)
                cand |= (f_hi - dg_first) - np.minimum(low, m_inc, out=low) > thr
            if down:  # -s_dec = -f - delta * g
                low = np.minimum.accumulate(np.negative(f_hi) - dg_last)
                cand |= (np.negative(f_lo) - dg_first) - np.minimum(low, m_dec, out=low) > thr
            cand[: first // _BLOCK] = False
            blk = int(np.argmax(cand))
            start = blk * _BLOCK if cand[blk] else nb * _BLOCK

        rows = []
        if up:
            r = work[2, :length]
            np.multiply(g, -delta, out=r)
            np.add(f, r, out=r)
            rows.append(r)
        if down:
            r = work[1 + len(rows) + 1, :length]
            np.multiply(g, delta, out=r)
            np.add(f, r, out=r)
            np.negative(r, out=r)
            rows.append(r)
        mins = [m_inc] if up else []
        if down:
            mins.append(m_dec)
        if start > 0:
            mins = [min(m, float(r[:start].min())) for m, r in zip(mins, rows, strict=True)]
        k = -1
        runs = []
        if start < length:
            for i, r in enumerate(rows):
                seg = r[start:]
                run = np.minimum.accumulate(seg)
                np.minimum(run, mins[i], out=run)
                runs.append(run)
                hit = np.subtract(seg, run) > thr
                lo = max(0, first - start)
                j = lo + int(np.argmax(hit[lo:])) if lo < hit.size else 0
                if lo < hit.size and hit[j] and (k < 0 or start + j < k):
                    k = start + j
        if k >= 0 and k != final:
            return k
        last = length - 1 if k < 0 else k
        if runs:
            mins = [float(run[last - start]) for run in runs]
        self._n = n0 + last + 1
        self._sum = float(sums[last])
        self._f = float(f[last])
        self._g = float(g[last])
        if up:
            self._min_inc = mins[0]
        if down:
            self._max_dec = -mins[-1]
        return k

    def _counts_and_g(self, n0: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Counts n0+1 .. n0+length and their faded counts g (the same floats as `_step`)."""
        end = n0 + length
        if end <= _G_CACHE_MAX:
            self._counts_cache, self._g_cache = _position_tables(self.alpha, end)
            return self._counts_cache[n0:end], self._g_cache[n0:end]
        counts = np.arange(n0 + 1, end + 1, dtype=float)
        if self.alpha == 1.0:
            return counts, counts
        return counts, _faded_sum(self._b, self._a, np.ones(length), self.alpha * self._g)

    def detect(self, values: Iterable[float] | np.ndarray) -> list[int]:
        """Feed a batch of samples; indices (into ``values``) where a change is detected.

        Equivalent to calling `update` on each value in turn, state included, so batches and
        single updates can be mixed.
        """
        arr = np.asarray(values, dtype=float)
        if arr.ndim != 1:
            raise ValueError("PageHinkley.detect expects a 1-D sequence")
        # Two fast reductions (NaN propagates through max) before any elementwise check.
        if arr.size and not (arr.min() >= -MAX_ABS_VALUE and arr.max() <= MAX_ABS_VALUE):
            i = int(np.argmax(~(np.abs(arr) <= MAX_ABS_VALUE)))
            raise ValueError(
                f"PageHinkley.detect: value {arr[i]!r} at index {i} is not finite "
                f"or beyond ±{MAX_ABS_VALUE:g}"
            )
        out: list[int] = []
        total = arr.size
        pos = 0
        while pos < total:
            if self._detected:
                self._reset()
            seg_start = pos - self.n_segment
            if self._delta_eff is None:  # auto: complete the warm-up first
                need = self.warmup - len(self._buf)
                if total - pos < need:
                    self._buf.extend(arr[pos:].tolist())
                    break
                warm = np.concatenate([np.asarray(self._buf, dtype=float), arr[pos : pos + need]])
                self._buf = []
                self._calibrate(warm)
                chunk_x = self._shift_array(warm)
                offset = pos - (self.warmup - need)
                pos += need
            else:
                step = min(self._chunk, total - pos)
                chunk_x = self._shift_array(arr[pos : pos + step])
                offset = pos
                pos += step
            k = self._run_chunk(chunk_x, final=total - 1 - offset)
            if k < 0:
                self._chunk = min(2 * self._chunk, _CHUNK_MAX)
                continue
            idx = offset + k
            out.append(idx)
            self._detected = True
            self.n_detections += 1
            seg_len = idx - seg_start + 1
            self._chunk = int(min(max(1.25 * seg_len + 32, _CHUNK_MIN), _CHUNK_MAX))
            pos = idx + 1
        return out

    def __repr__(self) -> str:
        return (
            f"PageHinkley(min_instances={self.min_instances}, delta={self.delta!r}, "
            f"threshold={self.threshold!r}, alpha={self.alpha!r}, mode={self.mode!r})"
        )
