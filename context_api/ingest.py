"""Real telemetry in: CSV or JSONL files become the same `TelemetryPoint`s the simulator emits.

This is the trust boundary for telemetry from outside. Every row either becomes a checked
`TelemetryPoint` or a `Rejection` with its line number, a reason code and the raw text, so nothing
is lost silently and nothing crashes deeper in the pipeline. A file that cannot be read as CSV or
JSONL at all (binary, not UTF-8, no usable header, no JSON objects) raises `IngestError` instead.

Interpretation rules (also shown in `arcpoint ingest --help`):

- Columns / keys are matched case-insensitively through aliases (see `FIELD_ALIASES`). Two columns
  that name the same field (say `latency` and `p95_ms`) are ambiguous and refused, not guessed.
- Timestamps: ISO 8601 (`2014-04-01T00:05:00Z`, with or without offset), `YYYY-mm-dd HH:MM:SS`,
  or a unix time in seconds, milliseconds, microseconds or nanoseconds: the magnitude of a file's
  first numeric timestamp says which (`time_unit` can say it instead), and a later one of another
  magnitude is rejected rather than read in the wrong unit. Timestamps without an offset are
  UTC. A time before 1970 or from 2100 on is rejected (most often a unit mix-up).
- Values: latency, rps and in-flight above the physical bounds (`context_api.bounds`) are
  rejected, so no statistic downstream meets an absurd number.
- Latency: `latency`/`value`/`p95` is the p95. Where only one latency is known (a single-column
  series such as NAB, or only `p50_ms`), p50 and p95 are both set to it.
- Load: `rps` known -> `load_known=True`; `in_flight` missing is then estimated by Little's law
  as `rps * p50_ms / 1000`. `rps` unknown -> `load_known=False`, `rps=0` and `in_flight=0` (or
  the `in_flight` column's value if present). `error_rate` missing -> 0.
- Backend: the `backend` column; where the file has none, `--backend` or else the file stem. An
  empty `backend` cell falls back to `--backend` if given, else the row is rejected.
- Order: per source and backend, timestamps must increase. A row at its backend's last accepted
  time is a duplicate, an older one out of order; so is a row already accepted from an earlier
  file of the same run, or already in the store when a `sink` writes the points.

Memory: with a `sink`, accepted points go to it in chunks of `CHUNK_ROWS` as they are read, and
only bounded state is kept (per backend: counts, first and last time, a sample of the spacing;
per file and reason: counts and the first `KEEP_PER_REASON` rejections), so a file of any size
streams through in the same memory. Without one, points are kept and come back sorted by
(ts, backend), ready to replay through the same pipeline as simulated telemetry.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

from context_api.bounds import DEFAULT_BOUNDS, ValueBounds
from context_api.ingest_models import (
    CHUNK_ROWS,
    FIELD_ALIASES,
    KEEP_PER_REASON,
    MAX_BACKEND_NAME,
    BackendSpan,
    Format,
    IngestError,
    IngestReport,
    IngestResult,
    Rejection,
    RejectionCount,
    RejectReason,
    RowRejected,
    RowStats,
    Sink,
    SourceSummary,
    Tally,
)
from context_api.ingest_parse import FileParse, chain
from context_api.ingest_values import (
    UNIT_NAMES,
    LongLine,
    Span,
    TimeUnit,
    bounded_lines,
    parse_timestamp,
    undecodable,
)
from context_api.ingest_values import iso as _iso
from tools.telemetry import TICK_SECONDS, TelemetryPoint

__all__ = [
    "CHUNK_ROWS",
    "FIELD_ALIASES",
    "KEEP_PER_REASON",
    "IngestError",
    "IngestReport",
    "IngestResult",
    "Ingestor",
    "RejectReason",
    "Rejection",
    "RejectionCount",
    "Sink",
    "SourceSummary",
    "TimeUnit",
    "ingest_file",
    "ingest_files",
    "parse_timestamp",
]


class Ingestor:
    """Accumulates files into one consistent set of points and rejections.

    Without a sink, a file is parsed completely before it changes any state, so a file that
    turns out unusable (`IngestError`) leaves the ingestor as it was and the caller can go on or
    stop. With a sink, points are handed over in chunks as they are read; a file is found
    unusable before any of its rows are (from its first bytes and header), except JSONL with no
    object at all, which has no rows to hand over.
    """

    def __init__(
        self,
        *,
        allowed_backends: Iterable[str] | None = None,
        max_reported: int = 20,
        retime: bool = False,
        sink: Sink | None = None,
        time_unit: TimeUnit = "auto",
        bounds: ValueBounds = DEFAULT_BOUNDS,
    ) -> None:
        """`allowed_backends`: the fleet, if known; rows naming other backends are rejected.
        `sink`: where accepted points go as they are read (see `Sink`); without one they are
        kept for `result()`.
        `retime`: re-space each backend's accepted rows one simulator tick (`TICK_SECONDS`)
        apart, from its first accepted timestamp, in the order they are read. That replays a
        series sampled at another cadence (NAB: 5 min or 1 h) as the simulator would have
        produced it: feature windows and the forecast horizon count points, and a window empties
        after a gap longer than its long lookback, so hourly points would never fill one. Gaps
        close up and original times are not kept in the points; order and duplicate checks still
        use the original times, the check against the store uses the times that get stored.
        `time_unit`: the unit of numeric timestamps (default: told by their magnitude).
        `bounds`: physical upper bounds on latency and load.
        """
        self.allowed = frozenset(allowed_backends) if allowed_backends is not None else None
        self.max_reported = max_reported
        self.retime = retime
        self.sink = sink
        self.time_unit = time_unit
        self.bounds = bounds
        self._next_tick: dict[str, tuple[float, int]] = {}
        self._points: dict[str, list[TelemetryPoint]] = {}
        self._seen: set[tuple[str, float]] = set()
        """(backend, ts) accepted from earlier files; without a sink only (the store has them)."""
        self._spans: dict[str, Span] = {}
        self._original: dict[str, Span] = {}
        self._first: list[Rejection] = []
        self._tallies: dict[tuple[str, RejectReason], Tally] = {}
        self._sources: list[SourceSummary] = []
        self._stats = RowStats()
        self._units: dict[str, str] = {}
        self._names: dict[str, str] = {}
        """Raw backend cells already checked -> the name (bounded)."""
        self.accepted = 0
        self.rejected = 0
        self.rejected_so_far = 0
        """Rejections including those of the file being read (for a sink that must stop)."""

    # -- public -------------------------------------------------------------------------------

    def add_file(
        self, path: str | Path, *, fmt: Format = "auto", backend: str | None = None
    ) -> SourceSummary:
        """Parse one file. `backend` names rows without a backend value (default: the file stem)."""
        path = Path(path)
        source = str(path)
        try:
            with path.open("rb") as handle:
                return self.add_stream(handle, source=source, fmt=fmt, backend=backend or path.stem)
        except OSError as exc:
            raise IngestError(source, f"cannot read: {exc.strerror or exc}") from None

    def add_stream(
        self, handle: IO[bytes], *, source: str, fmt: Format = "auto", backend: str | None = None
    ) -> SourceSummary:
        """Parse a binary stream (a file, standard input's buffer) line by line."""
        peek = getattr(handle, "peek", None)
        head = peek(8192)[:8192] if peek is not None else b""
        if b"\x00" in head:
            raise IngestError(source, "binary file (contains NUL bytes), not CSV or JSONL text")
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
        try:
            return self.add_lines(bounded_lines(text), source=source, fmt=fmt, backend=backend)
        finally:
            text.detach()

    def add_lines(
        self,
        lines: Iterable[str],
        *,
        source: str,
        fmt: Format = "auto",
        backend: str | None = None,
    ) -> SourceSummary:
        """Parse text lines (each ending in its newline, as a file yields them) from `source`."""
        if backend is not None:
            try:
                backend = self._check_backend_name(backend)
            except RowRejected as exc:
                raise IngestError(source, f"backend name {backend[:60]!r}: {exc.detail}") from None
        it = iter(lines)
        leading: list[str] = []
        first = ""
        for line in it:
            leading.append(line)
            if line.strip():
                first = line
                break
            if len(leading) > 10_000:
                break
        if not first:
            raise IngestError(source, "empty file (no header and no rows)")
        if undecodable(first) or isinstance(first, LongLine):
            what = "not UTF-8 text" if undecodable(first) else "its first line is too long"
            raise IngestError(source, f"{what}: cannot read a header or a first row")
        if fmt == "auto":
            fmt = self._sniff(source, first)
        all_lines = chain(leading, it)
        parse = FileParse(self, source, backend)
        if fmt == "csv":
            parse.run_csv(all_lines)
        elif fmt == "jsonl":
            parse.run_jsonl(all_lines)
        else:
            raise IngestError(source, f"unknown format {fmt!r} (csv, jsonl or auto)")
        return parse.commit()

    def result(self) -> IngestResult:
        """Everything accepted so far (unless a sink took it), sorted by (ts, backend)."""
        points = [p for group in self._points.values() for p in group]
        points.sort(key=lambda p: (p.ts, p.backend))
        kept = [r for tally in self._tallies.values() for r in tally.kept]
        kept.sort(key=lambda r: (self._source_order(r.source), r.line))
        return IngestResult(
            points=points,
            rejections=kept,
            report=self._report(),
            by_source={k: list(v) for k, v in self._points.items()},
        )

    # -- internals ----------------------------------------------------------------------------

    def _source_order(self, source: str) -> int:
        for i, s in enumerate(self._sources):
            if s.source == source:
                return i
        return len(self._sources)

    @staticmethod
    def _sniff(source: str, first: str) -> Literal["csv", "jsonl"]:
        head = first.lstrip()
        if head.startswith("{"):
            return "jsonl"
        if head.startswith("["):
            raise IngestError(
                source,
                "looks like a JSON array; JSONL needs one JSON object per line",
            )
        return "csv"

    def _check_backend_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise RowRejected(RejectReason.MISSING_FIELD, "backend is empty")
        if len(name) > MAX_BACKEND_NAME:
            raise RowRejected(
                RejectReason.BAD_BACKEND, f"backend name longer than {MAX_BACKEND_NAME} characters"
            )
        if not name.isprintable() or undecodable(name):
            raise RowRejected(RejectReason.BAD_BACKEND, "backend name contains control characters")
        return name

    def _report(self) -> IngestReport:
        spans: dict[str, BackendSpan] = {}
        notes: list[str] = []
        off_tick: Counter[float] = Counter()
        for name in sorted(self._spans):
            span = self._spans[name]
            spans[name] = BackendSpan(
                count=span.count,
                first_ts=span.first,
                last_ts=span.last,
                first=_iso(span.first),
                last=_iso(span.last),
                median_interval_s=span.median_gap(),
            )
        original = self._original if self.retime else self._spans
        for span in original.values():
            median = span.median_gap()
            if median is not None and not math.isclose(median, TICK_SECONDS):
                off_tick[median] += 1
        if off_tick:
            spacing = ", ".join(f"{gap:g} s ({n:,})" for gap, n in sorted(off_tick.items()))
            count = sum(off_tick.values())
            if self.retime:
                notes.append(
                    f"retimed: each backend's rows re-spaced {TICK_SECONDS:g} s apart from its "
                    "first accepted timestamp, in the order read (original timestamps are not "
                    f"kept); {count:,} backend{'s were' if count != 1 else ' was'} spaced "
                    f"differently: median interval {spacing}"
                )
            else:
                notes.append(
                    f"{count:,} backend{'s are' if count != 1 else ' is'} spaced unlike the "
                    f"simulator's {TICK_SECONDS:g} s tick: median interval {spacing}. Feature "
                    "windows and the horizon count points, so they cover that much more time, "
                    "and a window empties after a gap longer than its long lookback; --retime "
                    "replays one row per tick"
                )
        for source, unit in self._units.items():
            if unit != "s":
                notes.append(
                    f"{source}: numeric timestamps read as {UNIT_NAMES[unit]} "
                    + (
                        "(as --time-unit says)"
                        if self.time_unit != "auto"
                        else "(told by their magnitude; --time-unit to say otherwise)"
                    )
                )
        stats = self._stats
        if stats.single_latency:
            notes.append(
                f"{stats.single_latency:,} accepted rows had one latency only: "
                "p50 = p95 = that value"
            )
        if stats.load_unknown:
            notes.append(
                f"{stats.load_unknown:,} accepted rows have no load (load_known=False, rps=0)"
            )
        if stats.in_flight_estimated:
            notes.append(
                f"{stats.in_flight_estimated:,} accepted rows had no in_flight: estimated by "
                "Little's law as rps * p50_ms / 1000"
            )
        reasons: Counter[str] = Counter()
        counts = []
        for (source, reason), tally in self._tallies.items():
            reasons[reason.value] += tally.count
            counts.append(
                RejectionCount(
                    source=source,
                    reason=reason,
                    count=tally.count,
                    kept=len(tally.kept),
                    first_line=tally.first_line,
                    last_line=tally.last_line,
                )
            )
        shown = self._first[: self.max_reported]
        return IngestReport(
            sources=list(self._sources),
            accepted=self.accepted,
            rejected=self.rejected,
            rejected_by_reason=dict(sorted(reasons.items())),
            rejections=shown,
            rejections_omitted=self.rejected - len(shown),
            rejection_counts=counts,
            backends=spans,
            notes=notes,
        )


def ingest_files(
    paths: Iterable[str | Path],
    *,
    fmt: Format = "auto",
    backend: str | None = None,
    allowed_backends: Iterable[str] | None = None,
    max_reported: int = 20,
    time_unit: TimeUnit = "auto",
) -> IngestResult:
    """Ingest several files into one result; the first unusable file raises `IngestError`."""
    ingestor = Ingestor(
        allowed_backends=allowed_backends, max_reported=max_reported, time_unit=time_unit
    )
    for path in paths:
        ingestor.add_file(path, fmt=fmt, backend=backend)
    return ingestor.result()


def ingest_file(
    path: str | Path,
    *,
    fmt: Format = "auto",
    backend: str | None = None,
    allowed_backends: Iterable[str] | None = None,
    max_reported: int = 20,
    time_unit: TimeUnit = "auto",
) -> IngestResult:
    """Ingest one file; see the module docstring for how columns and rows are read."""
    return ingest_files(
        [path],
        fmt=fmt,
        backend=backend,
        allowed_backends=allowed_backends,
        max_reported=max_reported,
        time_unit=time_unit,
    )
