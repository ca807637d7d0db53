"""The eval's scorers: pure functions over a replay's per-tick series.

Definitions (the report repeats them):

- **Flap**: a backend's traffic share moves by at least `FLAP_MOVE` (10 points) in one direction
  and then reverses by at least as much within `FLAP_WITHIN_S` (60 s) of the turning point.
  Turning points come from a zigzag over the per-tick share with a 10-point reversal threshold,
  so noise smaller than that never counts and one swing is never counted twice; a turning point
  is timed when the share first reached its extreme (a share that holds a level is not flapping).
  When the ticks' request counts are known (`count_flaps` always knows them), a move must also be
  beyond sampling noise: a two-proportion z-test between the two ticks' shares, |z| >= `FLAP_Z`
  (3.5). Why: a router that decides per request spreads a tick's requests over backends, and a
  10-second share of a few dozen requests moves 10 points by chance alone; a stationary random
  25% split at 2-14 requests/s scores 150-600 "flaps" an hour on the 10-point rule alone, and
  0.2-2 an hour with the test (`tests/test_eval_harness.py`). The same rule scores every policy.
- **Ground-truth windows**: per backend, the ticks on which the simulator applied chaos to it
  (`SimTick.chaos`), merged when less than `MERGE_GAP_S` apart; fleet-wide events (a traffic
  surge) give every backend a window. A labelled tick covers [ts - 10 s, ts].
- **Anomaly precision / recall**: an anomaly raised on a backend is a true positive when it falls
  inside one of that backend's windows, extended by `GRACE_S` after the end (queues take time to
  drain); recall is the share of windows with at least one anomaly in them. Delay: first anomaly
  in a window minus the window's start.
- **Drift detection**: drift onsets are `gradual_drift` events. An alarm on a drifting backend
  between the onset and the event's end + grace detects it (delay = alarm - onset); an alarm
  inside some other chaos window is counted as `other_chaos_alarms` (a real change, not drift);
  any other alarm is a false alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tools.drift.page_hinkley import PageHinkley
from tools.telemetry import TICK_SECONDS

FLAP_MOVE = 0.10
FLAP_WITHIN_S = 60.0
FLAP_Z = 3.5
MERGE_GAP_S = 60.0
GRACE_S = 120.0

Window = tuple[float, float]


# --- traffic shares and flaps -----------------------------------------------------------------


def traffic_shares(counts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per tick, each backend's share of the tick's requests (NaN on ticks without requests)."""
    names = list(counts)
    if not names:
        return {}
    total = np.sum([np.asarray(counts[n], dtype=float) for n in names], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            n: np.where(total > 0, np.asarray(counts[n], dtype=float) / total, np.nan)
            for n in names
        }


def flap_times(
    share: np.ndarray,
    ts: np.ndarray,
    *,
    n: np.ndarray | None = None,
    min_move: float = FLAP_MOVE,
    within_s: float = FLAP_WITHIN_S,
    z: float = FLAP_Z,
) -> list[float]:
    """Times of the turning points that were flaps (see the module docstring); `n`, the ticks'
    request counts, adds the sampling-noise test to every move."""
    share = np.asarray(share, dtype=float)
    ts = np.asarray(ts, dtype=float)
    if share.shape != ts.shape:
        raise ValueError("share and ts differ in length")
    if n is None:
        counts = [math.inf] * share.size
    else:
        counts = np.asarray(n, dtype=float).tolist()
        if len(counts) != share.size:
            raise ValueError("n and share differ in length")
    eps = 1e-12

    def moved(a: tuple[float, float, float], x: float, k: float) -> bool:
        d = abs(x - a[0])
        if d < min_move - eps:
            return False
        if math.isinf(k) or math.isinf(a[1]):
            return True
        p = (x * k + a[0] * a[1]) / (k + a[1])
        return d >= z * math.sqrt(p * (1.0 - p) * (1.0 / k + 1.0 / a[1])) - eps

    flaps: list[float] = []
    direction = 0  # 0 until the first real move sets it; then +1 rising, -1 falling
    lo = hi = ext = (math.nan, math.inf, math.nan)  # (share, requests, time)
    for x, t, k in zip(share.tolist(), ts.tolist(), counts, strict=True):
        if math.isnan(x) or k <= 0:
            continue
        if direction == 0:
            if not x >= lo[0]:
                lo = (x, k, t)
            if not x <= hi[0]:
                hi = (x, k, t)
            if x > lo[0] and moved(lo, x, k):
                direction, ext = 1, (x, k, t)
            elif x < hi[0] and moved(hi, x, k):
                direction, ext = -1, (x, k, t)
        elif (x > ext[0]) if direction == 1 else (x < ext[0]):
            ext = (x, k, t)
        elif moved(ext, x, k):
            if t - ext[2] <= within_s + 1e-9:
                flaps.append(ext[2])
            direction, ext = -direction, (x, k, t)
    return flaps


