"""`arcpoint nab`: run the anomaly detector over NAB series and score it the NAB way.

Every CSV under --data is streamed through a fresh detector, one point at a time (no look-ahead);
the per-file results (`timestamp,value,anomaly_score,label`) go under --out, and the NAB score for
each profile is computed by `tools.anomaly.nab_scoring` with one threshold per profile tuned over
the whole corpus, as NAB does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path("../shared/data/nab/data")
DEFAULT_LABELS = Path("../shared/data/nab/labels_combined_windows.json")
PROFILE_NAMES = ("standard", "reward_low_fp", "reward_low_fn")


def register(subparsers: argparse._SubParsersAction) -> None:
    from tools.anomaly import VARIANTS

    p = subparsers.add_parser(
        "nab",
        help="score the anomaly detector on Numenta Anomaly Benchmark series",
        description=(
            "Stream every CSV under --data through the anomaly detector (each score uses only "
            "earlier points and the current one), write per-file results and print the NAB "
            "score (0 = null detector, 100 = perfect) for each profile. Defaults for --data and "
            f"--labels: {DEFAULT_DATA} and {DEFAULT_LABELS}, when they exist."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="detector variants:\n"
        + "\n".join(f"  {name:22s} {text}" for name, text in VARIANTS.items()),
    )
    p.add_argument("--data", type=Path, help="directory of NAB CSVs (searched recursively)")
    p.add_argument("--labels", type=Path, help="NAB combined windows JSON (keys: paths in --data)")
    p.add_argument("--out", type=Path, help="write per-file results here, mirroring --data")
    p.add_argument("--json", type=Path, help="write the scores and per-file details as JSON")
    p.add_argument(
        "--profile",
        action="append",
        choices=PROFILE_NAMES,
        help="score only this profile (repeatable; default: all three)",
    )
    p.add_argument(
        "--detector",
        default="iforest",
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help="detector variant (listed below; default iforest)",
    )
    p.add_argument("--contamination", type=float, help="share of anomalies expected in training")
    p.add_argument("--trees", type=int, help="trees per Isolation Forest")
    p.add_argument("--seed", type=int, default=0, help="random seed of the forests (default 0)")
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="files scored in parallel (default: min(2, CPUs))",
    )
    p.set_defaults(func=run)


def _resolve(arg: Path | None, default: Path, flag: str) -> Path | None:
    if arg is not None:
        return arg
    if default.exists():
        return default
    print(f"arcpoint nab: {flag} is required ({default} does not exist here)", file=sys.stderr)
    return None


def _detect_file(job: tuple[str, str, Any]) -> tuple[str, list[float], int, int, float]:
    """Worker: stream one file through a fresh detector; return its alert scores."""
    from arcpoint.nab_io import read_series
    from tools.anomaly import make_detector

    path, variant, config = job
    series = read_series(Path(path))
    detector = make_detector(variant, config)
    started = time.perf_counter()
    alerts: list[float] = []
    n_anomalies = 0
    n_alerts = 0
    for v in series.values:
        r = detector.update(float(v))
        alerts.append(r.alert)
        n_anomalies += r.is_anomaly
        n_alerts += r.alert > 0
    return path, alerts, n_anomalies, n_alerts, time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict, replace

    import numpy as np

    from arcpoint.nab_io import NabFormatError, dump_json, read_labels, read_series, write_results
    from tools.anomaly import DetectorConfig
    from tools.anomaly.nab_scoring import (
        PROFILES,
        FileLabels,
        probationary_length,
        score_corpus,
        window_indices,
    )

    started = time.perf_counter()
    data_dir = _resolve(args.data, DEFAULT_DATA, "--data")
    labels_path = _resolve(args.labels, DEFAULT_LABELS, "--labels")
    if data_dir is None or labels_path is None:
        return 2
    if not data_dir.is_dir():
        print(f"arcpoint nab: --data {data_dir} is not a directory", file=sys.stderr)
        return 2
    config = DetectorConfig(seed=args.seed)
    try:
        if args.contamination is not None:
            config = replace(config, contamination=args.contamination)
        if args.trees is not None:
            config = replace(config, n_estimators=args.trees)
    except ValueError as exc:
        print(f"arcpoint nab: {exc}", file=sys.stderr)
        return 2
    profiles = args.profile or list(PROFILE_NAMES)

    files = sorted(data_dir.rglob("*.csv"))
    if not files:
        print(f"arcpoint nab: no CSV files under {data_dir}", file=sys.stderr)
        return 2
    try:
        labels = read_labels(labels_path)
        rel = {f: f.relative_to(data_dir).as_posix() for f in files}
        missing = [r for r in rel.values() if r not in labels]
        if missing:
            raise NabFormatError(
                f"{labels_path}: no windows for {len(missing)} file(s): {', '.join(missing[:5])}"
            )
        series = {}
        file_labels = {}
        for f in files:
            s = read_series(f)
            try:
                idx = window_indices(s.timestamps, labels[rel[f]])
            except ValueError as exc:
                raise NabFormatError(f"{f}: {exc}") from None
            series[f] = s
            file_labels[f] = FileLabels(len(s.values), tuple(idx))
    except NabFormatError as exc:
        print(f"arcpoint nab: {exc}", file=sys.stderr)
        return 2

    jobs = [(str(f), args.detector, config) for f in files]
    results: dict[str, tuple[list[float], int, int, float]] = {}
    n = len(files)

    def report(i: int, path: str, secs: float) -> None:
        name = rel[Path(path)]
        print(
            f"[{i}/{n}] {name} ({len(series[Path(path)].values)} rows, {secs:.1f}s)",
            file=sys.stderr,
        )

    from evals.workers import run_tasks  # Ctrl-C stops its workers within seconds

    for i, (_, (path, alerts, n_anom, n_alert, secs)) in enumerate(
        run_tasks(_detect_file, jobs, min(args.jobs, n)), start=1
    ):
        results[path] = (alerts, n_anom, n_alert, secs)
        report(i, path, secs)

    corpus = {rel[f]: (np.asarray(results[str(f)][0]), file_labels[f]) for f in files}
    scored = {name: score_corpus(corpus, PROFILES[name]) for name in profiles}

    if args.out is not None:
        for f in files:
            lab = file_labels[f]
            in_window = np.zeros(lab.n_rows, dtype=np.int64)
            for lo, hi in lab.windows:
                in_window[lo : hi + 1] = 1
            write_results(args.out / rel[f], series[f], corpus[rel[f]][0], in_window)

    elapsed = time.perf_counter() - started
    print(f"NAB scores ({args.detector}, {n} files, {elapsed:.1f}s):")
    for name, res in scored.items():
        shown = "n/a (no labelled windows)" if res.score is None else f"{res.score:6.2f}"
        th = "never" if res.threshold == float("inf") else f"{res.threshold:.4f}"
        print(
            f"  {name:14s} {shown}   threshold {th}   raw {res.raw:.3f}"
            f" (null {res.null:.3f}, perfect {res.perfect:.3f})"
        )

    if args.json is not None:
        payload: dict[str, Any] = {name: scored[name].score for name in profiles}
        payload["files"] = {}
        for f in files:
            s = series[f]
            lab = file_labels[f]
            alerts, n_anom, n_alert, secs = results[str(f)]
            per_profile = {}
            for name, res in scored.items():
                fs = res.files[rel[f]]
                per_profile[name] = {
                    "score": fs.score,
                    "tp": fs.tp,
                    "fp": fs.fp,
                    "fn": fs.fn,
                    "tn": fs.tn,
                    "fp_cost": fs.fp_cost,
                    "windows": [
                        {
                            "start": s.raw_timestamps[w.start_row],
                            "end": s.raw_timestamps[w.end_row],
                            "scored": w.scored,
                            "detected_at": None
                            if w.detected_row is None
                            else s.raw_timestamps[w.detected_row],
                            "reward": w.reward,
                        }
                        for w in fs.windows
                    ],
                }
            payload["files"][rel[f]] = {
                "rows": lab.n_rows,
                "probationary_rows": probationary_length(lab.n_rows),
                "duplicate_timestamps": s.duplicate_timestamps,
                "windows": len(lab.windows),
                "alerts": n_alert,
                "anomalies": n_anom,
                "detector_seconds": round(secs, 3),
                "profiles": per_profile,
            }
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
        payload["detector"] = {"variant": args.detector, "config": asdict(config)}
        payload["runtime_seconds"] = round(elapsed, 2)
        dump_json(args.json, payload)
    return 0
