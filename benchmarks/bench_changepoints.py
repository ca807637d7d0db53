"""Change-point benchmark: real annotated series, scored the way the Turing benchmark (TCPD) does.

    python benchmarks/bench_changepoints.py [--json PATH]
    python benchmarks/bench_changepoints.py --tune [--json PATH]

Report (default): the seven real series with human annotations that river ships from TCPD
(`river.drift.datasets`: JFK airline passengers, Apple, Bitcoin, Brent crude oil, office
occupancy, a run log, UK coal employment), prepared as TCPD prepares them (Apple: Close and
Volume, every third row after the first; Brent: every tenth row, from 2000; Bitcoin: up to
2019-06-19), on raw values. Detectors, each online (every change decided from earlier rows):

* ``arcpoint``: `tools.drift.changepoint.ChangePointDetector` at its defaults; scored on the
  estimated start of each change (``location``) and, separately, on the row after which it
  was reported (``detected_at``), the only index river's detectors give;
* river's ``PageHinkley`` and ``ADWIN`` at their defaults (the alarm rows);
* ``zero``: a detector that never reports a change (TCPD's F1 counts row 0 as found, so on quiet
  series silence scores well).

A multi-column series is run column by column and the changes merged (one kept per 5 rows),
for every detector alike. Metrics: TCPD's F1 with a margin of 5 rows (row 0 in every set) and
its covering metric, per series and averaged over series.

Tune (``--tune``): the detector's settings are chosen here, on synthetic series with known
change points (mean shifts, variance changes, trends, seasonality, heavy tails, AR(1) noise,
50 to 1,000 rows, any scale), by the mean F1 over a small grid (among settings within 0.01 of
the best, the one that reports soonest). The real series are never used to choose anything.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from tools.drift.changepoint import ChangePointConfig, ChangePointDetector, merge_locations
from tools.drift.tcpd_metrics import covering, f_measure

MARGIN = 5
MERGE_ROWS = 5


# ------------------------------------------------------------------------------- data


def _river_datasets():
    try:
        from river.drift import datasets
    except ImportError:  # pragma: no cover - environment without the test extra
        sys.exit("river is required: pip install -e '.[test]'")
    return datasets


def _read(path: Path, columns: list[str]) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    first = next(iter(rows[0]))
    return [r[first] for r in rows], np.array([[float(r[c]) for c in columns] for r in rows])


def real_series() -> list[tuple[str, np.ndarray, dict[str, list[int]]]]:
    """(name, values of shape (rows, columns), annotations per annotator), TCPD-prepared."""
    ds = _river_datasets()
    spec = [
        ("airline_passengers", ds.AirlinePassengers(), ["Total Passengers"]),
        ("apple", ds.Apple(), ["Close", "Volume"]),
        ("bitcoin", ds.Bitcoin(), ["price"]),
        ("brent_spot", ds.BrentSpotPrice(), ["DPB"]),
        ("occupancy", ds.Occupancy(), ["V1", "V2", "V3", "V4"]),
        ("run_log", ds.RunLog(), ["Pace", "Distance"]),
        ("uk_coal_employment", ds.UKCoalEmploy(), ["Employment"]),
    ]
    out = []
    for name, dataset, columns in spec:
        stamps, values = _read(Path(dataset.path), columns)
        if name == "apple":  # TCPD: drop the first row, then every third row
            values = values[1:][::3]
        elif name == "brent_spot":  # TCPD: every tenth row, from the first one in 2000
            values = values[::10]
            first = next(i for i, s in enumerate(stamps[::10]) if s.endswith("2000"))
            values = values[first:]
        elif name == "bitcoin":  # TCPD's series ends on 2019-06-19
            values = values[: stamps.index("2019-06-19") + 1]
        annotations = {str(k): list(v) for k, v in dataset.annotations.items()}
        out.append((name, values, annotations))
    return out


def synthetic_series(seed: int) -> tuple[np.ndarray, list[int]]:
    """One synthetic series with known change points (the tuning set)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 1001))
    n_cp = int(rng.integers(0, min(6, n // 40) + 1))
    cps = sorted(rng.choice(np.arange(15, n - 15), size=n_cp, replace=False).tolist())
    cps = [c for i, c in enumerate(cps) if i == 0 or c - cps[i - 1] >= 15]
    bounds = [0, *cps, n]
    noise_kind = rng.choice(["normal", "t3", "ar1"])
    base, sd = 0.0, 1.0
    slope = rng.normal(0, 0.02) if rng.random() < 0.3 else 0.0
    out = np.empty(n)
    for a, b in itertools.pairwise(bounds):
        if a > 0:
            kind = rng.choice(["mean", "mean", "variance", "slope"])
            if kind == "mean":
                base += rng.choice([-1, 1]) * rng.uniform(1.0, 5.0) * sd
            elif kind == "variance":
                sd *= rng.choice([0.33, 0.5, 2.0, 3.0])
            else:
                slope += rng.normal(0, 0.05) * sd
        m = b - a
        if noise_kind == "normal":
            e = rng.normal(0, sd, m)
        elif noise_kind == "t3":
            e = rng.standard_t(3, m) * sd / np.sqrt(3.0)
        else:
            e = np.empty(m)
            prev = 0.0
            for i in range(m):
                prev = 0.5 * prev + rng.normal(0, sd * np.sqrt(0.75))
                e[i] = prev
        out[a:b] = base + slope * np.arange(m) + e
        base += slope * m  # the trend continues through a change of slope
    if rng.random() < 0.2:  # a seasonal component the detector must not mistake for changes
        out += 1.5 * np.sin(2 * np.pi * np.arange(n) / 12.0)
    scale = 10.0 ** rng.uniform(-2, 6)
    offset = rng.normal(0, 10) * scale
    return out * scale + offset, cps


# -------------------------------------------------------------------------- detectors


def _river_rows(factory: Callable[[], object], x: np.ndarray) -> list[int]:
    det = factory()
    out = []
    for i, v in enumerate(x.tolist()):
        det.update(v)  # type: ignore[attr-defined]
        if det.drift_detected:  # type: ignore[attr-defined]
            out.append(i)
    return out


def ours(config: ChangePointConfig, index: str = "location") -> Callable[[np.ndarray], list[int]]:
    def run(x: np.ndarray) -> list[int]:
        return [getattr(c, index) for c in ChangePointDetector(config).detect(x)]

    return run


def detectors(config: ChangePointConfig) -> dict[str, Callable[[np.ndarray], list[int]]]:
    from river import drift

    return {
        "arcpoint (location)": ours(config, "location"),
        "arcpoint (detected_at)": ours(config, "detected_at"),
        "river PageHinkley": lambda x: _river_rows(drift.PageHinkley, x),
        "river ADWIN": lambda x: _river_rows(drift.ADWIN, x),
        "zero": lambda x: [],
    }


def run_detector(run: Callable[[np.ndarray], list[int]], values: np.ndarray) -> list[int]:
    return merge_locations([run(values[:, j]) for j in range(values.shape[1])], MERGE_ROWS)


# ------------------------------------------------------------------------------ tune

TIE = 0.01
GRID = {
    "expected_run": [100.0, 1000.0, 3000.0, 10000.0],
    "threshold": [0.5, 0.9, 0.99, 0.999],
    "confirm": [3, 5, 8, 12, 20],
}


def tune(n_series: int, seed0: int = 1000) -> dict:
    series = [synthetic_series(seed0 + i) for i in range(n_series)]
    results = []
    for values in itertools.product(*GRID.values()):
        cfg = replace(ChangePointConfig(), **dict(zip(GRID, values, strict=True)))
        run = ours(cfg)
        f1 = [f_measure({"truth": cps}, run(x), MARGIN) for x, cps in series]
        results.append({"config": asdict(cfg), "mean_f1": float(np.mean(f1))})
        print(f"  {dict(zip(GRID, values, strict=True))}: F1 {np.mean(f1):.3f}", file=sys.stderr)
    results.sort(key=lambda r: -r["mean_f1"])
    zero = float(np.mean([f_measure({"truth": cps}, [], MARGIN) for _, cps in series]))
    return {
        "n_series": n_series,
        "seeds": [seed0, seed0 + n_series - 1],
        "zero_f1": zero,
        "best": results[0],
        "grid": results,
    }


# ------------------------------------------------------------------------------- main


def report() -> dict:
    config = ChangePointConfig()
    dets = detectors(config)
    table: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, values, annotated in real_series():
        table[name] = {}
        for det_name, run in dets.items():
            t0 = time.perf_counter()
            found = run_detector(run, values)
            table[name][det_name] = {
                "f1": float(f_measure(annotated, found, MARGIN)),
                "covering": covering(annotated, found, values.shape[0]),
                "reported": len(found),
                "seconds": time.perf_counter() - t0,
            }
    means = {
        d: {m: float(np.mean([table[s][d][m] for s in table])) for m in ("f1", "covering")}
        for d in dets
    }
    baselines = ("river PageHinkley", "river ADWIN", "zero")
    best = max(baselines, key=lambda d: means[d]["f1"])
    return {
        "config": asdict(config),
        "per_series": table,
        "mean": means,
        "best_baseline": best,
        "f1_margin_over_best_baseline": {
            d: means[d]["f1"] - means[best]["f1"] for d in dets if d.startswith("arcpoint")
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    ap.add_argument("--tune", action="store_true", help="choose settings on synthetic series")
    ap.add_argument("--series", type=int, default=60, help="synthetic series for --tune")
    args = ap.parse_args(argv)
    if args.tune:
        out = tune(args.series)
        print(f"best on {args.series} synthetic series: {out['best']}")
        print(f"zero detector F1 on the same series: {out['zero_f1']:.3f}")
    else:
        out = report()
        names = list(out["mean"])
        print(f"{'series':20s}" + "".join(f"{n[:22]:>24s}" for n in names))
        for s, row in out["per_series"].items():
            cells = [
                f"{row[n]['f1']:.2f} / {row[n]['covering']:.2f} ({row[n]['reported']})"
                for n in names
            ]
            print(f"{s:20s}" + "".join(f"{c:>24s}" for c in cells))
        cells = [f"{out['mean'][n]['f1']:.3f} / {out['mean'][n]['covering']:.3f}" for n in names]
        print(f"{'mean F1 / covering':20s}" + "".join(f"{c:>24s}" for c in cells))
        print(
            f"best baseline: {out['best_baseline']}; F1 margin over it: "
            + ", ".join(f"{k} {v:+.3f}" for k, v in out["f1_margin_over_best_baseline"].items())
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
