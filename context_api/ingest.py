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

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, Field

from context_api.bounds import DEFAULT_BOUNDS, MAX_TS, MIN_TS, ValueBounds
from context_api.ingest_values import (
    UNIT_NAMES,
    LongLine,
    Span,
    TimeUnit,
    bounded_lines,
    check_time,
    number_or_none,
    parse_iso,
    parse_timestamp,
    printable_raw,
    undecodable,
    unit_of,
)
from context_api.ingest_values import (
    UNIT_SCALE as _UNIT_SCALE,
)
from context_api.ingest_values import iso as _iso
from tools.telemetry import TICK_SECONDS, TelemetryPoint

__all__ = [
    "IngestError",
    "IngestReport",
    "IngestResult",
    "Ingestor",
    "Rejection",
    "Sink",
    "TimeUnit",
    "ingest_file",
    "ingest_files",
    "parse_timestamp",
]

Format = Literal["auto", "csv", "jsonl"]

Sink = Callable[[str, Sequence[TelemetryPoint]], Collection[int]]
"""Stores a chunk of accepted points read from a source; returns the indexes (into the chunk)
of points that were already stored, which become `duplicate` rejections."""

CHUNK_ROWS = 10_000
"""Accepted points handed to the sink at a time (one write transaction each)."""
KEEP_PER_REASON = 100
"""Rejections kept in full per file and reason; the rest are counted (with their line range)."""

FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("timestamp", "ts", "time"),
    "p95_ms": ("latency", "latency_ms", "p95_ms", "p95", "value"),
    "p50_ms": ("p50_ms", "p50"),
    "rps": ("rps", "load", "requests_per_s"),
    "error_rate": ("error_rate",),
    "in_flight": ("in_flight",),
    "backend": ("backend",),
}
"""Canonical field -> accepted column names (compared after strip + lower-case)."""

_ALIAS_TO_FIELD = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}

MAX_BACKEND_NAME = 128
MAX_RAW_CHARS = 500
"""Raw text kept per rejection is cut to this many characters (the line number has the rest)."""

_CSV_DELIMITERS = (",", "\t", ";", "|")


class RejectReason(StrEnum):
    """Why a row was not accepted. Stable codes: they are stored and counted."""

    MALFORMED_ROW = "malformed_row"  # wrong field count, invalid JSON, not UTF-8, too long
    MISSING_FIELD = "missing_field"  # timestamp, latency or backend absent/empty
    AMBIGUOUS_FIELD = "ambiguous_field"  # JSONL row with two keys for one field
    BAD_TYPE = "bad_type"  # a number that is not a number (text, boolean, list...)
    BAD_TIMESTAMP = "bad_timestamp"  # unparseable, non-finite, before 1970, 2100 or later
    TIME_UNIT_MIXED = "time_unit_mixed"  # a numeric time of another unit than the file's
    NON_FINITE = "non_finite"  # NaN or infinite latency, load or error rate
    NEGATIVE_LATENCY = "negative_latency"
    NEGATIVE_LOAD = "negative_load"  # negative rps or in_flight
    OUT_OF_BOUNDS = "out_of_bounds"  # above a physical bound (context_api.bounds)
    ERROR_RATE_OUT_OF_RANGE = "error_rate_out_of_range"  # outside [0, 1]
    PERCENTILE_ORDER = "percentile_order"  # p50 > p95
    BAD_BACKEND = "bad_backend"  # backend name too long or with control characters
    UNKNOWN_BACKEND = "unknown_backend"  # not in the allowed fleet
    OUT_OF_ORDER = "out_of_order"  # older than the backend's last accepted timestamp
    DUPLICATE = "duplicate"  # (backend, timestamp) already accepted


