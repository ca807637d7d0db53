"""`arcpoint ingest`: load real telemetry (CSV or JSONL) into the store, reporting every bad row.

The run is all-or-nothing per invocation: every file is parsed before anything is written, so an
unusable file (exit 2) or, with `--strict`, any rejected row (exit 1) leaves the database as it was
and the same command can be re-run after a fix without duplicating what went in.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from context_api.ingest import Ingestor, IngestReport, IngestResult
    from context_api.store import Store

EXIT_OK = 0
EXIT_REJECTED_STRICT = 1
EXIT_UNUSABLE = 2
EXIT_STORE_FAILED = 3

_DESCRIPTION = """\
Read telemetry from CSV or JSONL files and store it as the same records the simulator emits,
so the feature windows and the forecaster replay it unchanged.

Columns (case-insensitive aliases):
  timestamp | ts | time                        ISO 8601, 'YYYY-mm-dd HH:MM:SS' or unix seconds;
                                               no offset means UTC
  latency | latency_ms | p95_ms | p95 | value  the p95 latency in ms
  p50_ms | p50                                 the p50 latency in ms
  rps | load | requests_per_s                  requests per second
  in_flight, error_rate, backend

A single-column series such as NAB's `timestamp,value` works: value is the latency, the backend
is --backend or the file stem, and the load is unknown (load_known=False, rps=0, in_flight=0).
Where only one latency is known, p50 = p95 = that value. Where rps is known but in_flight is
not, in_flight is estimated by Little's law as rps * p50_ms / 1000. A missing error_rate is 0.

Rows that cannot be used (malformed, missing or mistyped fields, NaN/infinite/negative latency,
negative load, error_rate outside [0, 1], p50 > p95, a backend outside --backends, timestamps out
of order or duplicated per backend) are rejected with their line, reason and raw text, counted in
the report and stored in the ingest_rejections table. Nothing is dropped silently.

Rows already in the store (same backend and timestamp) are rejected as duplicates, so running
the same command twice stores nothing twice. --dry-run does not open the store.

Everything is written in one transaction, together with a row in the runs table (command
'ingest', its parameters and the report's counts); telemetry rows carry their file as `source`.

Exit status: 0 when the files were usable (even with rejected rows), 1 with --strict when any
row was rejected, 2 when a file is unusable (not CSV/JSONL, no usable header, unreadable), 3 when
the store cannot be opened or written. On any non-zero exit nothing is written.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="load real telemetry from CSV/JSONL into the store, with a report of rejected rows",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="CSV or JSONL files; '-' reads standard input"
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=("auto", "csv", "jsonl"),
        default="auto",
        help="file format (default: auto, from the first non-blank line)",
    )
    parser.add_argument(
        "--backend",
        metavar="NAME",
        help="backend for rows without one (default: the file stem; 'stdin' for '-')",
    )
    parser.add_argument(
        "--backends",
        metavar="LIST",
        help="comma-separated fleet, e.g. b0,b1,b2,b3: rows naming any other backend are rejected",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help=(
            "store each backend's rows one simulator tick (10 s) apart from its first timestamp, "
            "for replaying series sampled at another cadence (NAB: 5 min, 1 h) through the "
            "feature windows; original timestamps are not kept"
        ),
    )
    parser.add_argument(
        "--db", metavar="PATH", default="arcpoint.db", help="SQLite file (default: arcpoint.db)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="treat any rejected row as failure: write nothing and exit 1",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="parse and report only; write nothing"
    )
    parser.add_argument(
        "--show",
        type=int,
        default=20,
        metavar="N",
        help="list the first N rejections in the report (default: 20)",
    )
    parser.set_defaults(func=run)


