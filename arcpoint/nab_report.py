"""What `arcpoint nab` prints and writes: scores per profile, the cross-validation, the JSON."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from arcpoint.nab_io import Corpus, dump_json
from tools.anomaly.cross_validation import CrossValidation
from tools.anomaly.nab_scoring import ProfileResult, probationary_length


def _fmt(score: float | None) -> str:
    return "   n/a" if score is None else f"{score:6.2f}"


def print_scores(
    detector: str,
    n_files: int,
    elapsed: float,
    detector_seconds: float,
    scored: dict[str, ProfileResult],
) -> None:
    print(
        f"NAB scores ({detector}, {n_files} files, {elapsed:.1f}s wall, "
        f"{detector_seconds:.1f}s in the detector):"
    )
    for name, res in scored.items():
        shown = "n/a (no labelled windows)" if res.score is None else f"{res.score:6.2f}"
        th = "never" if res.threshold == float("inf") else f"{res.threshold:.4f}"
        print(
            f"  {name:14s} {shown}   threshold {th}   raw {res.raw:.3f}"
            f" (null {res.null:.3f}, perfect {res.perfect:.3f})"
        )


def print_cv(cv: CrossValidation, detector: str) -> None:
    n = len(cv.folds)
    print(
        f"\nCross-validated NAB scores (leave one category out, {n} folds; candidates: "
        f"{', '.join(cv.candidates)}):"
    )
    for name, score in cv.scores.items():
        print(
            f"  {name:14s} {_fmt(score)}   (in-sample {_fmt(cv.in_sample_scores[name]).strip()}"
            f" with {cv.in_sample_choice})"
        )
    sel = cv.select_profile
    print(f"  {'held out':24s} {'files':>5s}  {'chosen':22s} {'training':>8s} {'held-out':>8s}")
    for fold in cv.folds:
        print(
            f"  {fold.held_out:24s} {len(fold.files):5d}  {fold.chosen:22s} "
            f"{_fmt(fold.training_scores[fold.chosen]):>8s} "
            f"{_fmt(fold.held_out_totals[sel].score):>8s}"
        )
    if len(cv.candidates) > 1:
        scores = ", ".join(f"{c} {_fmt(v).strip()}" for c, v in cv.choice_scores.items())
        print(f"  {sel} score of each candidate, held out by category over all files: {scores}")
    if cv.in_sample_choice != detector:
        print(f"  note: on every category the protocol picks {cv.in_sample_choice}, not {detector}")


def _window_rows(series: Any, fs: Any) -> list[dict[str, Any]]:
    return [
        {
            "start": series.raw_timestamps[w.start_row],
            "end": series.raw_timestamps[w.end_row],
            "scored": w.scored,
            "detected_at": None
            if w.detected_row is None
            else series.raw_timestamps[w.detected_row],
            "reward": w.reward,
        }
        for w in fs.windows
    ]


def cv_payload(cv: CrossValidation) -> dict[str, Any]:
    out: dict[str, Any] = dict(cv.scores)
    out["in_sample"] = cv.in_sample_scores
    out["in_sample_choice"] = cv.in_sample_choice
    out["candidate_scores"] = cv.choice_scores
    out["candidates"] = list(cv.candidates)
    out["select_profile"] = cv.select_profile
    out["folds"] = [
        {
            "held_out": f.held_out,
            "files": list(f.files),
            "chosen": f.chosen,
            "training_scores": f.training_scores,
            "thresholds": {k: (None if v == float("inf") else v) for k, v in f.thresholds.items()},
            "held_out_scores": {k: t.score for k, t in f.held_out_totals.items()},
            "held_out_raw": {k: t.raw for k, t in f.held_out_totals.items()},
        }
        for f in cv.folds
    ]
    return out


def write_json(
    path: Path,
    detector: str,
    config: Any,
    corpus: Corpus,
    results: dict[str, tuple[np.ndarray, int, int, float]],
    scored: dict[str, ProfileResult],
    cv: CrossValidation | None,
    elapsed: float,
) -> None:
    payload: dict[str, Any] = {name: res.score for name, res in scored.items()}
    files: dict[str, Any] = {}
    for name in sorted(corpus.series):
        s = corpus.series[name]
        lab = corpus.labels[name]
        _, n_anom, n_alert, secs = results[name]
        files[name] = {
            "rows": lab.n_rows,
            "probationary_rows": probationary_length(lab.n_rows),
            "duplicate_timestamps": s.duplicate_timestamps,
            "backward_timestamps": s.backward_timestamps,
            "windows": len(lab.windows),
            "alerts": n_alert,
            "anomalies": n_anom,
            "detector_seconds": round(secs, 3),
            "profiles": {
                p: {
                    "score": res.files[name].score,
                    "tp": res.files[name].tp,
                    "fp": res.files[name].fp,
                    "fn": res.files[name].fn,
                    "tn": res.files[name].tn,
                    "fp_cost": res.files[name].fp_cost,
                    "windows": _window_rows(s, res.files[name]),
                }
                for p, res in scored.items()
            },
        }
    payload["files"] = files
    payload["problems"] = dict(corpus.problems)
    payload["profiles"] = {
        name: {
            "score": res.score,
            "raw": res.raw,
            "null": res.null,
            "perfect": res.perfect,
            "threshold": None if res.threshold == float("inf") else res.threshold,
        }
        for name, res in scored.items()
    }
    payload["detector"] = {"variant": detector, "config": asdict(config)}
    if cv is not None:
        payload["cv"] = cv_payload(cv)
    payload["runtime_seconds"] = round(elapsed, 2)
    dump_json(path, payload)
