"""`arcpoint chat`: an interactive session with the operator graph, one question per line.

The conversation is checkpointed in the database (LangGraph's SQLite saver), so `--thread ID`
resumes it later with its history. It reads standard input line by line and ends cleanly at end
of input, so piping questions in works and a CI job without input exits at once.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from agents.graph import OperatorGraph

EXIT_OK = 0
EXIT_NO_DATA = 1

_DESCRIPTION = """\
Chat with Arcpoint about the fleet. Type a question and press Enter; the answer is grounded in
the database (the state `arcpoint demo` or `arcpoint ingest` left there). Examples:

  What's the current state of our model fleet?
  Which backend should I use for a premium request right now?
  Why did quality drop in the last hour?        (or: ... at 14:00?  times are UTC)
  What capacity risks are we taking in the next 5 minutes?
  Is the forecaster drifting?  How are the experiments doing?
  Why was decision D routed to B?

Commands: /history (this thread's messages), /thread (its id), /help, /quit (or end of input,
Ctrl-D). The thread id is printed at the start: `arcpoint chat --thread ID` resumes it.
Answers come from Claude when ANTHROPIC_API_KEY is set, else from the offline reasoner (which
says so). Each answer writes a reasoning trace (`arcpoint traces list --kind chat`).
"""

HELP = """Commands: /history  /thread  /help  /quit   (end of input also quits)"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="interactive chat about the fleet (resumable threads)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)",
    )
    parser.add_argument(
        "--thread", metavar="ID", default=None, help="resume this conversation (default: a new one)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from arcpoint.commands.ask import model_from_settings, open_for_reading
    from arcpoint.settings import load_settings

    settings = load_settings()
    db = args.db or settings.db
    store, problem = open_for_reading(db, settings)
    if store is None:
        print(problem, file=sys.stderr)
        return EXIT_NO_DATA

    from agents.graph import OperatorGraph
    from context_api.api import EMPTY_HINT, ContextAPI
    from context_api.traces import TraceStore

    try:
        api = ContextAPI(store, sla_ms=settings.sla_ms)
        if api.is_empty():
            print(f"{db}: {EMPTY_HINT}", file=sys.stderr)
            return EXIT_NO_DATA
        model = model_from_settings(settings)
        thread = args.thread or f"chat-{uuid.uuid4().hex[:12]}"
        with OperatorGraph(
            api,
            model,
            checkpoint_db=db,
            traces=TraceStore(store),
            deadline_s=settings.ask_deadline_s,
        ) as graph:
            return session(graph, thread, sys.stdin, sys.stdout, resumed=args.thread is not None)
    finally:
        store.close()


def session(
    graph: OperatorGraph, thread: str, stdin: TextIO, stdout: TextIO, *, resumed: bool
) -> int:
    """The read-answer loop (separate from `run` so tests can drive it with StringIO)."""
    interactive = stdin.isatty()
    history = graph.history(thread)
    who = (
        "offline reasoner"
        if graph.model.name == "offline"
        else f"{graph.model.name} ({graph.model.model_id})"
    )
    if resumed and history:
        print(f"Resuming thread {thread}: {len(history)} earlier messages.", file=stdout)
        last_q = next((m["content"] for m in reversed(history) if m["role"] == "user"), None)
        if last_q:
            print(f"Last question: {last_q}", file=stdout)
    elif resumed:
        print(f"Thread {thread} has no messages yet; starting it.", file=stdout)
    else:
        print(f"New thread {thread} (resume with: arcpoint chat --thread {thread})", file=stdout)
    print(f"Answers by the {who}. {HELP}", file=stdout)
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = stdin.readline()
        if not line:  # end of input
            if interactive:
                stdout.write("\n")
            break
        question = line.strip()
        if not question:
            continue
        if question in ("/quit", "/exit", "/q"):
            break
        if question == "/help":
            print(HELP, file=stdout)
            continue
        if question == "/thread":
            print(thread, file=stdout)
            continue
        if question == "/history":
            for m in graph.history(thread):
                print(f"{m['role']}> {m['content']}", file=stdout)
            continue
        if question.startswith("/"):  # a mistyped command is not a question
            print(f"arcpoint> unknown command {question.split()[0]!r}. {HELP}", file=stdout)
            continue
        try:
            result = graph.ask(question, thread_id=thread)
        except Exception as exc:  # keep the session alive; the trace has the details
            print(f"arcpoint> error: {type(exc).__name__}: {exc}", file=stdout)
            continue
        print(f"arcpoint> {result.answer}", file=stdout)
        trace = f", trace {result.trace_id}" if result.trace_id else ""
        print(f"  [{result.agent} agent{trace}]", file=stdout)
        stdout.flush()
    print(f"Bye. Resume with: arcpoint chat --thread {thread}", file=stdout)
    return EXIT_OK
