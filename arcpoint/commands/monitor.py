"""`arcpoint monitor`: run the monitors' graph over the database, once or on a schedule.

One pass runs drift_monitor, feedback_learner and experiment_monitor in that order
(`agents.monitor_graph`). A proposed promotion or rollback stops the pass at an approval
interrupt until an operator answers with `arcpoint approvals`; `ARCPOINT_AUTO_APPROVE=1` approves
it instead (recorded as approved by the setting). Every pass writes a `monitor` trace.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_OK = 0
EXIT_NO_DATA = 1
EXIT_USAGE = 2

_DESCRIPTION = """\
Run the monitors over the database: the drift monitor reads the drift and error reports and
requests a retrain when the retraining policy warrants one; the feedback learner trains a
challenger for every waiting retrain request; the experiment monitor runs the champion/challenger
experiment (shadow, on stored telemetry) and, at its verdict, proposes the promotion or rollback
it calls for. A proposal waits for an operator:

  arcpoint monitor --once                   one pass, then exit
  arcpoint monitor --every 60               a pass every 60 s until Ctrl-C (or --passes N)
  arcpoint monitor --once --only drift_monitor
  arcpoint approvals list                   what waits for an answer
  arcpoint approvals approve ID             resume the waiting pass: the change is applied

Nothing changes the serving model without an approval, unless ARCPOINT_AUTO_APPROVE=1 is set
(off by default). Agents run on Claude when ANTHROPIC_API_KEY is set, else on the offline
reasoner. Model artifacts are written beside the database (<db stem>.models/).

Exit status: 0 when every pass ran, 1 when there is no database or no data in it, 2 on bad
arguments.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from agents.monitor_graph import MONITORS

    p = subparsers.add_parser(
        "monitor",
        help="run the monitors (drift, retraining, experiments) once or on a schedule",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one pass, then exit (the default)")
    when.add_argument(
        "--every", type=float, metavar="SECONDS", help="a pass every SECONDS until interrupted"
    )
    p.add_argument("--passes", type=int, metavar="N", help="with --every: stop after N passes")
    p.add_argument(
        "--only", nargs="+", choices=MONITORS, metavar="AGENT", help="run only these monitors"
    )
    p.add_argument("--db", metavar="PATH", default=None, help="SQLite file")
    p.add_argument("--json", action="store_true", help="print each pass as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arcpoint.commands.ask import model_from_settings, open_for_reading
    from arcpoint.settings import load_settings

    if args.every is not None and args.every <= 0:
        print("error: --every needs a positive number of seconds", file=sys.stderr)
        return EXIT_USAGE
    if args.passes is not None and args.passes < 1:
        print("error: --passes needs a positive count", file=sys.stderr)
        return EXIT_USAGE
    settings = load_settings()
    db = args.db or settings.db
    store, problem = open_for_reading(db, settings)
    if store is None:
        print(problem, file=sys.stderr)
        return EXIT_NO_DATA

    from agents.monitor_graph import MONITORS, MonitorGraph
    from context_api.api import EMPTY_HINT, ContextAPI
    from context_api.traces import TraceStore

    try:
        api = ContextAPI(store, sla_ms=settings.sla_ms)
        if api.is_empty():
            print(f"{db}: {EMPTY_HINT}", file=sys.stderr)
            return EXIT_NO_DATA
        agents = tuple(args.only or MONITORS)
        passes = 1 if args.every is None else args.passes
        done = 0
        with MonitorGraph(
            api,
            model_from_settings(settings),
            traces=TraceStore(store),
            auto_approve=settings.auto_approve,
        ) as graph:
            while passes is None or done < passes:
                if done:
                    time.sleep(args.every)
                result = graph.run(agents)
                done += 1
                print_pass(result, args.json)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        store.close()
    return EXIT_OK


def print_pass(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_json(), indent=2, default=str), flush=True)
        return
    for report in result.reports:
        answer = report["answer"].split("\n\n(Answered by")[0]
        print(f"== {report['agent']} ({', '.join(report['tools_called']) or 'no tools'})")
        print(answer)
    if result.waiting and result.proposal:
        pid = result.proposal["approval_id"]
        print(
            f"\nWAITING FOR APPROVAL {pid}: {result.proposal.get('action')} "
            f"{result.proposal.get('version_id')}. Answer with `arcpoint approvals approve {pid}`"
            f" or `arcpoint approvals reject {pid} --reason TEXT`."
        )
    elif result.applied:
        print(f"\napplied ({result.decision.get('by')}): {result.applied.get('result')}")
    if result.trace_id:
        print(f"[monitor trace {result.trace_id}: arcpoint traces show {result.trace_id}]")
    sys.stdout.flush()
