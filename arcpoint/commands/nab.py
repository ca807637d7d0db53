"""`arcpoint nab`: run the anomaly detector over NAB series and score it the NAB way.

Every CSV under --data is streamed through a fresh detector (each score uses only earlier points);
the per-file results (`timestamp,value,anomaly_score,label`) go under --out, and the NAB score for
each profile is computed by `tools.anomaly.nab_scoring` with one threshold per profile tuned over
the whole corpus, as NAB does. `--cv` adds the leave-one-category-out cross-validated score of the
same detector (`tools.anomaly.cross_validation`): each category scored at thresholds chosen
without it.

Real files are taken as they are: rows are scored in file order, a timestamp that repeats or steps
back is kept and counted, and a file that cannot be read is reported while the others are still
scored (exit status 1 then; 2 when nothing can be scored or the arguments are wrong).
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
            f"--labels: {DEFAULT_DATA} and {DEFAULT_LABELS}, when they exist. Exit status: 0, "
            "or 1 when some files could not be scored (the rest are), or 2 on bad arguments."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="detector variants:\n"
        + "\n".join(f"  {name:22s} {text}" for name, text in VARIANTS.items())
        + "\n\n--cv: categories are the first-level folders under --data",
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
    p.add_argument(
        "--cv",
        action="store_true",
        help="also score the detector by leave-one-category-out cross-validation "
        "(each category at thresholds chosen on the others)",
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


def _detect_file(job: tuple[str, str, Any]) -> tuple[str, str, Any, int, int, float]:
    """Worker: stream one file through a fresh detector; return its alert scores."""
    import numpy as np

    from arcpoint.nab_io import read_series
    from tools.anomaly import make_detector

    variant, path, config = job
    series = read_series(Path(path))
    detector = make_detector(variant, config)
    started = time.perf_counter()
    run = detector.detect(series.values)
    is_anomaly = run.ready & (run.surprise > -np.log10(config.contamination))
    return (
        variant,
        path,
        run.alert,
        int(is_anomaly.sum()),
        int((run.alert > 0).sum()),
        time.perf_counter() - started,
    )


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np

    from arcpoint.nab_io import NabFormatError, load_corpus
    from arcpoint.nab_report import print_cv, print_scores, write_json
    from tools.anomaly import DetectorConfig
    from tools.anomaly.cross_validation import cross_validate
    from tools.anomaly.nab_scoring import PROFILES, score_corpus

    started = time.perf_counter()
    data_dir = _resolve(args.data, DEFAULT_DATA, "--data")
    labels_path = _resolve(args.labels, DEFAULT_LABELS, "--labels")
    if data_dir is None or labels_path is None:
        return 2
    if not data_dir.is_dir():
        print(f"arcpoint nab: --data {data_dir} is not a directory", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("arcpoint nab: --jobs must be >= 1", file=sys.stderr)
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

    try:
        corpus = load_corpus(data_dir, labels_path)
    except NabFormatError as exc:
        print(f"arcpoint nab: {exc}", file=sys.stderr)
        return 2
    for name, problem in corpus.problems.items():
        print(f"arcpoint nab: skipped {name}: {problem}", file=sys.stderr)
    for name, s in corpus.series.items():
        if s.duplicate_timestamps or s.backward_timestamps:
            print(
                f"arcpoint nab: {name}: {s.duplicate_timestamps} repeated and "
                f"{s.backward_timestamps} backward timestamps, kept in file order",
                file=sys.stderr,
            )
    names = sorted(corpus.series)
    if not names:
        print("arcpoint nab: no file could be scored", file=sys.stderr)
        return 2

    variants = [args.detector]
    paths = {name: str(data_dir / name) for name in names}
    jobs = [(v, paths[name], config) for v in variants for name in names]
    by_path = {p: name for name, p in paths.items()}
    results: dict[str, dict[str, tuple[np.ndarray, int, int, float]]] = {v: {} for v in variants}
    total = len(jobs)

    def collect(i: int, out: tuple[str, str, Any, int, int, float]) -> None:
        variant, path, alerts, n_anom, n_alert, secs = out
        name = by_path[path]
        results[variant][name] = (np.asarray(alerts), n_anom, n_alert, secs)
        tag = f"{variant}: " if len(variants) > 1 else ""
        rows = len(corpus.series[name].values)
        print(f"[{i}/{total}] {tag}{name} ({rows} rows, {secs:.1f}s)", file=sys.stderr)

    from evals.workers import run_tasks  # Ctrl-C stops its workers within seconds

    for i, (_, out) in enumerate(run_tasks(_detect_file, jobs, min(args.jobs, total)), start=1):
        collect(i, out)

    main = results[args.detector]
    scored_corpus = {name: (main[name][0], corpus.labels[name]) for name in names}
    scored = {p: score_corpus(scored_corpus, PROFILES[p]) for p in profiles}
    cv = None
    if args.cv:
        try:
            cv = cross_validate(
                {args.detector: {n: main[n][0] for n in names}},
                {n: corpus.labels[n] for n in names},
                profiles=profiles,
            )
        except ValueError as exc:
            print(f"arcpoint nab: --cv: {exc}", file=sys.stderr)
            return 2

    if args.out is not None:
        from arcpoint.nab_io import write_results

        for name in names:
            lab = corpus.labels[name]
            in_window = np.zeros(lab.n_rows, dtype=np.int64)
            for lo, hi in lab.windows:
                in_window[lo : hi + 1] = 1
            write_results(args.out / name, corpus.series[name], main[name][0], in_window)

    elapsed = time.perf_counter() - started
    detector_seconds = sum(main[n][3] for n in names)
    print_scores(args.detector, len(names), elapsed, detector_seconds, scored)
    if cv is not None:
        print_cv(cv, args.detector)
    if corpus.problems:
        print(f"{len(corpus.problems)} file(s) could not be scored (see above)")
    if args.json is not None:
        write_json(args.json, args.detector, config, corpus, main, scored, cv, elapsed)
    return 1 if corpus.problems else 0
