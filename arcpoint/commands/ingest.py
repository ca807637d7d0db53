"""`arcpoint ingest`: load real telemetry (CSV or JSONL) into the store, reporting every bad row.

Files stream through in bounded memory: accepted rows are written in chunks, each in its own
short transaction under the ingest's run, so other writers get turns. An unusable file (exit 2)
or, with `--strict`, any rejected row (exit 1) takes back what the run wrote, and the same
command can be re-run after a fix without duplicating anything (the schema refuses a second copy
of a (backend, time) measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
  timestamp | ts | time                        ISO 8601, 'YYYY-mm-dd HH:MM:SS' or a unix time
                                               in s, ms, us or ns (told by its magnitude, or
                                               --time-unit); no offset means UTC
  latency | latency_ms | p95_ms | p95 | value  the p95 latency in ms
  p50_ms | p50                                 the p50 latency in ms
  rps | load | requests_per_s                  requests per second
  in_flight, error_rate, backend

A single-column series such as NAB's `timestamp,value` works: value is the latency, the backend
is --backend or the file stem, and the load is unknown (load_known=False, rps=0, in_flight=0).
Where only one latency is known, p50 = p95 = that value. Where rps is known but in_flight is
not, in_flight is estimated by Little's law as rps * p50_ms / 1000. A missing error_rate is 0.

Rows that cannot be used (malformed or not UTF-8, missing or mistyped fields, NaN/infinite/
negative latency, negative load, values above the physical bounds (ARCPOINT_MAX_LATENCY_MS,
default 600000; ARCPOINT_MAX_RPS, default 1e6), error_rate outside [0, 1], p50 > p95, a time
before 1970 or from 2100 on, numeric times in another unit than the file's, a backend outside
--backends, timestamps out of order or duplicated per backend) are rejected with their line,
reason and raw text and counted in the report. The store keeps every count (per file and
reason, with the line range) and the first 100 rejected rows of each reason in full, so a
million repeats of one mistake cost one summary, not a million rows. Nothing is dropped silently.

Rows already in the store (same backend and timestamp) are rejected as duplicates, so running
the same command twice, or twice at once, stores nothing twice. --dry-run does not open the
store (so it cannot see those duplicates).

Each chunk is written in its own transaction, under a row in the runs table (command 'ingest',
its parameters and the report's counts); telemetry rows carry their file as `source`. Ctrl-C
or SIGTERM stop the ingest (exit 130 / 143): the chunks already written stay, under a run
marked interrupted; a rerun stores the rest and reports the stored rows as duplicates.

Exit status: 0 when the files were usable (even with rejected rows), 1 with --strict when any
row was rejected, 2 when a file is unusable (not CSV/JSONL, no usable header, binary,
unreadable), 3 when the store cannot be opened or written. On exit 1 or 2 the run's rows are
taken back out of the store.
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
        "--db",
        metavar="PATH",
        default=None,
        help="SQLite file (default: $ARCPOINT_DB or arcpoint.db)",
    )
    parser.add_argument(
        "--time-unit",
        choices=("auto", "s", "ms", "us", "ns"),
        default="auto",
        help="unit of numeric timestamps (default auto: told by their magnitude, per file)",
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
    from arcpoint.settings import load_settings
    from context_api.ingest import Ingestor

    settings = load_settings()
    db = args.db or settings.db
    fleet = _parse_fleet(args.backends)
    if fleet is not None and not fleet:
        print("error: --backends names no backend", file=sys.stderr)
        return EXIT_UNUSABLE
    writer = None if args.dry_run else _Writer(db, _params(args), strict=args.strict)
    ingestor = Ingestor(
        allowed_backends=fleet,
        max_reported=max(args.show, 0),
        retime=args.retime,
        sink=writer if writer is not None else _discard,
        time_unit=args.time_unit,
        bounds=settings.bounds,
    )
    if writer is not None:
        writer.ingestor = ingestor
    stored = None
    try:
        errors = _read_all(ingestor, args)
        result = ingestor.result()
        report = result.report
        if errors:
            status = EXIT_UNUSABLE
        elif args.strict and report.rejected:
            status = EXIT_REJECTED_STRICT
        else:
            status = EXIT_OK
        if writer is not None:
            if status == EXIT_OK:
                stored = writer.finish(result)
            else:
                writer.take_back("unusable file" if errors else "--strict and rejected rows")
    except _StoreFailure as exc:
        if writer is not None:
            writer.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE_FAILED
    except BaseException as exc:  # Ctrl-C, SIGTERM: mark the run, keep what is stored
        if writer is not None:
            writer.interrupted(exc)
        raise

    if args.json:
        payload: dict[str, Any] = report.model_dump(mode="json")
        payload["errors"] = errors
        payload["stored"] = stored
        payload["db"] = db if stored is not None else None
        print(json.dumps(payload, indent=2))
    else:
        print(render_report(report, errors=errors))
        print(_storage_line(status, stored, db))
    return status


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "paths": list(args.paths),
        "format": args.fmt,
        "backend": args.backend,
        "backends": _parse_fleet(args.backends),
        "retime": args.retime,
        "time_unit": args.time_unit,
    }


def _discard(source: str, points: Any) -> set[int]:
    """The sink of a dry run: nothing is stored, nothing is already there."""
    return set()


def _read_all(ingestor: Ingestor, args: argparse.Namespace) -> list[str]:
    """Parse every path; return the messages of unusable ones (progress goes to stderr)."""
    from context_api.ingest import IngestError

    errors: list[str] = []
    for path in args.paths:
        try:
            if path == "-":
                stdin = getattr(sys.stdin, "buffer", None)
                if stdin is not None:
                    summary = ingestor.add_stream(
                        stdin, source="stdin", fmt=args.fmt, backend=args.backend or "stdin"
                    )
                else:  # a text stream without bytes underneath (tests, embedding)
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
            f"read {summary.source}: {summary.accepted:,} accepted, {summary.rejected:,} rejected",
            file=sys.stderr,
        )
    return errors


class _StoreFailure(Exception):
    pass


class _Writer:
    """The ingest's sink: writes each chunk of accepted points in its own transaction, under one
    run, and answers which were already stored.

    The store is opened (and the run started) at the first chunk, so a run that stores nothing
    never creates a file. Short transactions let other writers (an `ask` recording its trace)
    in between chunks. Points already stored are found by an index range per backend inside the
    same write transaction, so two ingests of one file at once cannot both store a row (and the
    schema's unique index would refuse it anyway).
    """

    def __init__(self, db: str, params: dict[str, Any], *, strict: bool) -> None:
        self.db = db
        self.params = params
        self.strict = strict
        self.ingestor: Ingestor | None = None
        self.store: Store | None = None
        self.run_id: str | None = None
        self.written = 0
        self.stopped = False

    def _open(self) -> Store:
        import sqlite3

        from context_api.store import SchemaTooNewError, Store

        if self.store is None:
            try:
                self.store = Store(self.db)
                self.run_id = self.store.start_run("ingest", params=self.params).run_id
            except (sqlite3.Error, SchemaTooNewError, OSError, RuntimeError) as exc:
                self.close()
                raise _StoreFailure(f"cannot open the store {self.db}: {exc}") from None
        return self.store

    def __call__(self, source: str, points: Any) -> set[int]:
        import sqlite3

        if self.strict and self.ingestor is not None and self.ingestor.rejected_so_far:
            self.stopped = True  # --strict has failed: store nothing more
            return set()
        store = self._open()
        try:
            with store.transaction():
                ranges: dict[str, tuple[float, float]] = {}
                for p in points:
                    lo, hi = ranges.get(p.backend, (p.ts, p.ts))
                    ranges[p.backend] = (min(lo, p.ts), max(hi, p.ts))
                known = {b: store.stored_timestamps(b, lo, hi) for b, (lo, hi) in ranges.items()}
                dup = {i for i, p in enumerate(points) if p.ts in known[p.backend]}
                fresh = [p for i, p in enumerate(points) if i not in dup]
                self.written += store.insert_telemetry(fresh, source=source, run_id=self.run_id)
        except sqlite3.Error as exc:
            raise _StoreFailure(f"writing to {self.db} failed: {exc}") from None
        return dup

    def finish(self, result: IngestResult) -> dict[str, Any]:
        """Store the rejections (a sample per reason, and every count) and close the run."""
        import sqlite3

        from context_api.store import IngestRejection, IngestRejectionCount

        report = result.report
        store = self._open()
        try:
            with store.transaction():
                rejections = store.record_ingest_rejections(
                    (
                        IngestRejection(
                            source=r.source,
                            line=r.line,
                            reason=r.reason.value,
                            raw=r.raw,
                            run_id=self.run_id,
                        )
                        for r in result.rejections
                    ),
                    counts=[
                        IngestRejectionCount(
                            source=c.source,
                            reason=c.reason.value,
                            count=c.count,
                            kept=c.kept,
                            first_line=c.first_line,
                            last_line=c.last_line,
                            run_id=self.run_id,
                        )
                        for c in report.rejection_counts
                    ],
                )
                assert self.run_id is not None
                store.finish_run(
                    self.run_id,
                    summary={
                        "accepted": report.accepted,
                        "rejected": report.rejected,
                        "rejected_by_reason": report.rejected_by_reason,
                        "backends": {n: span.count for n, span in report.backends.items()},
                    },
                )
        except sqlite3.Error as exc:
            raise _StoreFailure(
                f"writing to {self.db} failed after {self.written:,} rows: {exc}"
            ) from None
        finally:
            self.close()
        return {"run_id": self.run_id, "telemetry": self.written, "rejections": rejections}

    def take_back(self, why: str) -> None:
        """Delete what this run stored (a failed ingest stores nothing) and mark it failed."""
        if self.store is None or self.run_id is None:
            return
        try:
            self.store.delete_run_rows(self.run_id)
            self.store.finish_run(self.run_id, summary={"error": why}, status="failed")
        finally:
            self.close()

    def interrupted(self, exc: BaseException) -> None:
        """Ctrl-C or SIGTERM: the chunks stored stay, under a run marked interrupted (a rerun
        stores the rest and reports the stored ones as duplicates)."""
        from context_api.runs import Terminated

        if self.store is not None and self.run_id is not None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt | Terminated) else "failed"
            try:
                self.store.finish_run(
                    self.run_id,
                    summary={"stored": self.written, "error": type(exc).__name__},
                    status=status,
                )
            except Exception as err:
                print(f"warning: could not mark run {self.run_id} {status}: {err}", file=sys.stderr)
        self.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def _storage_line(status: int, stored: dict[str, Any] | None, db: str) -> str:
    if stored is not None:
        return (
            f"stored in {db} (run {stored['run_id']}): {stored['telemetry']:,} telemetry "
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