class IngestError(Exception):
    """The file as a whole is unusable (not CSV/JSONL, no usable header, binary, unreadable)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message


class Rejection(BaseModel):
    """One refused row: where it was, why, and what it said."""

    source: str
    line: int = Field(description="1-based physical line number where the row starts")
    reason: RejectReason
    detail: str
    raw: str = Field(description=f"the row's text, cut to {MAX_RAW_CHARS} characters")


class SourceSummary(BaseModel):
    """What one file contributed and how its columns were read."""

    source: str
    format: Literal["csv", "jsonl"]
    rows: int = Field(description="data rows seen (blank lines excluded)")
    accepted: int
    rejected: int
    blank_lines: int = 0
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical field -> column used (CSV only)"
    )
    ignored_columns: list[str] = Field(default_factory=list)
    default_backend: str | None = Field(
        default=None, description="backend for rows without a backend value"
    )


class BackendSpan(BaseModel):
    """The accepted time range of one backend."""

    count: int
    first_ts: float
    last_ts: float
    first: str
    last: str
    median_interval_s: float | None = Field(
        default=None, description="median spacing of accepted points (None for a single point)"
    )


class RejectionCount(BaseModel):
    """All rejections of one reason in one file: the summary stored instead of a row each."""

    source: str
    reason: RejectReason
    count: int
    kept: int = Field(description=f"how many are kept in full (at most {KEEP_PER_REASON})")
    first_line: int
    last_line: int


class IngestReport(BaseModel):
    """The outcome of an ingest run: counts, reasons, first rejections and time ranges."""

    sources: list[SourceSummary] = Field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = Field(default_factory=dict)
    rejections: list[Rejection] = Field(
        default_factory=list, description="the first rejections, in file order"
    )
    rejections_omitted: int = Field(default=0, description="rejections beyond those listed")
    rejection_counts: list[RejectionCount] = Field(
        default_factory=list, description="per file and reason: how many, where, how many kept"
    )
    backends: dict[str, BackendSpan] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


@dataclass
class IngestResult:
    """Accepted points (sorted by ts, backend; empty when a sink took them), the rejections kept
    in full, and the report.

    `by_source` holds the same accepted points grouped by the file they came from, in file order,
    so that storage can keep their provenance.
    """

    points: list[TelemetryPoint]
    rejections: list[Rejection]
    report: IngestReport
    by_source: dict[str, list[TelemetryPoint]] = field(default_factory=dict, repr=False)


class _Reject(Exception):
    """Internal: raised while converting a row; becomes a `Rejection`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _blank(raw: object) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def _number(raw: object, name: str, upper: float | None = None) -> float:
    if isinstance(raw, bool):
        raise _Reject(RejectReason.BAD_TYPE, f"{name} is a boolean, not a number")
    if isinstance(raw, float):
        value = raw
    elif isinstance(raw, int):
        try:
            value = float(raw)
        except OverflowError:
            raise _Reject(RejectReason.NON_FINITE, f"{name} overflows a float") from None
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise _Reject(
                RejectReason.BAD_TYPE, f"{name} is not a number: {raw.strip()[:40]!r}"
            ) from None
    else:
        raise _Reject(RejectReason.BAD_TYPE, f"{name} has type {type(raw).__name__}, not a number")
    if not math.isfinite(value):
        raise _Reject(RejectReason.NON_FINITE, f"{name} is {value}")
    if upper is not None and value > upper:
        raise _Reject(
            RejectReason.OUT_OF_BOUNDS, f"{name} {value:.6g} is above the bound {upper:g}"
        )
    return value


def _normalise(name: str) -> str:
    return name.strip().lower()


@dataclass
class _RowStats:
    """Per-file counters behind the report's notes."""

    single_latency: int = 0
    load_unknown: int = 0
    in_flight_estimated: int = 0

    def add(self, other: _RowStats) -> None:
        self.single_latency += other.single_latency
        self.load_unknown += other.load_unknown
        self.in_flight_estimated += other.in_flight_estimated


@dataclass
class _Tally:
    """Rejections of one reason in one file: counted, with the first few kept in full."""

    count: int = 0
    first_line: int = 0
    last_line: int = 0
    kept: list[Rejection] = field(default_factory=list)


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
        self._tallies: dict[tuple[str, RejectReason], _Tally] = {}
        self._sources: list[SourceSummary] = []
        self._stats = _RowStats()
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
            except _Reject as exc:
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
        all_lines = _chain(leading, it)
        parse = _FileParse(self, source, backend)
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
            raise _Reject(RejectReason.MISSING_FIELD, "backend is empty")
        if len(name) > MAX_BACKEND_NAME:
            raise _Reject(
                RejectReason.BAD_BACKEND, f"backend name longer than {MAX_BACKEND_NAME} characters"
            )
        if not name.isprintable() or undecodable(name):
            raise _Reject(RejectReason.BAD_BACKEND, "backend name contains control characters")
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


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