def _parse_fleet(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from context_api.ingest import Ingestor

    fleet = _parse_fleet(args.backends)
    if fleet is not None and not fleet:
        print("error: --backends names no backend", file=sys.stderr)
        return EXIT_UNUSABLE
    # An existing store is asked which rows it already holds, so a re-run rejects them as
    # duplicates instead of storing them twice. A dry run never opens (or migrates) the file.
    store = None
    try:
        if not args.dry_run and Path(args.db).exists():
            store = _open_store(args.db)
        ingestor = Ingestor(
            allowed_backends=fleet,
            max_reported=max(args.show, 0),
            stored=_stored_lookup(store) if store is not None else None,
            retime=args.retime,
        )
        errors = _read_all(ingestor, args)
        result = ingestor.result()
        report = result.report
        if errors:
            status, stored = EXIT_UNUSABLE, None
        elif args.strict and report.rejected:
            status, stored = EXIT_REJECTED_STRICT, None
        elif args.dry_run:
            status, stored = EXIT_OK, None
        else:
            if store is None:
                store = _open_store(args.db)
            stored = _store(store, result, args)
            status = EXIT_OK
    except _StoreFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_FAILED
    finally:
        if store is not None:
            store.close()

    if args.json:
        payload: dict[str, Any] = report.model_dump(mode="json")
        payload["errors"] = errors
        payload["stored"] = stored
        payload["db"] = args.db if stored is not None else None
        print(json.dumps(payload, indent=2))
    else:
        print(render_report(report, errors=errors))
        print(_storage_line(status, stored, args))
    return status


def _read_all(ingestor: Ingestor, args: argparse.Namespace) -> list[str]:
    """Parse every path; return the messages of unusable ones (progress goes to stderr)."""
    from context_api.ingest import IngestError

    errors: list[str] = []
    for path in args.paths:
        try:
            if path == "-":
                summary = ingestor.add_lines(
                    sys.stdin, source="stdin", fmt=args.fmt, backend=args.backend or "stdin"
                )
            else:
                summary = ingestor.add_file(path, fmt=args.fmt, backend=args.backend)
        except IngestError as exc:
            errors.append(str(exc))
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(
            f"read {summary.source}: {summary.accepted} accepted, {summary.rejected} rejected",
            file=sys.stderr,
        )
    return errors


class _StoreFailure(Exception):
    pass


def _open_store(db: str) -> Store:
    import sqlite3

    from context_api.store import SchemaTooNewError, Store

    try:
        return Store(db)
    except (sqlite3.Error, SchemaTooNewError, OSError) as exc:
        raise _StoreFailure(f"cannot open the store {db}: {exc}") from None


def _stored_lookup(store: Store) -> Callable[[str], set[float]]:
    import sqlite3

    def lookup(backend: str) -> set[float]:
        try:
            return {p.ts for p in store.list_telemetry(backend=backend)}
        except sqlite3.Error as exc:
            raise _StoreFailure(f"reading {store.path} failed: {exc}") from None

    return lookup


def _store(store: Store, result: IngestResult, args: argparse.Namespace) -> dict[str, Any]:
    """Write the run, accepted points (with their file) and every rejection in one transaction."""
    import sqlite3

    try:
        return _write(store, result, args)
    except sqlite3.Error as exc:
        raise _StoreFailure(f"writing to {args.db} failed, nothing was stored: {exc}") from None


def _write(store: Store, result: IngestResult, args: argparse.Namespace) -> dict[str, Any]:
    from context_api.store import IngestRejection

    report = result.report
    with store.transaction():
        run = store.start_run(
            "ingest",
            params={
                "paths": list(args.paths),
                "format": args.fmt,
                "backend": args.backend,
                "backends": _parse_fleet(args.backends),
                "retime": args.retime,
            },
        )
        telemetry = 0
        for source, points in result.by_source.items():
            if points:
                telemetry += store.insert_telemetry(points, source=source, run_id=run.run_id)
        rejections = store.record_ingest_rejections(
            IngestRejection(source=r.source, line=r.line, reason=r.reason.value, raw=r.raw)
            for r in result.rejections
        )
        store.finish_run(
            run.run_id,
            summary={
                "accepted": report.accepted,
                "rejected": report.rejected,
                "rejected_by_reason": report.rejected_by_reason,
                "backends": {name: span.count for name, span in report.backends.items()},
            },
        )
    return {"run_id": run.run_id, "telemetry": telemetry, "rejections": rejections}


def _storage_line(status: int, stored: dict[str, Any] | None, args: argparse.Namespace) -> str:
    if stored is not None:
        return (
            f"stored in {args.db} (run {stored['run_id']}): {stored['telemetry']:,} telemetry "
            f"rows, {stored['rejections']:,} rejections"
        )
    if status == EXIT_UNUSABLE:
        return "nothing stored: fix or leave out the unusable files above"
    if status == EXIT_REJECTED_STRICT:
        return "nothing stored: --strict and some rows were rejected"
    return "dry run: nothing stored"


def render_report(report: IngestReport, *, errors: list[str] | None = None) -> str:
    """The report as aligned text for a terminal."""
    out: list[str] = []
    for error in errors or []:
        out.append(f"UNUSABLE {error}")
    files = len(report.sources)
    out.append(
        f"ingested {files} file{'s' if files != 1 else ''}: "
        f"{report.accepted:,} accepted, {report.rejected:,} rejected"
    )
    if report.rejected_by_reason:
        out.append("rejected by reason:")
        width = max(len(reason) for reason in report.rejected_by_reason)
        for reason, count in sorted(report.rejected_by_reason.items(), key=lambda kv: -kv[1]):
            out.append(f"  {reason:<{width}}  {count:>8,}")
    if report.backends:
        out.append(f"backends ({len(report.backends)}):")
        width = max(len("backend"), *(len(name) for name in report.backends))
        out.append(f"  {'backend':<{width}}  {'points':>7}  {'first':<20}  {'last':<20}  interval")
        for name, span in report.backends.items():
            gap = "-" if span.median_interval_s is None else f"{span.median_interval_s:g} s"
            out.append(
                f"  {name:<{width}}  {span.count:>7,}  {span.first:<20}  {span.last:<20}  {gap}"
            )
    if report.rejections:
        shown = len(report.rejections)
        out.append(f"first {shown} rejection{'s' if shown != 1 else ''}:")
        for r in report.rejections:
            out.append(f"  {r.source}:{r.line}  {r.reason.value}: {r.detail}")
            out.append(f"      {r.raw[:120]!r}")
        if report.rejections_omitted:
            out.append(f"  ... and {report.rejections_omitted:,} more")
    for source in report.sources:
        if source.ignored_columns:
            shown = ", ".join(repr(c) for c in source.ignored_columns[:10])
            out.append(f"note: {source.source}: ignored columns {shown}")
    for note in report.notes:
        out.append(f"note: {note}")
    return "\n".join(out)
