"""The Numenta Anomaly Benchmark's scoring rules, implemented for Arcpoint.

NAB rewards a detector for flagging each labelled anomaly window early and charges it a little for
every alarm outside the windows. The rules follow NAB v1.1's `sweeper.py` / `optimizer.py` /
`runner.normalize` (the reference implementation), including its corner cases:

* Probationary period: the first ``min(floor(0.15 * n), 750)`` rows of a file are not scored.
  A window that starts inside it is scored on its remaining rows; a window wholly inside it is not
  scored at all (but, as in NAB, still counts towards the perfect score).
* Inside a window of width ``W`` (rows) ending at row ``R``, a detection at row ``i`` sits at
  ``y = -(R - i + 1) / W`` (``-1`` at the left edge, ``-1/W`` at the right edge) and earns
  ``A_TP * sigma(y) / sigma(-1)``, so a detection on a window's first row earns exactly ``A_TP``.
  Only the earliest detection in a window counts; later ones in the same window are free.
  A window with no detection costs ``-A_FN``.
* A detection outside every window at row ``i`` after a window of width ``W`` ending at ``R``
  sits at ``y = (i - R) / (W - 1)`` and costs ``A_FP * sigma(y)`` (``sigma`` is negative there,
  reaching ``-1`` from ``y >= 3``). With no preceding window it costs ``-A_FP``.
  (A one-row preceding window would divide by zero in NAB; here it counts as ``y = 3``.)
* ``sigma(y) = 2 / (1 + exp(5 y)) - 1``, the scaled sigmoid.
* A row is a detection when its anomaly score is ``>= threshold``. The threshold is chosen per
  profile to maximise the raw score summed over the whole corpus (NAB sweeps every distinct
  score; ties between thresholds go to the higher one, as NAB's stable sort does).
* Normalisation: ``100 * (S - S_null) / (S_perfect - S_null)`` where ``S_null`` is the null
  detector (all scores 0, threshold optimised the same way, so it never fires) and
  ``S_perfect = A_TP * number of labelled windows``, as in NAB's `runner.normalize`.

Pure functions over numpy arrays: no file I/O (the `arcpoint nab` command reads the files).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

PROBATION_PERCENT = 0.15
MAX_PROBATION_ROWS = 750  # NAB: min(floor(0.15 * n), 0.15 * 5000)


@dataclass(frozen=True, slots=True)
class Profile:
    """One of NAB's application profiles (its cost matrix)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    "reward_low_fp": Profile("reward_low_fp", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    "reward_low_fn": Profile("reward_low_fn", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
}


def scaled_sigmoid(y: float) -> float:
    """NAB's reward curve: ~0.987 at y=-1 (window start), 0 at y=0 (window end), -1 for y>=3."""
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probationary_length(n_rows: int) -> int:
    """Rows at the start of a file that NAB does not score."""
    return int(min(math.floor(PROBATION_PERCENT * n_rows), MAX_PROBATION_ROWS))


def window_indices(
    timestamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[int, int]]:
    """Map labelled windows (start, end timestamps, inclusive) to row index pairs, in file order.

    As NAB's sweeper does: rows are taken in file order; a window opens at the first row (after
    the previous window) whose timestamp reaches its start and closes at the first row after
    that whose timestamp reaches its end (a row past the end closes it one row earlier). With
    increasing timestamps this is the rows whose timestamp lies in [start, end]; where a clock
    stepped back or repeated, each row is still a row and the window is still one run of rows.
    Windows must be sorted, non-overlapping and non-empty, otherwise ValueError says which.
    """
    out: list[tuple[int, int]] = []
    cursor = 0
    n = len(timestamps)
    prev_end: datetime | None = None
    for start, end in windows:
        if end < start:
            raise ValueError(f"window ends before it starts: {start} .. {end}")
        if prev_end is not None and start <= prev_end:
            raise ValueError(f"window {start} .. {end} overlaps or precedes the previous one")
        prev_end = end
        lo = cursor
        while lo < n and timestamps[lo] < start:
            lo += 1
        hi = lo
        while hi < n and timestamps[hi] < end:
            hi += 1
        if hi == n or timestamps[hi] > end:
            hi -= 1
        if lo >= n or hi < lo or timestamps[lo] > end:
            raise ValueError(f"window {start} .. {end} contains no rows")
        out.append((lo, hi))
        cursor = hi + 1
    return out


