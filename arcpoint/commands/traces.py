"""`arcpoint traces`: list, show, search, export and verify the reasoning traces.

Read commands never create a database. `verify` is the auditor's check that nobody edited,
deleted or reordered a trace in the SQLite file since it was written; it exits non-zero
(3) and names the first bad trace when someone did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from context_api.trace_records import StoredTrace, TraceStep, TraceSummary
    from context_api.traces import TraceStore

EXIT_OK = 0
EXIT_NO_DB = 1
EXIT_USAGE = 2
EXIT_TAMPERED = 3

_DESCRIPTION = """\
Reasoning traces: one per escalated routing decision, chat turn and monitor run, with every
step (graph node, tool call with arguments/result/duration, LLM turn with model, tokens,
latency and stop reason), the final answer or decision, the fallback reason, the prompt hash
and the model versions in force. Traces are append-only and hash-chained in the SQLite file.

  arcpoint traces list [--kind K] [--since T] [--backend B] [--search TEXT] [--limit N] [--json]
  arcpoint traces show ID [--json]   (ID, or its unique start or end: 6+ characters)
  arcpoint traces export [--format jsonl|otel] [--out PATH]
  arcpoint traces verify [--anchor [SEQ:]HASH] [--json]

Exit status: 0 on success, 1 when the database is missing or not an Arcpoint database,
2 on bad arguments or an unknown trace id, 3 when `verify` finds tampering.
"""

_VERIFY_HELP = """\
Walk the hash chain from the first trace. For each one: recompute its hash from its stored
content and the previous hash, check the link to the trace before it, the seq order, and that
the copied columns and the trace_steps rows match the hashed content. On tampering (a trace
edited, deleted or reordered directly in the file) prints the first bad trace and exits 3.

Deleting the newest traces *and* resetting SQLite's AUTOINCREMENT counter cannot be seen from
the file alone: publish the head hash this command prints somewhere else, and later pass it
back with --anchor SEQ:HASH to check that the chain still contains it.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "traces",
        help="list, show, search, export and verify reasoning traces",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="traces_command", metavar="ACTION")

    def add(name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=description or help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--db", metavar="PATH", default=None, help="SQLite file (default: $ARCPOINT_DB)"
        )
        return p

    p = add("list", "list traces, newest first (filters combine)")
    p.add_argument("--kind", metavar="K", help="escalation, chat, monitor, ...")
    p.add_argument(
        "--since", metavar="T", help="started at or after T (30m, 2h, 1d, ISO time, unix s)"
    )
    p.add_argument("--until", metavar="T", help="started before T (same forms as --since)")
    p.add_argument("--backend", metavar="B", help="the backend the decision chose or concerned")
    p.add_argument("--parent", metavar="ID", help="a chat thread id or a decision id")
    p.add_argument("--llm", metavar="NAME", help="which reasoner ran: offline or claude")
    p.add_argument(
        "--search",
        metavar="TEXT",
        help="full-text search (SQLite FTS5) over the kind, answer, inputs and steps; "
        "every word must appear",
    )
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    p.add_argument("--json", action="store_true", help="print JSON on stdout")
    p.set_defaults(func=run_list)

    p = add("show", "show one trace as a tree of its steps, with timings and token counts")
    p.add_argument(
        "trace_id", metavar="ID", help="trace id, or the unique start or end of one (6+ characters)"
    )
    p.add_argument("--json", action="store_true", help="print the stored trace as JSON")
    p.add_argument(
        "--width",
        type=_width,
        default=100,
        metavar="N",
        help="clip long values to N characters (20 or more)",
    )
    p.set_defaults(func=run_show)

    p = add(
        "export",
        "export traces as JSONL or OpenTelemetry (OTLP/JSON, GenAI attribute names)",
        "Export traces in chain order. jsonl: one line per trace, "
        '{"seq", "prev_hash", "hash", "recorded_at", "trace"}, enough to re-verify the chain '
        "elsewhere (hash = sha256(prev_hash + '\\n' + seq + '\\n' + canonical JSON of trace)). "
        "otel: one OTLP/JSON document; each trace is a root `invoke_agent` span with "
        "`chat` spans for LLM turns and `execute_tool` spans for tool calls, using the "
        "OpenTelemetry GenAI semantic-convention attribute names (gen_ai.operation.name, "
        "gen_ai.request.model, gen_ai.usage.input_tokens, gen_ai.tool.name, ...).",
    )
    p.add_argument("--format", choices=("jsonl", "otel"), default="jsonl")
    p.add_argument("--out", metavar="PATH", help="write here instead of stdout")
    p.add_argument("--kind", metavar="K", help="only traces of this kind")
    p.add_argument("--since", metavar="T", help="only traces started at or after T")
    p.set_defaults(func=run_export)

    p = add("verify", "check the hash chain; exit 3 and name the first bad trace", _VERIFY_HELP)
    p.add_argument(
        "--anchor",
        metavar="[SEQ:]HASH",
        help="a head hash published earlier: the chain must still contain it (at SEQ)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--rebuild-index",
        action="store_true",
        help="also rebuild the full-text index from the hashed content (it is not evidence)",
    )
    p.set_defaults(func=run_verify)

    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# --- opening the file ----------------------------------------------------------------------------


