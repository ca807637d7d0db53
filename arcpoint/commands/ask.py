"""`arcpoint ask "QUESTION"`: one question to the operator graph, answered from the database.

Read-mostly: it never creates a database and says what to run when there is nothing to answer
from. The answer comes from Claude when ANTHROPIC_API_KEY is set, else from the offline reasoner
(which says so). Every answer writes a reasoning trace (`arcpoint traces show ID`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.llm.base import LLMModel
    from arcpoint.settings import Settings

EXIT_OK = 0
EXIT_NO_DATA = 1
EXIT_USAGE = 2

AGENTS = ("operator", "router", "drift_monitor", "feedback_learner", "experiment_monitor")
MONITORS = ("drift_monitor", "feedback_learner", "experiment_monitor")

_DESCRIPTION = """\
Ask Arcpoint one question about the fleet and get an answer grounded in the database, e.g.

  arcpoint ask "What's the current state of our model fleet?"
  arcpoint ask "Which backend should I use for a premium request right now?"
  arcpoint ask "Why did quality drop in the last hour?"      (or "... at 14:00?", UTC)
  arcpoint ask "What capacity risks are we taking in the next 5 minutes?"
  arcpoint ask "Is the forecaster drifting?"
  arcpoint ask "How are the experiments doing?"
  arcpoint ask "Why was decision D routed to B?"

"Now" is the newest telemetry in the database. The question goes to the agent that owns it
(operator, router, drift_monitor, feedback_learner, experiment_monitor), which calls the
context API's tools and answers from their results. With ANTHROPIC_API_KEY set the agents run
on Claude; otherwise on the offline reasoner, a deterministic rule set that says so in every
answer. --json prints {"answer", "trace_id", "tools_called", "llm", "evidence", ...}.
--monitor NAME runs one monitor's pass instead, as `arcpoint monitor --once --only NAME` does
(it may act within policy; a proposed model change waits for `arcpoint approvals`).

Exit status: 0 answered, 1 no database or no data in it (the message says what to run),
2 bad arguments.
"""

NO_DB = (
    "No Arcpoint database at {db}. Run `arcpoint demo` to simulate a fleet and fill one "
    "(or `arcpoint ingest FILE` to load telemetry), then ask again; use --db PATH for another file."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ask",
        help="ask one question about the fleet (answer from the database)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("question", nargs="?", default="", help="the question, in quotes")
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)",
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument(
        "--agent", choices=AGENTS, default=None, help="send the question to this agent"
    )
    parser.add_argument(
        "--monitor",
        choices=MONITORS,
        default=None,
        help=(
            "run one monitor's pass instead of asking (see `arcpoint monitor`): it may act "
            "within policy; traced as kind monitor"
        ),
    )
    parser.add_argument(
        "--thread",
        metavar="ID",
        default=None,
        help="add the question to a chat thread (history is kept; see `arcpoint chat --thread`)",
    )
    parser.set_defaults(func=run)


def model_from_settings(settings: Settings) -> LLMModel:
    """Claude when a key is configured, else the offline reasoner."""
    key = (
        settings.anthropic_api_key.get_secret_value().strip() if settings.anthropic_api_key else ""
    )
    if not key:
        from agents.offline import OfflineModel

        return OfflineModel()
    from agents.llm.claude import ClaudeConfig, ClaudeModel
    from arcpoint.settings import ConfigurationError

    try:
        return ClaudeModel(
            ClaudeConfig(model_id=settings.model),
            api_key=key,
            base_url=settings.anthropic_base_url,
        )
    except ValueError as exc:
        raise ConfigurationError(f"ANTHROPIC_BASE_URL: {exc}") from None


def open_for_reading(db: str, settings: Settings) -> tuple[Any, str | None]:
    """(the Store at `db`, None), or (None, why not) when there is no such file or it is not
    Arcpoint's. Never creates a file and never adds tables to a foreign one."""
    problem = check_database(db)
    if problem is not None:
        return None, problem
    from context_api.open_db import NotAnArcpointDatabase, open_existing

    try:
        store = open_existing(
            db, outcome_max_age_s=settings.outcome_max_age_s, bounds=settings.bounds
        )
    except NotAnArcpointDatabase as exc:
        return None, f"Cannot open {db}: {exc}"
    return store, None