@dataclass(frozen=True, slots=True)
class FileLabels:
    """What the scorer needs of one labelled file: its length and its windows as row ranges."""

    n_rows: int
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        prev_end = -1
        for lo, hi in self.windows:
            if not (0 <= lo <= hi < self.n_rows) or lo <= prev_end:
                raise ValueError(f"bad window rows ({lo}, {hi}) for a file of {self.n_rows} rows")
            prev_end = hi


def sweep_weights(labels: FileLabels, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Per row: what a detection there would be worth, and the window it falls in (-1: none).

    Mirrors NAB's `Sweeper.calcSweepScore`; probationary rows are included here (window id
    kept) and dropped by the callers.
    """
    n = labels.n_rows
    weight = np.empty(n, dtype=np.float64)
    window_of = np.full(n, -1, dtype=np.int64)
    prev_end: int | None = None
    prev_width = 0
    cursor = 0
    for w_id, (lo, hi) in enumerate(labels.windows):
        _fill_outside(weight, cursor, lo, prev_end, prev_width, profile)
        width = hi - lo + 1
        for i in range(lo, hi + 1):
            y = -(hi - i + 1) / width
            weight[i] = scaled_sigmoid(y) * profile.tp_weight / _MAX_TP
        window_of[lo : hi + 1] = w_id
        prev_end, prev_width, cursor = hi, width, hi + 1
    _fill_outside(weight, cursor, n, prev_end, prev_width, profile)
    return weight, window_of


def _fill_outside(
    weight: np.ndarray, lo: int, hi: int, prev_end: int | None, prev_width: int, profile: Profile
) -> None:
    for i in range(lo, hi):
        y = 3.0 if prev_end is None or prev_width <= 1 else (i - prev_end) / (prev_width - 1)
        weight[i] = scaled_sigmoid(y) * profile.fp_weight


@dataclass(frozen=True, slots=True)
class _Scorable:
    """The scored (post-probation) rows of one file under one profile."""

    scores: np.ndarray
    weight: np.ndarray
    window_of: np.ndarray  # window id within the file, -1 outside
    first_row: int  # index of the first scored row in the file
    n_windows_scored: int


def _scorable(scores: np.ndarray, labels: FileLabels, profile: Profile) -> _Scorable:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (labels.n_rows,):
        raise ValueError(f"{scores.shape[0]} anomaly scores for a file of {labels.n_rows} rows")
    if not np.all(np.isfinite(scores)):
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise ValueError(f"anomaly score at row {bad} is not a finite number")
    weight, window_of = sweep_weights(labels, profile)
    p = probationary_length(labels.n_rows)
    w = window_of[p:]
    return _Scorable(
        scores=scores[p:],
        weight=weight[p:],
        window_of=w,
        first_row=p,
        n_windows_scored=len(set(w[w >= 0].tolist())),
    )


def threshold_curve(
    files: Sequence[tuple[np.ndarray, FileLabels]], profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score for every distinct threshold, highest threshold first.

    The first entry is "never fire" (threshold +inf). Same result as NAB's
    `Sweeper.calcScoreByThreshold` over the concatenated corpus, in O(n log n).
    """
    parts = [_scorable(s, lab, profile) for s, lab in files]
    scores = np.concatenate([p.scores for p in parts]) if parts else np.empty(0)
    weight = np.concatenate([p.weight for p in parts]) if parts else np.empty(0)
    gid = []
    offset = 0
    for p, (_, lab) in zip(parts, files, strict=True):
        gid.append(np.where(p.window_of >= 0, p.window_of + offset, -1))
        offset += len(lab.windows)
    gids = np.concatenate(gid) if gid else np.empty(0, dtype=np.int64)
    base = -profile.fn_weight * sum(p.n_windows_scored for p in parts)

    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    w_sorted = weight[order]
    g_sorted = gids[order]
    delta = np.where(g_sorted < 0, w_sorted, 0.0)
    best: dict[int, float] = {}
    for k in np.flatnonzero(g_sorted >= 0).tolist():
        g = int(g_sorted[k])
        old = best.get(g, -profile.fn_weight)
        new = w_sorted[k]
        if new > old:
            best[g] = new
            delta[k] = new - old
    totals = base + np.cumsum(delta)
    if len(s_sorted):
        last_of_group = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))
    else:
        last_of_group = np.empty(0, dtype=np.int64)
    thresholds = np.concatenate([[math.inf], s_sorted[last_of_group]])
    curve = np.concatenate([[base], totals[last_of_group]])
    return thresholds, curve


