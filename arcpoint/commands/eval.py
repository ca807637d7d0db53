"""`arcpoint eval`: replay scenario files and real-data benchmarks, score them, gate regressions;
and score the agents on their cases."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path

EVALS_DIR = Path(__file__).resolve().parents[2] / "evals"

HELP = """\
Replay every scenario file (or folder of them: its *.yaml files, not recursively) end to end
and score it. A simulated scenario runs through the predictive router with the whole loop
(escalation to the router agent, fleet monitor with anomaly alerts, drift detection; with
`loop:` in the file, the closed loop: late outcomes, retraining, experiments, promotion) and
through each reactive baseline; a telemetry scenario (e.g. NAB series) replays observe-only
through the monitor; `nab_benchmark` and `drift_benchmark` entries run `arcpoint nab` and
benchmarks/bench_drift.py. Scores: SLA violation %, p95 latency, mean cost, flaps, escalation
rate and the escalations' outcomes, anomaly precision and recall, drift detection delay and
false alarms, and each expected property of the scenario as pass or fail.

Writes OUT/report.json, OUT/report.md (headline table first), OUT/plots/*.png and, per
scenario, the predictive run's store OUT/work/<name>.db (try `arcpoint ask --db` on it).
Progress goes to stderr, log lines (alerts included) to OUT/eval.log.

Exit status: 0 when every entry ran and met its thresholds (THRESHOLDS file), 1 when one
broke a threshold or failed to run, 2 on invalid input (a bad scenario or thresholds file).

Suites: evals/scenarios/ (one per chaos kind, the closed loop, an Azure-trace one, a NAB one),
evals/scenarios/ci/ (small, under 2 minutes), evals/scenarios/real/ (NAB + drift benchmarks
and the real-data scenarios).
"""

AGENTS_HELP = """\
Score the agents on their cases (evals/agent_cases/*.yaml by default): each case sets up a
state (a scenario replayed into a fresh store up to a time, or an ingested telemetry file, plus
named setups), asks its thread's questions then its own, and checks the
tools called (subset or superset), the facts the answer must state (ids and figures, matched
against the tools' own results) and the claims it must not make. The offline reasoner is always
scored; Claude too with --llm claude (needs ANTHROPIC_API_KEY). A Claude run is recorded
(every HTTP request and response, no headers) under OUT/recordings/ or --record DIR and can be
replayed and re-scored without the API with --replay DIR; recordings committed under
evals/agent_cases/recordings/ are replayed by the test suite. Exit status 1 when a model passes
fewer than --min-pass-pct of the cases (default 90%), 2 on invalid cases.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="replay scenario suites and agent cases, score them, gate regressions",
        description="Eval suites. `arcpoint eval run --help`, `arcpoint eval agents --help`.",
    )
    esub = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    r = esub.add_parser(
        "run",
        help="replay scenario files and benchmarks, write the report, gate on thresholds",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="scenario files or folders (default: evals/scenarios/)",
    )
    r.add_argument(
        "--llm",
        choices=("offline", "claude", "none"),
        default=None,
        help="router agent model for escalations: offline (default without a key), claude "
        "(default with ANTHROPIC_API_KEY), none (deterministic policy only)",
    )
    r.add_argument("--out", default="eval-out", help="output folder (default: eval-out)")
    r.add_argument(
        "--thresholds",
        default=None,
        help="thresholds file (default: evals/thresholds.yaml); 'none' to gate nothing",
    )
    r.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    r.add_argument(
        "--no-record",
        action="store_true",
        help="do not write the predictive runs to stores under OUT/work/",
    )
    r.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    r.add_argument(
        "--json", action="store_true", help="print report.json to stdout (progress stays on stderr)"
    )
    r.set_defaults(func=run_scenarios)

    a = esub.add_parser(
        "agents",
        help="score the agents (offline reasoner; Claude when asked) on their cases",
        description=AGENTS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="case files or folders (default: evals/agent_cases/)",
    )
    a.add_argument(
        "--llm",
        choices=("offline", "claude"),
        action="append",
        default=None,
        help="model(s) to score; repeatable (default: offline, plus claude when a key is set)",
    )
    a.add_argument("--out", default="eval-out/agents", help="output folder")
    a.add_argument(
        "--replay",
        metavar="DIR",
        default=None,
        help="re-score Claude from recordings in DIR (no API calls)",
    )
    a.add_argument(
        "--record",
        metavar="DIR",
        default=None,
        help="with --llm claude: write each case's recording to DIR (default OUT/recordings); "
        "commit them under evals/agent_cases/recordings/ and the test suite replays them",
    )
    a.add_argument(
        "--min-pass-pct",
        type=float,
        default=90.0,
        metavar="PCT",
        help="exit non-zero when a model passes fewer than PCT%% of the cases (default 90)",
    )
    a.add_argument("--json", action="store_true", help="print the results as JSON to stdout")
    a.set_defaults(func=run_agents)
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _log_to(out: Path) -> None:
    """Log lines (alerts, warnings) to OUT/eval.log instead of the terminal."""
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "eval.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _llm(choice: str | None) -> str | None:
    from agents.llm import anthropic_key_configured

    if choice is None:
        return "claude" if anthropic_key_configured() else "offline"
    if choice == "claude" and not anthropic_key_configured():
        print("error: --llm claude needs ANTHROPIC_API_KEY", file=sys.stderr)
        return None
    return choice


def _command(args: argparse.Namespace, llm: str) -> str:
    """The command line that reproduces this run (for the report)."""
    parts = ["arcpoint", "eval", "run", *args.paths, "--llm", llm, "--out", args.out]
    if args.thresholds:
        parts += ["--thresholds", args.thresholds]
    if args.no_record:
        parts.append("--no-record")
    return " ".join(shlex.quote(p) for p in parts)


def run_scenarios(args: argparse.Namespace) -> int:
    from arcpoint.settings import load_settings
    from evals.gate import (
        ThresholdsError,
        apply_thresholds,
        gate_failures,
        load_thresholds,
        lost_to_baselines,
    )
    from evals.harness import run_suite
    from evals.report import benchmark_table, headline_table, report_json, write_report
    from evals.results import HarnessConfig
    from evals.scenario_file import ScenarioFileError, describe, load_paths

    if args.jobs < 1:
        print("error: --jobs must be at least 1", file=sys.stderr)
        return 2
    llm = _llm(args.llm)
    if llm is None:
        return 2
    paths = args.paths or [str(EVALS_DIR / "scenarios")]
    try:
        entries = load_paths(paths)
    except ScenarioFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    thresholds = None
    th_path = args.thresholds or str(EVALS_DIR / "thresholds.yaml")
    if th_path != "none":
        try:
            thresholds = load_thresholds(th_path)
        except ThresholdsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out = Path(args.out)
    _log_to(out)
    command = _command(args, llm)
    _progress(f"{len(entries)} entries, router agent: {llm}, output: {out}/")
    for e in entries:
        _progress(f"  {describe(e)}")
    t0 = time.perf_counter()
    suite = run_suite(
        entries,
        HarnessConfig(
            out_dir=out,
            llm=llm,  # type: ignore[arg-type]
            jobs=args.jobs,
            record=not args.no_record,
            claude_model_id=load_settings().router_model,
        ),
        progress=_progress,
    )
    if thresholds is not None:
        apply_thresholds(thresholds, suite.entries)
    if args.no_plots:
        (out / "report.json").write_text(json.dumps(report_json(suite, command), indent=2) + "\n")
        from evals.report import report_markdown

        (out / "report.md").write_text(report_markdown(suite, command))
    else:
        write_report(suite, out, command)
    failures = gate_failures(suite.entries)
    if args.json:
        print(json.dumps(report_json(suite, command), indent=2))
    else:
        if any(e.kind in ("scenario", "telemetry") for e in suite.entries):
            print(headline_table(suite.entries))
        bench = benchmark_table(suite.entries)
        if bench:
            print(bench)
    _progress(f"report: {out / 'report.md'} ({time.perf_counter() - t0:.0f} s)")
    for line in lost_to_baselines(suite.entries):  # gated or not, a loss is never hidden
        _progress(line)
    if failures:
        _progress(f"GATE FAILED ({len(failures)}):")
        for f in failures:
            _progress(f"  {f}")
        return 1
    _progress("gate: pass" if thresholds is not None else "gate: no thresholds applied")
    return 0


def run_agents(args: argparse.Namespace) -> int:
    from evals.agent_eval import AgentCaseError, load_cases, run_cases

    paths = args.paths or [str(EVALS_DIR / "agent_cases")]
    try:
        cases = load_cases(paths)
    except AgentCaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from agents.llm import anthropic_key_configured

    models = args.llm or (["offline", "claude"] if anthropic_key_configured() else ["offline"])
    if args.replay:
        models = [m for m in models if m != "claude"] + ["claude-replay"]
    elif "claude" in models and not anthropic_key_configured():
        print("error: --llm claude needs ANTHROPIC_API_KEY (or --replay DIR)", file=sys.stderr)
        return 2
    from arcpoint.settings import load_settings

    out = Path(args.out)
    _log_to(out)
    result = run_cases(
        cases,
        models=models,
        out_dir=out,
        replay_dir=Path(args.replay) if args.replay else None,
        record_dir=Path(args.record) if args.record else None,
        claude_model_id=load_settings().model,
        progress=_progress,
    )
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.table())
    _progress(f"report: {out / 'agents.json'}, {out / 'agents.md'}")
    low = {
        m: v
        for m, v in result.by_model().items()
        if 100.0 * v["passed"] / v["cases"] < args.min_pass_pct
    }
    for m, v in low.items():
        _progress(f"GATE FAILED: {m} passed {v['passed']}/{v['cases']} (< {args.min_pass_pct:g}%)")
    return 1 if low else 0