def count_flaps(counts: Mapping[str, np.ndarray], ts: np.ndarray) -> dict[str, int]:
    """Flaps per backend over a run (moves tested against the ticks' sampling noise)."""
    names = list(counts)
    if not names:
        return {}
    total = np.sum([np.asarray(counts[k], dtype=float) for k in names], axis=0)
    return {k: len(flap_times(s, ts, n=total)) for k, s in traffic_shares(counts).items()}


def leave_delay_s(
    share: np.ndarray, ts: np.ndarray, after_ts: float, max_share: float
) -> float | None:
    """Seconds from `after_ts` to the start of the first tick (starting at or after it) whose
    share is at most `max_share`; None if it never happens."""
    starts = np.asarray(ts, dtype=float) - TICK_SECONDS
    share = np.asarray(share, dtype=float)
    idx = np.nonzero((starts >= after_ts - 1e-6) & (share <= max_share + 1e-12))[0]
    if idx.size == 0:
        return None
    return float(starts[idx[0]] - after_ts)


# --- ground truth -------------------------------------------------------------------------------


def label_windows(
    ts: np.ndarray, labelled: np.ndarray, *, merge_gap_s: float = MERGE_GAP_S
) -> list[Window]:
    """Windows [first labelled tick's start, last labelled tick's end] of runs of labelled ticks,
    runs closer than `merge_gap_s` merged."""
    ts = np.asarray(ts, dtype=float)
    on = np.asarray(labelled, dtype=bool)
    windows: list[Window] = []
    for t in ts[on].tolist():
        start = t - TICK_SECONDS
        if windows and start - windows[-1][1] <= merge_gap_s + 1e-9:
            windows[-1] = (windows[-1][0], t)
        else:
            windows.append((start, t))
    return windows


def merge_windows(windows: Iterable[Window], merge_gap_s: float = MERGE_GAP_S) -> list[Window]:
    out: list[Window] = []
    for s, e in sorted(windows):
        if out and s - out[-1][1] <= merge_gap_s + 1e-9:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _inside(t: float, windows: Sequence[Window], grace_s: float) -> int | None:
    for i, (s, e) in enumerate(windows):
        if s <= t <= e + grace_s:
            return i
    return None


@dataclass(frozen=True)
class DetectionScore:
    detections: int
    true_positives: int
    false_positives: int
    windows: int
    windows_detected: int
    mean_delay_s: float | None
    precision: float | None
    """None when nothing was detected."""
    recall: float | None
    """None when there is no window to find."""

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "detections": self.detections,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "windows": self.windows,
            "windows_detected": self.windows_detected,
            "precision": None if self.precision is None else round(self.precision, 4),
            "recall": None if self.recall is None else round(self.recall, 4),
            "mean_delay_s": None if self.mean_delay_s is None else round(self.mean_delay_s, 1),
        }


