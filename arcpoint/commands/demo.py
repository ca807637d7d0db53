"""`arcpoint demo`: the main job, end to end on a simulated fleet."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HELP = """\
Train the latency forecaster on simulated fleet history, then replay every scenario (latency
spike, backend failure, cascading failure, traffic surge, gradual drift, anomaly burst, slow
replica, KV pressure, and the Azure conversation and code traces) through the predictive router
and the eight baselines (static, round robin, least request, peak EWMA, outlier ejection,
Prequal, C3, llm-d), request by request on a request-level LLM-serving simulation, over several
seeds. Prints one table (scenario x policy: SLO violation % with its 95% interval over seeds,
goodput, TTFT p50/p99, TPOT p99, end-to-end p99, errors, cost, flaps, escalations), the
predictive router against the best baseline per scenario, and the forecaster's hold-out figures.
The predictive router's decisions and their outcomes are written to the SQLite store.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train, replay every chaos scenario, print the table",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", default=None, help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--history-hours",
        type=float,
        default=6.0,
        help="hours of simulated telemetry to train on (default 6)",
    )
    p.add_argument("--trees", type=int, default=100, help="trees in the forest (default 100)")
    p.add_argument(
        "--scenarios", default=None, help="comma-separated scenario names (default: all ten)"
    )
    p.add_argument(
        "--policies",
        default=None,
        help="comma-separated policies (default: predictive and all eight baselines)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for history, training and replay")
    p.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="seeds per scenario; figures are means with a 95%% interval (default 3)",
    )
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also log each alert as it fires (they are always stored: `arcpoint alerts`)",
    )
    p.add_argument(
        "--escalation-mode",
        choices=("advisory", "override"),
        default="advisory",
        help="advisory (default): the router agent's choice is recorded and scored, the request "
        "keeps the policy's pick; override: the agent's accepted choice is routed",
    )
    p.add_argument(
        "--no-decisions",
        action="store_true",
        help="do not write per-request decisions to the store",
    )
    p.set_defaults(func=run)


def _split(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def run(args: argparse.Namespace) -> int:
    from arcpoint.settings import load_settings
    from evals.demo import DemoConfig, run_demo
    from evals.demo_report import format_escalation, format_monitor, format_table, format_versus

    settings = load_settings()
    if not args.verbose:
        # The alert log channel would interleave dozens of lines with the progress; the alerts
        # themselves are stored and summarised below. Critical alerts are logged at CRITICAL,
        # so the level must sit above every level the channel uses.
        logging.getLogger("arcpoint.alerts").setLevel(logging.CRITICAL + 1)
    if args.trees < 1 or args.history_hours <= 0 or args.jobs < 1 or args.seeds < 1:
        print(
            "error: --trees, --history-hours, --jobs and --seeds must be positive", file=sys.stderr
        )
        return 2
    config = DemoConfig(
        db=args.db or settings.db,
        history_hours=args.history_hours,
        n_estimators=args.trees,
        seed=args.seed,
        seeds=args.seeds,
        jobs=args.jobs,
        record_decisions=not args.no_decisions,
        escalation_mode=args.escalation_mode,
    )
    if (s := _split(args.scenarios)) is not None:
        config = DemoConfig(**{**config.__dict__, "scenarios": s})
    if (p := _split(args.policies)) is not None:
        config = DemoConfig(**{**config.__dict__, "policies": p})

    start = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        demo = run_demo(config, progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    rep = demo.report
    print()
    print(format_table(demo.by_cell(), config.policies))
    print(
        f"Means over {config.seeds} seed(s) per scenario; SLO viol % +- the half-width of its "
        "95% interval (Student t). * lowest mean. Latencies in ms (s where marked); cost in "
        "micro-dollars per request."
    )
    versus = format_versus(demo)
    if versus:
        print("\nThe predictive router against the best baseline (paired over seeds):")
        print(versus)
    escalation = format_escalation(demo)
    if escalation:
        mode = (
            "advisory: the agent's choice is recorded and scored, the request keeps the "
            "policy's pick"
            if config.escalation_mode == "advisory"
            else "override: the agent's accepted choice is routed"
        )
        from agents.router import ESCALATION_CAP

        cap = f"hard cap {ESCALATION_CAP:.0%} of requests"
        print(f"\nEscalations to the router agent (offline reasoner; {cap}; {mode}):")
        print(escalation)
    monitor = format_monitor(demo)
    if monitor:
        print("\nFleet monitor during the predictive runs (see `arcpoint alerts`):")
        print(monitor)
    print()
    print(
        f"Forecaster {demo.forecaster.version_id} (p95 TTFT 5 min ahead), "
        f"hold-out of {rep.n_holdout:,} rows:"
    )
    print(
        f"  forest          MAE {rep.forest.mae_ms:8.1f} ms  RMSE {rep.forest.rmse_ms:8.1f} ms"
        f"  R2 {rep.forest.r2:6.3f}  MAPE {rep.forest.mape_pct:5.1f}%"
    )
    print(
        f"  persistence     MAE {rep.persistence.mae_ms:8.1f} ms  "
        f"RMSE {rep.persistence.rmse_ms:8.1f} ms  R2 {rep.persistence.r2:6.3f}"
    )
    print(
        f"  moving average  MAE {rep.moving_average.mae_ms:8.1f} ms  "
        f"RMSE {rep.moving_average.rmse_ms:8.1f} ms  R2 {rep.moving_average.r2:6.3f}"
    )
    print(
        f"  MAE vs persistence: {100 * rep.mae_improvement_vs_persistence:+.1f}% better; "
        f"interval coverage {100 * rep.interval.holdout_coverage:.1f}% "
        f"(nominal {100 * rep.interval.nominal_coverage:.0f}%)"
    )
    print(
        f"\nDecisions written to {config.db}: {demo.decisions_written:,} "
        f"(outcomes {demo.outcomes_written:,}), run {demo.run_id}. "
        f"Total {time.perf_counter() - start:.0f} s."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(demo.to_json(), indent=2))
        print(f"JSON written to {args.json}")
    return 0