def optimise_threshold(
    files: Sequence[tuple[np.ndarray, FileLabels]], profile: Profile
) -> tuple[float, float]:
    """(threshold, raw corpus score) maximising the corpus score; ties go to the higher one."""
    thresholds, curve = threshold_curve(files, profile)
    k = int(np.argmax(curve))  # first maximum = highest threshold
    return float(thresholds[k]), float(curve[k])


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One labelled window: its rows, the first detection in it (if any) and its reward."""

    start_row: int
    end_row: int
    scored: bool  # False when the whole window lies in the probationary period
    detected_row: int | None
    reward: float


@dataclass(frozen=True, slots=True)
class FileScore:
    """One file's result at a given threshold (row counts as NAB reports them)."""

    score: float
    tp: int
    fp: int
    fn: int
    tn: int
    fp_cost: float
    windows: tuple[WindowResult, ...]


def score_file(
    scores: np.ndarray, labels: FileLabels, profile: Profile, threshold: float
) -> FileScore:
    """Score one file with detections at rows whose anomaly score is >= threshold."""
    part = _scorable(scores, labels, profile)
    det = part.scores >= threshold
    inside = part.window_of >= 0
    fp_cost = float(part.weight[det & ~inside].sum())
    results = []
    total = fp_cost
    for w_id, (lo, hi) in enumerate(labels.windows):
        rows = np.flatnonzero((part.window_of == w_id) & det)
        scored = bool((part.window_of == w_id).any())
        if rows.size:
            first = int(rows[0])
            reward = float(part.weight[first])
            detected: int | None = first + part.first_row
        else:
            reward = -profile.fn_weight if scored else 0.0
            detected = None
        total += reward
        results.append(WindowResult(lo, hi, scored, detected, reward))
    return FileScore(
        score=total,
        tp=int((det & inside).sum()),
        fp=int((det & ~inside).sum()),
        fn=int((~det & inside).sum()),
        tn=int((~det & ~inside).sum()),
        fp_cost=fp_cost,
        windows=tuple(results),
    )


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """A profile's corpus result: the normalised NAB score and what it is made of."""

    profile: Profile
    score: float | None  # normalised 0..100 (None when the corpus has no labelled window)
    raw: float
    null: float
    perfect: float
    threshold: float
    files: dict[str, FileScore] = field(default_factory=dict)


def score_corpus(
    corpus: Mapping[str, tuple[np.ndarray, FileLabels]], profile: Profile
) -> ProfileResult:
    """Tune the threshold over the corpus, score every file at it, and normalise."""
    items = list(corpus.values())
    threshold, raw = optimise_threshold(items, profile)
    null_items = [(np.zeros(lab.n_rows), lab) for _, lab in items]
    _, null = optimise_threshold(null_items, profile)
    perfect = profile.tp_weight * sum(len(lab.windows) for _, lab in items)
    files = {name: score_file(s, lab, profile, threshold) for name, (s, lab) in corpus.items()}
    score = None if perfect == null else 100.0 * (raw - null) / (perfect - null)
    return ProfileResult(profile, score, raw, null, perfect, threshold, files)
