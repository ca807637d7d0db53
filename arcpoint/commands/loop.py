"""`arcpoint loop`: the closed loop, end to end, on a gradual-drift scenario."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HELP = """\
Replay a gradual-drift scenario through the predictive router with the feedback loop around it,
and print the loop's timeline:

  - when the drift began (ground truth from the scenario) and when it was detected (delay);
  - the retraining decision and the challenger trained on the recent window (model version with
    its parent, training window and hold-out metrics);
  - the experiment, champion against challenger (shadow mode: both predict, the champion routes;
    or split mode: a stable hash of the request id picks the arm), judged at every look with an
    alpha-spending rule: verdict, p-value, confidence interval, samples per arm, looks;
  - the proposed promotion, which waits for an operator's approval (`arcpoint approvals`);
    with --auto-approve (or ARCPOINT_AUTO_APPROVE=1) the replay approves it itself, recorded as
    such: then the promotion (the router swaps to the new model without a restart), the
    post-promotion watch, and MAE before and after (the previous champion and the promoted model
    on the same requests).

The scenario: flat traffic (16 rps); from hour 1 the primary backend's service time grows to
x2.5 over an hour, then stays there. The first champion is trained on simulated history that
ends where the scenario starts. Outcomes are kept for a seeded sample of requests per tick
(3 by default); an outcome is the backend's measured p95 five minutes after the decision, so it
arrives five minutes late. Experiments compare 60 s blocks (mean absolute error per block), so
that correlated neighbouring requests are not counted as independent. Everything lands in the
SQLite store: decisions, outcomes, drift reports, model versions and activations, experiments
with every look, alerts and events (`arcpoint models` lists the versions and rolls back).
Model artifacts go to <db stem>.models/ beside the database.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "loop",
        help="run the closed loop on a gradual-drift scenario and print its timeline",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--db", default=None, help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)")
    p.add_argument("--json", metavar="PATH", help="also write the timeline as JSON to PATH")
    p.add_argument(
        "--hours", type=float, default=4.0, help="scenario length in hours (default 4; >= 2.5)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for history, scenario and loop")
    p.add_argument(
        "--mode",
        choices=("shadow", "split"),
        default="shadow",
        help="experiment mode (default shadow: both predict, the champion routes)",
    )
    p.add_argument("--trees", type=int, default=60, help="trees in each forest (default 60)")
    p.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve the loop's proposed model changes in the replay (default: "
        "ARCPOINT_AUTO_APPROVE, off): recorded as approved by the setting",
    )
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agents.feedback_loop import LoopConfig
    from arcpoint.settings import load_settings
    from evals.loop_run import LoopRunConfig, format_timeline, run_loop

    if not 2.5 <= args.hours <= 24:
        print("error: --hours must lie in [2.5, 24] (the drift starts at hour 1)", file=sys.stderr)
        return 2
    if args.trees < 1:
        print("error: --trees must be >= 1", file=sys.stderr)
        return 2
    settings = load_settings()
    db = args.db or settings.db
    auto = bool(args.auto_approve or settings.auto_approve)
    config = LoopRunConfig(
        db=db,
        hours=args.hours,
        seed=args.seed,
        champion_trees=args.trees,
        loop=LoopConfig(mode=args.mode, n_estimators=args.trees, seed=args.seed, auto_approve=auto),
    )
    # Alerts are stored and shown by `arcpoint alerts`; the loop's progress already names them.
    logging.getLogger("arcpoint.alerts").addHandler(logging.NullHandler())
    start = time.perf_counter()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        result = run_loop(config, progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_timeline(result.timeline))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.timeline, indent=2, allow_nan=False) + "\n")
        progress(f"timeline written to {path}")
    return 0