def _open(args: argparse.Namespace) -> tuple[TraceStore | None, int]:
    """The TraceStore for --db / $ARCPOINT_DB, or (None, exit code) after saying why not."""
    from pathlib import Path

    from arcpoint.settings import load_settings

    path = args.db or load_settings().db
    if not Path(path).is_file():
        print(
            f"no traces yet: there is no database at {path}. Escalations, `arcpoint ask` and "
            "`arcpoint chat` write traces there (or point --db / $ARCPOINT_DB at a file).",
            file=sys.stderr,
        )
        return None, EXIT_NO_DB
    from context_api.open_db import NotAnArcpointDatabase, open_existing
    from context_api.traces import TraceStore

    try:  # never creates a file, never adds tables to a foreign one
        return TraceStore(open_existing(path), own_store=True), EXIT_OK
    except NotAnArcpointDatabase as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, EXIT_NO_DB


def _since(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    from arcpoint.commands.alerts import parse_since

    try:
        return parse_since(text, time.time())
    except ValueError as exc:
        raise ValueError(str(exc).replace("--since", flag)) from None


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _width(text: str) -> int:
    """--width: a whole number of at least 20 (narrower clips every value to nothing useful)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 20:
        raise argparse.ArgumentTypeError(f"{value} is below the minimum of 20")
    return value


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False, default=str)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.3f} s"


# --- list ----------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    if args.limit < 0:
        print("error: --limit must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        since = _since(args.since, "--since")
        until = _since(args.until, "--until")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.search is not None and not args.search.strip():
        print("error: --search needs some text", file=sys.stderr)
        return EXIT_USAGE
    traces, code = _open(args)
    if traces is None:
        return code
    with traces:
        rows = traces.list(
            kind=args.kind,
            since=since,
            until=until,
            backend=args.backend,
            parent_id=args.parent,
            llm=args.llm,
            search=args.search,
            limit=args.limit,
        )
        total = traces.count()
    if args.json:
        print(
            json.dumps(
                {
                    "db": traces.store.path,
                    "count": len(rows),
                    "traces": [_summary(r) for r in rows],
                },
                indent=2,
            )
        )
        return EXIT_OK
    if not rows:
        print("no traces yet" if total == 0 else f"no traces match these filters ({total} stored)")
        return EXIT_OK
    print(render_list(rows))
    return EXIT_OK


def _summary(row: TraceSummary) -> dict[str, Any]:
    out = row.model_dump()
    out["time"] = datetime.fromtimestamp(row.started_at, UTC).isoformat()
    return out


def render_list(rows: list[TraceSummary]) -> str:
    header = (
        f"{'SEQ':>5}  {'STARTED (UTC)':<19}  {'KIND':<10}  {'TRACE ID':<24}  {'LLM':<7}  "
        f"{'BACKEND':<10}  {'STEPS':>5}  {'TOKENS IN/OUT':>13}  {'TIME':>9}  FINAL"
    )
    lines = [header]
    for r in rows:
        final = _clip(r.final or "", 48)
        if r.fallback_reason:
            final = _clip(f"[fallback: {r.fallback_reason}] {final}", 60)
        lines.append(
            f"{r.seq:>5}  {_iso(r.started_at):<19}  {r.kind[:10]:<10}  {r.trace_id:<24}  "
            f"{(r.llm or '-')[:7]:<7}  {(r.backend or '-')[:10]:<10}  {r.n_steps:>5}  "
            f"{f'{r.input_tokens}/{r.output_tokens}':>13}  {_duration(r.duration_s):>9}  {final}"
        )
    lines.append(f"({len(rows)} trace{'s' if len(rows) != 1 else ''}; `arcpoint traces show ID`)")
    return "\n".join(lines)


# --- show ----------------------------------------------------------------------------------------


def run_show(args: argparse.Namespace) -> int:
    traces, code = _open(args)
    if traces is None:
        return code
    with traces:
        try:
            trace = traces.get(args.trace_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if trace is None:
        print(f"error: no trace {args.trace_id!r} (see `arcpoint traces list`)", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(trace.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return EXIT_OK
    print(render_trace(trace, width=args.width))
    return EXIT_OK


def render_trace(trace: StoredTrace, *, width: int = 100) -> str:
    """A readable tree: the header, the inputs, then each step under its parent node."""
    lines = [
        f"trace {trace.trace_id}  {trace.kind}  {_iso(trace.started_at)} UTC  "
        f"{_duration(trace.duration_s)}",
    ]
    facts = [
        ("parent", trace.parent_id),
        ("llm", " ".join(x for x in (trace.llm, trace.model) if x) or None),
        ("backend", trace.backend),
        ("prompt hash", trace.prompt_hash),
        (
            "model versions",
            ", ".join(f"{k}={v}" for k, v in sorted(trace.model_versions.items())) or None,
        ),
        (
            "tokens",
            f"{trace.input_tokens} in / {trace.output_tokens} out"
            if trace.input_tokens or trace.output_tokens
            else None,
        ),
    ]
    lines += [f"  {name}: {value}" for name, value in facts if value]
    if trace.inputs:
        lines.append(f"  inputs: {_clip(_compact(trace.inputs), width)}")
    lines.append("  steps:")
    children: dict[int | None, list[int]] = {}
    for i, step in enumerate(trace.steps):
        children.setdefault(step.parent, []).append(i)

    def walk(parent: int | None, prefix: str) -> None:
        kids = children.get(parent, [])
        for n, i in enumerate(kids):
            last = n == len(kids) - 1
            branch = "└─ " if last else "├─ "
            step = trace.steps[i]
            lines.append(f"  {prefix}{branch}{_step_line(i, step, width)}")
            more = prefix + ("   " if last else "│  ")
            for detail in _step_details(step, width):
                lines.append(f"  {more}{'│  ' if children.get(i) else '   '}{detail}")
            walk(i, more)

    if trace.steps:
        walk(None, "  ")
    else:
        lines.append("    (no steps)")
    if trace.fallback_reason:
        lines.append(f"  fallback: {trace.fallback_reason}")
    if trace.final is not None:
        lines.append(f"  final: {_clip(_compact(trace.final), width)}")
    lines.append(f"  chain: seq {trace.seq}  hash {trace.hash[:16]}…  prev {trace.prev_hash[:16]}…")
    return "\n".join(lines)


def _step_line(i: int, step: TraceStep, width: int) -> str:
    error = "  ERROR" if step.is_error else ""
    if step.type == "node":
        return f"[{i}] node {step.name}  {_duration(step.duration_s)}{error}"
    if step.type == "tool_call":
        args = _clip(_compact(step.arguments or {}), max(10, width // 2))
        return f"[{i}] tool {step.name}({args})  {_duration(step.duration_s)}{error}"
    tokens = f"{step.input_tokens} in / {step.output_tokens} out tok"
    if step.cache_read_tokens or step.cache_write_tokens:
        tokens += f" (cache read {step.cache_read_tokens}, write {step.cache_write_tokens})"
    stop = f"  stop={step.stop_reason}" if step.stop_reason else ""
    cost = f"  ${step.cost_usd:.5f}" if step.cost_usd else ""
    latency = step.latency_s if step.latency_s is not None else step.duration_s
    return f"[{i}] llm {step.model or step.name}  {tokens}  {_duration(latency)}{stop}{cost}{error}"


def _step_details(step: TraceStep, width: int) -> list[str]:
    out = []
    if step.type == "tool_call":
        out.append(f"-> {_clip(_compact(step.result), width)}")
    elif step.type == "llm_turn":
        if step.input is not None:
            out.append(f"in:  {_clip(_compact(step.input), width)}")
        if step.output is not None:
            out.append(f"out: {_clip(_compact(step.output), width)}")
    elif step.output is not None:
        out.append(f"-> {_clip(_compact(step.output), width)}")
    if step.error:
        out.append(f"error: {_clip(step.error, width)}")
    return out


# --- export --------------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    try:
        since = _since(args.since, "--since")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out:
        from pathlib import Path

        folder = Path(args.out).parent
        if not folder.is_dir():
            print(f"error: --out {args.out}: the folder {folder} does not exist", file=sys.stderr)
            return EXIT_USAGE
    traces, code = _open(args)
    if traces is None:
        return code
    from context_api.trace_otel import otel_document
    from context_api.trace_records import canonical_json

    try:
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    except OSError as exc:
        traces.close()
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    n = 0
    try:
        with traces:
            stream = traces.iter_traces(since=since, kind=args.kind)
            if args.format == "jsonl":
                for t in stream:
                    record = {
                        "seq": t.seq,
                        "prev_hash": t.prev_hash,
                        "hash": t.hash,
                        "recorded_at": t.recorded_at,
                        "trace": t.content(),
                    }
                    out.write(canonical_json(record) + "\n")
                    n += 1
            else:
                items = list(stream)
                n = len(items)
                json.dump(otel_document(items), out, ensure_ascii=False)
                out.write("\n")
    except BrokenPipeError:  # `... | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        if args.out:
            out.close()
    where = args.out or "stdout"
    print(f"exported {n} trace{'s' if n != 1 else ''} as {args.format} to {where}", file=sys.stderr)
    return EXIT_OK


# --- verify --------------------------------------------------------------------------------------


def run_verify(args: argparse.Namespace) -> int:
    anchor: tuple[int | None, str] | None = None
    if args.anchor:
        seq_text, _, digest = args.anchor.rpartition(":")
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            print("error: --anchor must be [SEQ:]HASH with a 64-hex-digit hash", file=sys.stderr)
            return EXIT_USAGE
        try:
            anchor = (int(seq_text) if seq_text else None, digest)
        except ValueError:
            print("error: --anchor SEQ must be an integer", file=sys.stderr)
            return EXIT_USAGE
    traces, code = _open(args)
    if traces is None:
        return code
    with traces:
        if args.rebuild_index:
            n = traces.rebuild_search_index()
            print(f"rebuilt the full-text index over {n} traces", file=sys.stderr)
        report = traces.verify()
        anchor_problem = _check_anchor(traces, anchor) if anchor else None
    ok = report.ok and anchor_problem is None
    if args.json:
        payload = report.model_dump()
        payload["anchor_problem"] = anchor_problem
        payload["ok"] = ok
        print(json.dumps(payload, indent=2))
        return EXIT_OK if ok else EXIT_TAMPERED
    if ok:
        head = (
            f"head seq {report.head_seq} hash {report.head_hash}"
            if report.head_hash
            else "no traces yet"
        )
        print(f"OK: {report.checked} traces, chain intact; {head}")
        if anchor:
            print(f"anchor {args.anchor} found in the chain")
        print("publish the head hash elsewhere; check it later with --anchor SEQ:HASH")
    else:
        first = report.first_bad
        if first is not None:
            where = (
                f"trace {first.trace_id} (seq {first.seq})"
                if first.seq is not None
                else (f"trace {first.trace_id}" if first.trace_id else "end of chain")
            )
            print(f"TAMPERED: first bad: {where}: {first.problem}")
        if anchor_problem:
            print(f"TAMPERED: {anchor_problem}")
        others = [p for p in report.problems if p is not first]
        if others:
            print(f"also ({len(others)}{'+' if report.problems_truncated else ''}):")
            for p in others:
                seq = f"seq {p.seq}" if p.seq is not None else "-"
                print(f"  {seq}  {p.trace_id or '-'}: {p.problem}")
        print(f"checked {report.checked} traces")
    if not report.append_only_triggers:
        print(
            "warning: the append-only triggers on traces/trace_steps are missing "
            "(someone altered the file's schema)",
            file=sys.stderr,
        )
    return EXIT_OK if ok else EXIT_TAMPERED


def _check_anchor(traces: TraceStore, anchor: tuple[int | None, str]) -> str | None:
    seq, digest = anchor
    found = traces.seq_of_hash(digest)
    if found is None:
        return f"anchor hash {digest[:16]}… is no longer in the chain (traces deleted or rewritten)"
    if seq is not None and found != seq:
        return f"anchor hash is at seq {found}, not {seq} (traces reordered)"
    return None