@dataclass
class _Pending:
    """An accepted row on its way to the sink."""

    point: TelemetryPoint
    original_ts: float
    line: int
    raw: str
    flags: tuple[int, int, int]


class _FileParse:
    """The state of parsing one file; merged into the `Ingestor` by `commit` (and, with a sink,
    chunk by chunk as points land)."""

    def __init__(self, owner: Ingestor, source: str, default_backend: str | None) -> None:
        self.owner = owner
        self.source = source
        self.default_backend = default_backend
        self.points: list[TelemetryPoint] = []
        self.pending: list[_Pending] = []
        self.seen: set[tuple[str, float]] = set()
        self.last_ts: dict[str, float] = {}
        self.next_tick: dict[str, tuple[float, int]] = {}
        self.spans: dict[str, Span] = {}
        self.original: dict[str, Span] = {}
        self.first: list[Rejection] = []
        self.tallies: dict[RejectReason, _Tally] = {}
        self.stats = _RowStats()
        self.unit: str | None = None if owner.time_unit == "auto" else owner.time_unit
        self.rows = 0
        self.blank = 0
        self.accepted = 0
        self.rejected = 0
        self.fmt: Literal["csv", "jsonl"] = "csv"
        self.columns: dict[str, str] = {}
        self.ignored: list[str] = []

    @property
    def streaming(self) -> bool:
        return self.owner.sink is not None

    # -- formats ------------------------------------------------------------------------------

    def _usable(self, line_no: int, line: str) -> bool:
        """Reject a line that is too long or not UTF-8 before parsing it."""
        if isinstance(line, LongLine):
            self._reject(
                line_no,
                line,
                RejectReason.MALFORMED_ROW,
                f"line longer than {len(line):,}+ characters",
            )
            return False
        if undecodable(line):
            self._reject(line_no, line, RejectReason.MALFORMED_ROW, "not UTF-8 text")
            return False
        return True

    def run_csv(self, lines: Iterator[str]) -> None:
        self.fmt = "csv"
        header_line = ""
        line_no = 0
        for line in lines:
            line_no += 1
            if line.strip():
                header_line = line
                break
            self.blank += 1
        delimiter = max(_CSV_DELIMITERS, key=header_line.count)
        if header_line.count(delimiter) == 0:
            delimiter = ","
        header = next(csv.reader([header_line], delimiter=delimiter))
        index = self._map_header(header)
        width = len(header)

        # One record per physical line: telemetry has no multi-line fields, and a stray quote must
        # cost only its own line, not swallow the rest of the file into one "row".
        for line in lines:
            line_no += 1
            text = line.rstrip("\r\n")
            if not text.strip():
                self.blank += 1
                continue
            self.rows += 1
            if not self._usable(line_no, line):
                continue
            if '"' in text:
                try:
                    row = next(csv.reader([text], delimiter=delimiter, strict=True))
                except csv.Error as exc:
                    self._reject(line_no, line, RejectReason.MALFORMED_ROW, f"CSV error: {exc}")
                    continue
            else:
                row = text.split(delimiter)
            if len(row) != width:
                self._reject(
                    line_no,
                    line,
                    RejectReason.MALFORMED_ROW,
                    f"expected {width} fields, got {len(row)}",
                )
                continue
            self._accept(line_no, line, {name: row[i] for name, i in index.items()})
        self._flush()

    def _map_header(self, header: list[str]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, column in enumerate(header):
            name = _ALIAS_TO_FIELD.get(_normalise(column))
            if name is None:
                self.ignored.append(column)
                continue
            if name in index:
                raise IngestError(
                    self.source,
                    f"columns {header[index[name]]!r} and {column!r} both name the field "
                    f"{name!r}; keep one",
                )
            index[name] = i
            self.columns[name] = column
        missing = []
        if "ts" not in index:
            missing.append("a timestamp (" + "|".join(FIELD_ALIASES["ts"]) + ")")
        if "p95_ms" not in index and "p50_ms" not in index:
            missing.append(
                "a latency (" + "|".join(FIELD_ALIASES["p95_ms"] + FIELD_ALIASES["p50_ms"]) + ")"
            )
        if missing:
            shown = ", ".join(repr(c) for c in header[:10]) or "nothing"
            raise IngestError(
                self.source,
                f"no usable CSV header: found {shown}; need {' and '.join(missing)}",
            )
        return index

    def run_jsonl(self, lines: Iterator[str]) -> None:
        self.fmt = "jsonl"
        objects = 0
        key_maps: dict[tuple[str, ...], dict[str, str] | str] = {}
        ignored: set[str] = set()
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                self.blank += 1
                continue
            self.rows += 1
            if not self._usable(line_no, line):
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                detail = getattr(exc, "msg", "nested too deeply")
                self._reject(line_no, line, RejectReason.MALFORMED_ROW, f"invalid JSON: {detail}")
                continue
            if not isinstance(obj, dict):
                self._reject(
                    line_no,
                    line,
                    RejectReason.MALFORMED_ROW,
                    f"a JSON {type(obj).__name__}, not an object",
                )
                continue
            objects += 1
            keys = tuple(obj)
            mapping = key_maps.get(keys)
            if mapping is None:
                if len(key_maps) > 1000:  # bounded: a file whose every row has new keys
                    key_maps.clear()
                mapping = self._map_keys(keys, ignored)
                key_maps[keys] = mapping
            if isinstance(mapping, str):
                self._reject(line_no, line, RejectReason.AMBIGUOUS_FIELD, mapping)
                continue
            values = {name: obj[key] for name, key in mapping.items()}
            self._accept(line_no, line, values)
        if self.rows and not objects:
            raise IngestError(self.source, "not JSONL: no line is a JSON object")
        self._flush()
        self.ignored = sorted(ignored)[:100]

    @staticmethod
    def _map_keys(keys: tuple[str, ...], ignored: set[str]) -> dict[str, str] | str:
        mapping: dict[str, str] = {}
        for key in keys:
            name = _ALIAS_TO_FIELD.get(_normalise(key)) if isinstance(key, str) else None
            if name is None:
                if len(ignored) < 100:
                    ignored.add(key)
                continue
            if name in mapping:
                return f"keys {mapping[name]!r} and {key!r} both name the field {name!r}"
            mapping[name] = key
        return mapping

    # -- rows ---------------------------------------------------------------------------------

    def _reject(self, line: int, raw: str, reason: RejectReason, detail: str) -> None:
        self.rejected += 1
        self.owner.rejected_so_far += 1
        tally = self.tallies.get(reason)
        if tally is None:
            tally = self.tallies[reason] = _Tally(first_line=line)
        tally.count += 1
        tally.last_line = line
        keep = len(tally.kept) < KEEP_PER_REASON
        report = len(self.owner._first) + len(self.first) < self.owner.max_reported
        if keep or report:
            rejection = Rejection(
                source=self.source,
                line=line,
                reason=reason,
                detail=detail,
                raw=printable_raw(raw, MAX_RAW_CHARS),
            )
            if keep:
                tally.kept.append(rejection)
            if report:
                self.first.append(rejection)

    def _accept(self, line: int, raw: str, values: dict[str, object]) -> None:
        try:
            point, flags = self._convert(values)
            self._check_sequence(point)
        except _Reject as exc:
            self._reject(line, raw, exc.reason, exc.detail)
            return
        # A valid row takes its place in the sequence (and, retimed, its tick) even when the
        # store already holds it, so re-running a file maps every row to the same time again.
        self.last_ts[point.backend] = point.ts
        if (point.backend, point.ts) in self.owner._seen:  # from an earlier file, no sink
            self._reject(
                line,
                raw,
                RejectReason.DUPLICATE,
                f"backend {point.backend!r} already has a row at {_iso(point.ts)} "
                "from an earlier file",
            )
            return
        if not self.streaming:
            self.seen.add((point.backend, point.ts))
        stored = point
        if self.owner.retime:
            origin, n = self.next_tick.get(point.backend) or self.owner._next_tick.get(
                point.backend, (point.ts, 0)
            )
            stored = replace(point, ts=origin + n * TICK_SECONDS)
            self.next_tick[point.backend] = (origin, n + 1)
        self.pending.append(_Pending(stored, point.ts, line, raw, flags))
        if self.streaming and len(self.pending) >= CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Hand pending points to the sink (or keep them); those already stored are rejected."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        sink = self.owner.sink
        duplicates: Collection[int] = ()
        if sink is not None:
            duplicates = set(sink(self.source, [p.point for p in pending]))
        for i, p in enumerate(pending):
            if i in duplicates:
                when = "retimed to " if self.owner.retime else ""
                self._reject(
                    p.line,
                    p.raw,
                    RejectReason.DUPLICATE,
                    f"backend {p.point.backend!r} already has a row at {when}"
                    f"{_iso(p.point.ts)} in the store",
                )
                continue
            self._land(p)

    def _land(self, p: _Pending) -> None:
        backend = p.point.backend
        if not self.streaming:
            self.points.append(p.point)
        span = self.spans.get(backend) or self.owner._spans.get(backend)
        if span is None:
            span = self.spans[backend] = Span()
        elif backend not in self.spans:
            self.spans[backend] = span
        span.add(p.point.ts)
        if self.owner.retime:
            original = self.original.get(backend) or self.owner._original.get(backend)
            if original is None:
                original = self.original[backend] = Span()
            elif backend not in self.original:
                self.original[backend] = original
            original.add(p.original_ts)
        single, load_unknown, estimated = p.flags
        self.stats.single_latency += single
        self.stats.load_unknown += load_unknown
        self.stats.in_flight_estimated += estimated
        self.accepted += 1

    def _timestamp(self, raw: object) -> float:
        try:
            number = number_or_none(raw)
            if number is None:
                assert isinstance(raw, str)
                return parse_iso(raw.strip())
            if not math.isfinite(number):
                raise ValueError(f"timestamp {number} is not finite")
            found = unit_of(number)
            if found is None:
                raise ValueError(f"timestamp {number:.6g} is too large for any epoch unit")
            unit = self.unit
            if unit is None:
                unit = self.unit = found
            elif found != unit and self.owner.time_unit == "auto":
                raise _Reject(
                    RejectReason.TIME_UNIT_MIXED,
                    f"timestamp {number:.15g} looks like {UNIT_NAMES[found]}, but this file's "
                    f"numeric times are in {UNIT_NAMES[unit]}",
                )
            ts = number * _UNIT_SCALE[unit]
            if MIN_TS <= ts < MAX_TS:
                return ts
            return check_time(ts, f"{number:.15g} ({UNIT_NAMES[unit]})")
        except ValueError as exc:
            raise _Reject(RejectReason.BAD_TIMESTAMP, str(exc)) from None

    def _convert(self, values: dict[str, object]) -> tuple[TelemetryPoint, tuple[int, int, int]]:
        raw_ts = values.get("ts")
        if _blank(raw_ts):
            raise _Reject(RejectReason.MISSING_FIELD, "timestamp is missing")
        ts = self._timestamp(raw_ts)

        backend = self._backend(values.get("backend"))
        bounds = self.owner.bounds

        raw95, raw50 = values.get("p95_ms"), values.get("p50_ms")
        top = bounds.max_latency_ms
        p95 = None if _blank(raw95) else _number(raw95, "p95 latency", top)
        p50 = None if _blank(raw50) else _number(raw50, "p50 latency", top)
        single = 0
        if p95 is None and p50 is None:
            raise _Reject(RejectReason.MISSING_FIELD, "latency is missing")
        if p95 is None:
            p95, single = p50, 1
        elif p50 is None:
            p50, single = p95, 1
        assert p50 is not None and p95 is not None
        if p95 < 0 or p50 < 0:
            raise _Reject(RejectReason.NEGATIVE_LATENCY, f"latency is negative ({min(p50, p95)})")
        if p50 > p95:
            raise _Reject(RejectReason.PERCENTILE_ORDER, f"p50 {p50} exceeds p95 {p95}")

        raw_rps, raw_fl = values.get("rps"), values.get("in_flight")
        rps = None if _blank(raw_rps) else _number(raw_rps, "rps", bounds.max_rps)
        in_flight = None if _blank(raw_fl) else _number(raw_fl, "in_flight", bounds.max_rps)
        if rps is not None and rps < 0:
            raise _Reject(RejectReason.NEGATIVE_LOAD, f"rps is negative ({rps})")
        if in_flight is not None and in_flight < 0:
            raise _Reject(RejectReason.NEGATIVE_LOAD, f"in_flight is negative ({in_flight})")

        raw_err = values.get("error_rate")
        error_rate = 0.0 if _blank(raw_err) else _number(raw_err, "error_rate")
        if not 0.0 <= error_rate <= 1.0:
            raise _Reject(
                RejectReason.ERROR_RATE_OUT_OF_RANGE, f"error_rate {error_rate} is outside [0, 1]"
            )

        load_unknown = estimated = 0
        if rps is None:
            load_unknown = 1
            load_known = False
            rps = 0.0
            if in_flight is None:
                in_flight = 0.0
        else:
            load_known = True
            if in_flight is None:
                in_flight = rps * p50 / 1000.0
                estimated = 1
        point = TelemetryPoint(
            ts=ts,
            backend=backend,
            rps=rps,
            p50_ms=p50,
            p95_ms=p95,
            error_rate=error_rate,
            in_flight=in_flight,
            load_known=load_known,
        )
        return point, (single, load_unknown, estimated)

    def _backend(self, raw: object) -> str:
        if _blank(raw):
            if self.default_backend is None:
                raise _Reject(RejectReason.MISSING_FIELD, "backend is missing")
            name = self.default_backend
        elif not isinstance(raw, str):
            raise _Reject(
                RejectReason.BAD_TYPE, f"backend has type {type(raw).__name__}, not a string"
            )
        else:
            names = self.owner._names
            name = names.get(raw)  # type: ignore[assignment]
            if name is None:
                name = self.owner._check_backend_name(raw)
                if len(names) < 10_000:
                    names[raw] = name
        allowed = self.owner.allowed
        if allowed is not None and name not in allowed:
            raise _Reject(
                RejectReason.UNKNOWN_BACKEND,
                f"backend {name[:60]!r} is not in the fleet ({', '.join(sorted(allowed)[:10])})",
            )
        return name

    def _check_sequence(self, point: TelemetryPoint) -> None:
        """Within one file: a repeat of the backend's last time is a duplicate, an earlier time
        out of order. (Rows of earlier files or the store are checked after: a valid row keeps
        its place in the sequence even when it is already stored.)"""
        key = (point.backend, point.ts)
        last = self.last_ts.get(point.backend)
        if last == point.ts or key in self.seen:
            raise _Reject(
                RejectReason.DUPLICATE,
                f"backend {point.backend!r} already has a row at {_iso(point.ts)}",
            )
        if last is not None and point.ts < last:
            raise _Reject(
                RejectReason.OUT_OF_ORDER,
                f"{_iso(point.ts)} is before the previous row of {point.backend!r} at {_iso(last)}",
            )

    def commit(self) -> SourceSummary:
        owner = self.owner
        owner._next_tick.update(self.next_tick)
        owner._spans.update(self.spans)
        owner._original.update(self.original)
        if self.points:
            owner._points.setdefault(self.source, []).extend(self.points)
        owner._seen.update(self.seen)
        owner._first.extend(self.first[: max(owner.max_reported - len(owner._first), 0)])
        for reason, tally in self.tallies.items():
            owner._tallies[(self.source, reason)] = tally
        owner._stats.add(self.stats)
        owner.accepted += self.accepted
        owner.rejected += self.rejected
        if self.unit is not None:
            owner._units[self.source] = self.unit
        summary = SourceSummary(
            source=self.source,
            format=self.fmt,
            rows=self.rows,
            accepted=self.accepted,
            rejected=self.rejected,
            blank_lines=self.blank,
            columns=dict(self.columns),
            ignored_columns=list(self.ignored),
            default_backend=self.default_backend,
        )
        owner._sources.append(summary)
        return summary


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