def router_model_from_settings(settings: Settings) -> LLMModel:
    """The escalation model: Claude's fast model (`ARCPOINT_ROUTER_MODEL`) when a key is set,
    with a short answer budget and no retries beyond the deadline; else the offline reasoner."""
    key = (
        settings.anthropic_api_key.get_secret_value().strip() if settings.anthropic_api_key else ""
    )
    if not key:
        from agents.offline import OfflineModel

        return OfflineModel()
    from agents.llm.claude import ClaudeConfig, ClaudeModel
    from arcpoint.settings import ConfigurationError

    try:
        return ClaudeModel(
            ClaudeConfig(
                model_id=settings.router_model,
                max_tokens=400,
                timeout_s=settings.escalation_deadline_s,
                max_retries=1,
            ),
            api_key=key,
            base_url=settings.anthropic_base_url,
        )
    except ValueError as exc:
        raise ConfigurationError(f"ANTHROPIC_BASE_URL: {exc}") from None


def check_database(db: str) -> str | None:
    """Why this file cannot be asked about (None when it can). Never creates the file."""
    if db != ":memory:" and not Path(db).is_file():
        return NO_DB.format(db=db)
    return None


def run(args: argparse.Namespace) -> int:
    from arcpoint.settings import load_settings

    settings = load_settings()
    db = args.db or settings.db
    question = (args.question or "").strip()
    if not question and not args.monitor:
        print("error: give a question (or --monitor NAME)", file=sys.stderr)
        return EXIT_USAGE
    problem = check_database(db)
    if problem is None:
        return _answer(args, settings, db, question)
    return _report_no_data(args, problem, settings)


def _report_no_data(args: argparse.Namespace, message: str, settings: Settings) -> int:
    if args.json:
        llm = "claude" if settings.anthropic_api_key else "offline"
        print(
            json.dumps(
                {
                    "answer": message,
                    "trace_id": None,
                    "tools_called": [],
                    "llm": llm,
                    "evidence": [],
                    "error": "no_data",
                },
                indent=2,
            )
        )
    else:
        print(message, file=sys.stderr)
    return EXIT_NO_DATA


def _answer(args: argparse.Namespace, settings: Settings, db: str, question: str) -> int:
    from agents.graph import OperatorGraph, TraceNotRecorded
    from context_api.api import EMPTY_HINT, ContextAPI
    from context_api.traces import TraceStore

    store, problem = open_for_reading(db, settings)
    if store is None:
        return _report_no_data(args, problem or f"Cannot open {db}", settings)
    try:
        api = ContextAPI(store, sla_ms=settings.sla_ms)
        if api.is_empty():
            return _report_no_data(args, f"{db}: {EMPTY_HINT}", settings)
        model = model_from_settings(settings)
        if args.monitor:
            return _monitor(args, api, model, settings, store)
        if model.name != "offline" and not args.json:
            print(
                f"(asking {model.name}; an answer within {settings.ask_deadline_s:g} s, "
                "from the offline reasoner if the model has not answered by then)",
                file=sys.stderr,
            )
        with OperatorGraph(
            api,
            model,
            checkpoint_db=db if args.thread else None,
            traces=TraceStore(store),
            deadline_s=settings.ask_deadline_s,
        ) as graph:
            try:
                result = graph.ask(question, thread_id=args.thread, agent=args.agent)
            except TraceNotRecorded as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_NO_DATA
    finally:
        store.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=_json_default))
    else:
        print(result.answer)
        tail = f"[{result.agent} agent, {result.llm} ({result.model})"
        if result.trace_id:
            tail += f", trace {result.trace_id}: arcpoint traces show {result.trace_id}"
        print(f"\n{tail}]", file=sys.stderr)
    return EXIT_OK


def _monitor(args: argparse.Namespace, api: Any, model: Any, settings: Any, store: Any) -> int:
    from agents.monitor_graph import MonitorGraph
    from arcpoint.commands.monitor import print_pass
    from context_api.traces import TraceStore

    with MonitorGraph(
        api, model, traces=TraceStore(store), auto_approve=settings.auto_approve
    ) as graph:
        result = graph.run((args.monitor,))
    print_pass(result, args.json)
    return EXIT_OK


def _json_default(value: Any) -> Any:
    return str(value)
