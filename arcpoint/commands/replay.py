"""`arcpoint replay`: your own request trace through every router, to choose one."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = """\
Replay a request trace (CSV or JSONL: a timestamp, prompt tokens, output tokens and optional
prefix block hashes per request, as public LLM-serving traces carry them) through the predictive
router and the eight baselines (static, round robin, least request, peak EWMA, outlier ejection,
Prequal, C3, llm-d) on the default fleet of LLM engines, request by request, over several seeds.
Bad records are counted and reported, never silently dropped. --load time-scales the trace so
its mean offered load is that share of the fleet's capacity (for the trace's own token mix);
without it the trace runs at its own rate. --chaos adds one fault a third of the way in.
Prints SLO violations (with a 95%% interval over seeds), goodput, TTFT, TPOT, end-to-end
latency, errors and cost per policy; --json writes {"policies": {POLICY: {...}}}.
"""

TIME_UNITS = ("auto", "s", "ms")


def register(sub: argparse._SubParsersAction) -> None:
    from tools.sim.chaos import CHAOS_KINDS

    p = sub.add_parser(
        "replay",
        help="replay your request trace through every routing policy",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", required=True, metavar="PATH", help="CSV or JSONL request trace")
    p.add_argument(
        "--load",
        type=float,
        default=None,
        help="offered load as a share of the fleet's capacity (default: the trace's own rate)",
    )
    p.add_argument("--chaos", choices=CHAOS_KINDS, default=None, help="one fault to inject")
    p.add_argument("--seeds", type=int, default=3, help="seeds (default 3)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument(
        "--time-unit",
        choices=TIME_UNITS,
        default="auto",
        help="unit of numeric timestamps (default: detected from their scale)",
    )
    p.add_argument(
        "--block-tokens",
        type=int,
        default=512,
        help="tokens per prefix hash block (default 512, as Mooncake's traces)",
    )
    p.add_argument(
        "--duration", type=float, default=None, help="seconds to replay (the trace repeats)"
    )
    p.add_argument("--policies", default=None, help="comma-separated policies (default: all nine)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evals.demo_report import format_table
    from evals.replay import POLICIES
    from evals.trace_replay import ReplayConfig, replay_trace
    from evals.workload_files import TraceError, read_trace

    if args.seeds < 1 or args.jobs < 1 or args.block_tokens < 1:
        print("error: --seeds, --jobs and --block-tokens must be positive", file=sys.stderr)
        return 2
    if args.load is not None and not 0 < args.load <= 5:
        print("error: --load must be in (0, 5]", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration <= 0:
        print("error: --duration must be positive", file=sys.stderr)
        return 2
    policies = POLICIES
    if args.policies:
        policies = tuple(p.strip() for p in args.policies.split(",") if p.strip())
    start = time.perf_counter()

    def progress(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        trace, report = read_trace(
            args.trace, time_unit=args.time_unit, block_tokens=args.block_tokens
        )
    except TraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    progress(report.summary())
    for line in report.examples:
        progress(f"  rejected {line}")
    config = ReplayConfig(
        load=args.load,
        chaos=args.chaos,
        seeds=args.seeds,
        duration_s=args.duration,
        policies=policies,
        jobs=args.jobs,
    )
    try:
        result = replay_trace(trace, config, progress)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from tools.sim.spec import DEFAULT_FLEET

    scen = result.scenario
    w = trace
    load = w.offered_load(DEFAULT_FLEET) if args.load is None else args.load
    print(
        f"\n{w.name}: {len(w):,} requests, {report.rejected:,} rejected; replayed "
        f"{scen.duration_s:,.0f} s at {load:.0%} of the default fleet's capacity"
        + (f", with {args.chaos} from {scen.chaos[0].start_s:.0f} s" if scen.chaos else "")
        + f", {args.seeds} seed(s)\n"
    )
    print(format_table({w.name: result.by_policy()}, policies))
    print(
        "Means over seeds; SLO viol % +- the half-width of its 95% interval (Student t). "
        "* lowest mean. Latencies in ms (s where marked); cost in micro-dollars per request."
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
        print(f"JSON written to {args.json}")
    return 0
