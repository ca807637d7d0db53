"""Drift-detection benchmark: Page-Hinkley speed and false alarms, detection on drift streams.

    python benchmarks/bench_drift.py [--json PATH] [--seeds N]

Everything is measured in one run beside river (a test dependency: pip install -e '.[test]').

1. Speed. ``tools.drift.page_hinkley.PageHinkley.detect`` against a loop of river's
   ``drift.PageHinkley.update`` + ``drift_detected`` (how river is used), same parameters (river's
   defaults), same stream, identical detections asserted. Two streams: 100,000 samples of
   N(0, 1) -- with river's defaults an alarm storm, a detection every ~1,600 samples, the worst
   case for a segment-wise batch path -- and a monitoring stream (noise with two level shifts,
   two detections). Best of several runs each; the ratio is the point, absolute rates move with
   the machine's load.
2. Stationary false alarms on 100,000 samples of N(0, 1): our calibrated mode (two-sided, its
   defaults) against river's defaults.
3. Drift streams with known drift points, over several seeds: an online model is trained
   prequentially (predict, then learn) and its error is fed to the detectors:
   ``FriedmanDrift`` ('gra' abrupt + recurring, 'gsg' gradual, 'lea' local expanding) and
   ``ConceptDriftStream`` (Friedman -> feature-swapped Friedman) with river's
   ``LinearRegression`` (absolute error); ``ConceptDriftStream`` over Agrawal 0 -> 2 with a
   ``HoeffdingTreeClassifier`` (0/1 error). The first 500 samples train the model unmonitored.
   A drift counts as detected by the first alarm within 1,000 samples of its start (and before
   the next drift); every other alarm is a false alarm; a miss counts as a delay of 1,000.
   Detectors: ours (calibrated, mode "up": an error that falls is not drift) at its defaults,
   ours at the setting chosen by ``--tune``, river's PageHinkley at its defaults (two-sided),
   river's PageHinkley with mode="up" (the same one-sided choice as ours, otherwise defaults),
   and river's ADWIN at its defaults. No per-stream tuning: ``--tune`` searches a grid on seeds
   100-104 of these streams for the smallest penalised delay with at most a tenth of river
   PageHinkley's false alarms on those seeds (when no setting reaches river's delay there, the
   smallest delay within that budget); this benchmark reports seeds 0..N-1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tools.drift.page_hinkley import PageHinkley

BURN_IN = 500
MAX_DELAY = 1000
STREAM_LENGTH = 12_000
TUNED = {"warmup": 200, "delta_sigmas": 0.2, "threshold_sigmas": 16.0, "clip_sigmas": None}
"""Chosen by ``--tune`` on seeds 100-104 (delay 106 samples, 44 false alarms there, against
river PageHinkley's 100 and 510): the tuned setting does not reach river's delay."""
TUNE_SEEDS = [100, 101, 102, 103, 104]
TUNE_GRID = {
    "warmup": [100, 200, 300],
    "delta_sigmas": [0.05, 0.1, 0.15, 0.2],
    "threshold_sigmas": [15.0, 16.0, 20.0, 25.0, 30.0],
    "clip_sigmas": [None, 4.0],
}


def _river():
    try:
        from river import drift
    except ImportError:  # pragma: no cover - environment without the test extra
        sys.exit("river is required: pip install -e '.[test]'")
    return drift


def river_detections(detector, values: np.ndarray) -> list[int]:
    out = []
    for i, v in enumerate(values.tolist()):
        detector.update(v)
        if detector.drift_detected:
            out.append(i)
    return out


# ------------------------------------------------------------------------------ speed


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()  # CPU time: the machine may be shared, both sides alike
        result = fn()
        best = min(best, time.process_time() - t0)
    return best, result


def speed(values: np.ndarray, label: str) -> dict:
    drift = _river()
    n = values.size
    t_river, river_idx = _best(lambda: river_detections(drift.PageHinkley(), values), 3)
    t_ours, ours_idx = _best(lambda: PageHinkley().detect(values), 9)
    if ours_idx != river_idx:
        raise AssertionError(f"{label}: detections differ from river's")

    def one_by_one() -> list[int]:
        ph = PageHinkley()
        return [i for i, v in enumerate(values.tolist()) if ph.update(v)]

    t_upd, upd_idx = _best(one_by_one, 1)
    if upd_idx != river_idx:
        raise AssertionError(f"{label}: update() detections differ from river's")
    return {
        "stream": label,
        "samples": n,
        "detections": len(river_idx),
        "ph_batch_samples_per_s": n / t_ours,
        "river_ph_updates_per_s": n / t_river,
        "ph_speedup": t_river / t_ours,
        "ph_update_samples_per_s": n / t_upd,  # our streaming path, for reference
    }


def speed_calibrated(values: np.ndarray) -> float:
    t, _ = _best(lambda: PageHinkley.calibrated().detect(values), 9)
    return values.size / t


# ----------------------------------------------------------------------- drift streams


def make_error_stream(kind: str, seed: int) -> tuple[np.ndarray, list[int]]:
    """A model's prequential error on one of river's synthetic drift streams."""
    from river import linear_model, tree
    from river.datasets import synth

    regression = True
    if kind == "friedman_gra":
        ds = synth.FriedmanDrift(drift_type="gra", position=(4000, 8000), seed=seed)
        drifts = [4000, 8000]
    elif kind == "friedman_gsg":
        ds = synth.FriedmanDrift(
            drift_type="gsg", position=(4000, 8000), transition_window=500, seed=seed
        )
        drifts = [4000, 8000]
    elif kind == "friedman_lea":
        ds = synth.FriedmanDrift(drift_type="lea", position=(3000, 6000, 9000), seed=seed)
        drifts = [3000, 6000, 9000]
    elif kind == "cds_friedman":
        ds = synth.ConceptDriftStream(
            stream=synth.Friedman(seed=seed),
            drift_stream=synth.FriedmanDrift(
                drift_type="gra", position=(0, 10**12), seed=seed + 1000
            ),
            position=6000,
            width=100,
            seed=seed,
        )
        drifts = [5950]  # the sigmoid's width is 100 around position 6000
    elif kind == "cds_agrawal":
        ds = synth.ConceptDriftStream(
            stream=synth.Agrawal(classification_function=0, seed=seed),
            drift_stream=synth.Agrawal(classification_function=2, seed=seed),
            position=6000,
            width=100,
            seed=seed,
        )
        drifts = [5950]
        regression = False
    else:
        raise ValueError(kind)
    model = linear_model.LinearRegression() if regression else tree.HoeffdingTreeClassifier()
    errors = np.empty(STREAM_LENGTH)
    for i, (x, y) in enumerate(itertools.islice(ds, STREAM_LENGTH)):
        pred = model.predict_one(x)
        errors[i] = abs(y - pred) if regression else float(pred != y)
        model.learn_one(x, y)
    return errors, drifts


def score(alarms: list[int], drifts: list[int], n: int) -> tuple[list[int | None], int]:
    """Delay per drift (None: missed) and the number of false alarms."""
    used: set[int] = set()
    delays: list[int | None] = []
    for j, start in enumerate(drifts):
        end = min(start + MAX_DELAY, drifts[j + 1] if j + 1 < len(drifts) else n)
        hits = [t for t in alarms if start <= t < end]
        delays.append(hits[0] - start if hits else None)
        if hits:
            used.add(hits[0])
    return delays, sum(1 for t in alarms if t not in used)


def detectors() -> dict[str, Callable[[np.ndarray], list[int]]]:
    drift = _river()
    return {
        "arcpoint_ph_calibrated": lambda x: PageHinkley.calibrated(mode="up").detect(x),
        "arcpoint_ph_tuned": lambda x: PageHinkley.calibrated(mode="up", **TUNED).detect(x),
        "river_ph_default": lambda x: river_detections(drift.PageHinkley(), x),
        "river_ph_up": lambda x: river_detections(drift.PageHinkley(mode="up"), x),
        "river_adwin_default": lambda x: river_detections(drift.ADWIN(), x),
    }


KINDS = ("friedman_gra", "friedman_gsg", "friedman_lea", "cds_friedman", "cds_agrawal")


def drift_streams(seeds: list[int], dets: dict | None = None) -> dict:
    dets = dets or detectors()
    per: dict[str, dict[str, dict]] = {k: {d: {"delays": [], "fa": 0} for d in dets} for k in KINDS}
    for kind in KINDS:
        print(f"  {kind}: seeds {seeds}", file=sys.stderr, flush=True)
        for seed in seeds:
            errors, drifts = make_error_stream(kind, seed)
            monitored = errors[BURN_IN:]
            for name, run in dets.items():
                alarms = [BURN_IN + i for i in run(monitored)]
                delays, fa = score(alarms, drifts, errors.size)
                per[kind][name]["delays"] += delays
                per[kind][name]["fa"] += fa
    table: dict[str, dict] = {}
    for kind in KINDS:
        table[kind] = {}
        for name in dets:
            delays = per[kind][name]["delays"]
            found = [d for d in delays if d is not None]
            table[kind][name] = {
                "drifts": len(delays),
                "detected": len(found),
                "mean_delay": float(np.mean(found)) if found else None,
                "mean_delay_penalised": float(
                    np.mean([MAX_DELAY if d is None else d for d in delays])
                ),
                "false_alarms": per[kind][name]["fa"],
            }
    overall = {}
    for name in dets:
        rows = [table[k][name] for k in KINDS]
        overall[name] = {
            "mean_delay_penalised": float(np.mean([r["mean_delay_penalised"] for r in rows])),
            "detected": sum(r["detected"] for r in rows),
            "drifts": sum(r["drifts"] for r in rows),
            "false_alarms": sum(r["false_alarms"] for r in rows),
        }
    return {"per_stream": table, "overall": overall}


def verdict(overall: dict) -> dict:
    river = {k: v for k, v in overall.items() if k.startswith("river_")}
    best_name = min(river, key=lambda k: river[k]["mean_delay_penalised"])
    fewest_name = min(river, key=lambda k: river[k]["false_alarms"])
    out = {"river_best_delay_detector": best_name, "river_fewest_alarms_detector": fewest_name}
    for ours in ("arcpoint_ph_calibrated", "arcpoint_ph_tuned"):
        o = overall[ours]
        best = river[best_name]
        out[ours] = {
            "delay_vs_river_best": o["mean_delay_penalised"] / best["mean_delay_penalised"],
            "false_alarms_vs_river_best": o["false_alarms"] / max(best["false_alarms"], 1),
            "delay_vs_river_fewest_alarms": o["mean_delay_penalised"]
            / river[fewest_name]["mean_delay_penalised"],
            "false_alarms_vs_river_fewest_alarms": o["false_alarms"]
            / max(river[fewest_name]["false_alarms"], 1),
            "target_met": bool(
                o["mean_delay_penalised"] <= best["mean_delay_penalised"]
                and o["false_alarms"] <= 0.1 * best["false_alarms"]
            ),
        }
    return out


def tune() -> dict:
    """Grid search on the tuning seeds (see the module docstring)."""
    drift = _river()
    grid = [dict(zip(TUNE_GRID, v, strict=True)) for v in itertools.product(*TUNE_GRID.values())]
    dets: dict[str, Callable[[np.ndarray], list[int]]] = {
        "river_ph_default": lambda x: river_detections(drift.PageHinkley(), x)
    }
    for i, params in enumerate(grid):
        dets[f"grid_{i}"] = lambda x, p=params: PageHinkley.calibrated(mode="up", **p).detect(x)
    overall = drift_streams(TUNE_SEEDS, dets)["overall"]
    river = overall.pop("river_ph_default")
    budget = 0.1 * river["false_alarms"]
    rows = [{"params": grid[int(k.split("_")[1])], **v} for k, v in overall.items()]
    within = [r for r in rows if r["false_alarms"] <= budget]
    best = min(within or rows, key=lambda r: r["mean_delay_penalised"])
    return {"river_ph_default": river, "false_alarm_budget": budget, "best": best, "grid": rows}


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON to PATH")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per drift stream (default 5)")
    ap.add_argument("--tune", action="store_true", help="choose our setting on seeds 100-104")
    args = ap.parse_args(argv)
    drift = _river()
    if args.tune:
        tuned = tune()
        print(json.dumps({k: v for k, v in tuned.items() if k != "grid"}, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(tuned, indent=2))
        return 0

    print("speed...", file=sys.stderr, flush=True)
    noise = np.random.default_rng(0).normal(0.0, 1.0, 100_000)
    rng = np.random.default_rng(1)
    monitoring = np.concatenate(
        [rng.normal(0, 0.2, 40_000), rng.normal(1, 0.2, 30_000), rng.normal(0.3, 0.2, 30_000)]
    )
    storm = speed(noise, "N(0,1), river defaults: alarm storm")
    calm = speed(monitoring, "noise sd 0.2 with two level shifts")
    calibrated_rate = speed_calibrated(noise)

    print("stationary false alarms...", file=sys.stderr, flush=True)
    ours_fa = len(PageHinkley.calibrated().detect(noise))
    river_fa = len(river_detections(drift.PageHinkley(), noise))
    extra = [np.random.default_rng(s).normal(0.0, 1.0, 100_000) for s in range(1, 10)]
    ours_fa_more = sum(len(PageHinkley.calibrated().detect(x)) for x in extra)

    print("drift streams...", file=sys.stderr, flush=True)
    seeds = list(range(args.seeds))
    streams = drift_streams(seeds)
    judged = verdict(streams["overall"])

    figures = {
        "ph_batch_samples_per_s": calm["ph_batch_samples_per_s"],
        "river_ph_updates_per_s": calm["river_ph_updates_per_s"],
        "ph_speedup": calm["ph_speedup"],
        "ph_speedup_alarm_storm": storm["ph_speedup"],
        "ph_batch_samples_per_s_alarm_storm": storm["ph_batch_samples_per_s"],
        "river_ph_updates_per_s_alarm_storm": storm["river_ph_updates_per_s"],
        "ph_calibrated_samples_per_s": calibrated_rate,
        "speed": [calm, storm],
        "stationary_false_alarms": ours_fa,
        "river_stationary_false_alarms": river_fa,
        "stationary_false_alarms_9_more_seeds": ours_fa_more,
        "drift_streams": streams,
        "drift_verdict": judged,
        "seeds": seeds,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }

    print("\nPage-Hinkley speed (river's default parameters, identical detections)")
    print(f"{'stream':40s} {'alarms':>6s} {'ours /s':>12s} {'river /s':>12s} {'speedup':>8s}")
    for row in (calm, storm):
        print(
            f"{row['stream']:40s} {row['detections']:6d} {row['ph_batch_samples_per_s']:12.3g} "
            f"{row['river_ph_updates_per_s']:12.3g} {row['ph_speedup']:8.1f}"
        )
    print(f"calibrated mode on N(0,1): {calibrated_rate:.3g} samples/s")
    print("\nFalse alarms on 100,000 samples of N(0,1)")
    print(f"  arcpoint calibrated (both): {ours_fa}   (9 more seeds: {ours_fa_more} in total)")
    print(f"  river PageHinkley defaults: {river_fa}")
    print(f"\nDrift streams, seeds {seeds}: delay (penalised: miss = {MAX_DELAY}) / false alarms")
    names = list(streams["overall"])
    print(f"{'stream':14s}" + "".join(f"{n[:22]:>24s}" for n in names))
    for kind in KINDS:
        cells = []
        for n in names:
            r = streams["per_stream"][kind][n]
            cells.append(
                f"{r['mean_delay_penalised']:7.0f} {r['detected']:2d}/{r['drifts']:<2d} "
                f"FA {r['false_alarms']:4d}"
            )
        print(f"{kind:14s}" + "".join(f"{c:>24s}" for c in cells))
    cells = [
        f"{o['mean_delay_penalised']:7.0f} {o['detected']:2d}/{o['drifts']:<2d} "
        f"FA {o['false_alarms']:4d}"
        for o in streams["overall"].values()
    ]
    print(f"{'overall':14s}" + "".join(f"{c:>24s}" for c in cells))
    print(
        f"\nriver's best delay: {judged['river_best_delay_detector']}; "
        f"fewest false alarms: {judged['river_fewest_alarms_detector']}"
    )
    for ours in ("arcpoint_ph_calibrated", "arcpoint_ph_tuned"):
        v = judged[ours]
        print(
            f"{ours}: delay x{v['delay_vs_river_best']:.2f} and false alarms "
            f"x{v['false_alarms_vs_river_best']:.2f} of river's best; delay "
            f"x{v['delay_vs_river_fewest_alarms']:.2f} and false alarms "
            f"x{v['false_alarms_vs_river_fewest_alarms']:.2f} of river's quietest; "
            f"target met: {v['target_met']}"
        )
    print()
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict | list)}))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