def score_detections(
    detections: Iterable[tuple[float, str]],
    windows: Mapping[str, Sequence[Window]],
    *,
    grace_s: float = GRACE_S,
) -> DetectionScore:
    """Precision and recall of (ts, backend) detections against per-backend windows."""
    dets = sorted(detections)
    tp = fp = 0
    first: dict[tuple[str, int], float] = {}
    for t, backend in dets:
        i = _inside(t, windows.get(backend, ()), grace_s)
        if i is None:
            fp += 1
            continue
        tp += 1
        first.setdefault((backend, i), t)
    n_windows = sum(len(w) for w in windows.values())
    delays = [t - windows[b][i][0] for (b, i), t in first.items()]
    return DetectionScore(
        detections=len(dets),
        true_positives=tp,
        false_positives=fp,
        windows=n_windows,
        windows_detected=len(first),
        mean_delay_s=float(np.mean(delays)) if delays else None,
        precision=tp / len(dets) if dets else None,
        recall=len(first) / n_windows if n_windows else None,
    )


# --- drift ----------------------------------------------------------------------------------


def page_hinkley_alarms(
    values: np.ndarray,
    ts: np.ndarray,
    *,
    warmup: int,
    threshold_sigmas: float,
    delta_sigmas: float,
    mode: str = "up",
) -> list[float]:
    """Times at which calibrated Page-Hinkley alarms over `values` (NaNs skipped)."""
    v = np.asarray(values, dtype=float)
    t = np.asarray(ts, dtype=float)
    ok = np.isfinite(v)
    if ok.sum() < warmup + 1:
        return []
    det = PageHinkley.calibrated(
        mode=mode,  # type: ignore[arg-type]
        warmup=warmup,
        threshold_sigmas=threshold_sigmas,
        delta_sigmas=delta_sigmas,
    )
    idx = det.detect(v[ok])
    return [float(x) for x in t[ok][idx]]


@dataclass(frozen=True)
class DriftScore:
    alarms: int
    drifts: int
    detected: int
    delay_s: float | None
    """Delay to the first detection of the first drift (None: not detected or no drift)."""
    false_alarms: int
    other_chaos_alarms: int

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "alarms": self.alarms,
            "drifts": self.drifts,
            "detected": self.detected,
            "delay_s": None if self.delay_s is None else round(self.delay_s, 1),
            "false_alarms": self.false_alarms,
            "other_chaos_alarms": self.other_chaos_alarms,
        }


def score_drift(
    alarms: Iterable[tuple[float, str]],
    drifts: Sequence[tuple[float, float, Sequence[str]]],
    chaos_windows: Mapping[str, Sequence[Window]],
    *,
    grace_s: float = GRACE_S,
) -> DriftScore:
    """`drifts`: (onset, end, backends) of each drift event; `chaos_windows`: every chaos
    window per backend (drift windows included)."""
    alarms = sorted(alarms)
    used: set[int] = set()
    delays: list[float | None] = []
    for onset, end, backends in drifts:
        hit = None
        for k, (t, b) in enumerate(alarms):
            if b in backends and onset <= t <= end + grace_s:
                hit = k
                break
        delays.append(None if hit is None else alarms[hit][0] - onset)
        if hit is not None:
            used.add(hit)
    other = false = 0
    for k, (t, b) in enumerate(alarms):
        if k in used:
            continue
        in_drift = any(
            b in backends and onset <= t <= end + grace_s for onset, end, backends in drifts
        )
        if in_drift:
            continue  # a repeat alarm on a drift already detected
        if _inside(t, chaos_windows.get(b, ()), grace_s) is not None:
            other += 1
        else:
            false += 1
    found = [d for d in delays if d is not None]
    return DriftScore(
        alarms=len(alarms),
        drifts=len(drifts),
        detected=len(found),
        delay_s=delays[0] if delays else None,
        false_alarms=false,
        other_chaos_alarms=other,
    )


def percent_better(ours: float, theirs: float) -> float | None:
    """How much lower `ours` is than `theirs`, in percent of theirs (negative: worse). None when
    the baseline is 0 (then no reduction is possible; compare the raw figures)."""
    if not (math.isfinite(ours) and math.isfinite(theirs)) or theirs <= 0:
        return None
    return 100.0 * (theirs - ours) / theirs
