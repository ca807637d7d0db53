"""Real telemetry in: CSV or JSONL files become the same `TelemetryPoint`s the simulator emits.

This is the trust boundary for telemetry from outside. Every row either becomes a checked
`TelemetryPoint` or a `Rejection` with its line number, a reason code and the raw text, so nothing
is lost silently and nothing crashes deeper in the pipeline. A file that cannot be read as CSV or
JSONL at all (binary, not UTF-8, no usable header, no JSON objects) raises `IngestError` instead.

Interpretation rules (also shown in `arcpoint ingest --help`):

- Columns / keys are matched case-insensitively through aliases (see `FIELD_ALIASES`). Two columns
  that name the same field (say `latency` and `p95_ms`) are ambiguous and refused, not guessed.
- Timestamps: ISO 8601 (`2014-04-01T00:05:00Z`, with or without offset), `YYYY-mm-dd HH:MM:SS`,
  or unix seconds. Timestamps without an offset are taken as UTC.
- Latency: `latency`/`value`/`p95` is the p95. Where only one latency is known (a single-column
  series such as NAB, or only `p50_ms`), p50 and p95 are both set to it.
- Load: `rps` known -> `load_known=True`; `in_flight` missing is then estimated by Little's law
  as `rps * p50_ms / 1000`. `rps` unknown -> `load_known=False`, `rps=0` and `in_flight=0` (or
  the `in_flight` column's value if present). `error_rate` missing -> 0.
- Backend: the `backend` column; where the file has none, `--backend` or else the file stem. An
  empty `backend` cell falls back to `--backend` if given, else the row is rejected.
- Order: per source and backend, timestamps must increase. A row whose (backend, timestamp) was
  already accepted (in this or an earlier file of the same run, or already in the store when the
  caller passes a `stored` lookup) is a duplicate; a row older than its backend's last accepted
  row is out of order. Accepted points come back sorted by (ts, backend), ready to replay
  through the same pipeline as simulated telemetry.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tools.telemetry import TICK_SECONDS, TelemetryPoint

Format = Literal["auto", "csv", "jsonl"]

StoredLookup = Callable[[str], Collection[float]]
"""backend -> timestamps already stored for it (so a re-run cannot store a row twice)."""

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

    MALFORMED_ROW = "malformed_row"  # not parseable: wrong field count, invalid JSON, not an object
    MISSING_FIELD = "missing_field"  # timestamp, latency or backend absent/empty
    AMBIGUOUS_FIELD = "ambiguous_field"  # JSONL row with two keys for one field
    BAD_TYPE = "bad_type"  # a number that is not a number (text, boolean, list...)
    BAD_TIMESTAMP = "bad_timestamp"  # unparseable, non-finite or negative timestamp
    NON_FINITE = "non_finite"  # NaN or infinite latency, load or error rate
    NEGATIVE_LATENCY = "negative_latency"
    NEGATIVE_LOAD = "negative_load"  # negative rps or in_flight
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
    backends: dict[str, BackendSpan] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


@dataclass
class IngestResult:
    """Accepted points (sorted by ts, backend), every rejection, and the report.

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


def _number(raw: object, name: str) -> float:
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
    return value


def parse_timestamp(raw: object) -> float:
    """Unix seconds from ISO 8601, `YYYY-mm-dd HH:MM:SS` (UTC unless offset given) or a number.

    Raises ValueError with a readable message when the value is none of those.
    """
    if isinstance(raw, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                raise ValueError(
                    f"timestamp {text[:40]!r} is not ISO 8601, "
                    "'YYYY-mm-dd HH:MM:SS' or unix seconds"
                ) from None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            try:
                value = moment.timestamp()
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"timestamp {text[:40]!r} is out of range") from None
    else:
        raise ValueError(f"timestamp has type {type(raw).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"timestamp {value} is not a finite time at or after 1970-01-01")
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def _normalise(name: str) -> str:
    return name.strip().lower()


@dataclass
class _RowStats:
    """Per-file counters behind the report's notes."""

    single_latency: int = 0
    load_unknown: int = 0
    in_flight_estimated: int = 0


class Ingestor:
    """Accumulates files into one consistent set of points and rejections.

    A file is parsed completely before it changes any state, so a file that turns out unusable
    (`IngestError`) leaves the ingestor as it was and the caller can go on or stop.
    """

    def __init__(
        self,
        *,
        allowed_backends: Iterable[str] | None = None,
        max_reported: int = 20,
        stored: StoredLookup | None = None,
        retime: bool = False,
    ) -> None:
        """`allowed_backends`: the fleet, if known; rows naming other backends are rejected.
        `stored`: where to look up timestamps already in the store (asked once per backend).
        `retime`: re-space each backend's accepted rows one simulator tick (`TICK_SECONDS`)
        apart, from its first accepted timestamp, in the order they are read. That replays a
        series sampled at another cadence (NAB: 5 min or 1 h) as the simulator would have
        produced it: feature windows and the forecast horizon count points, and a window empties
        after a gap longer than its long lookback, so hourly points would never fill one. Gaps
        close up and original times are not kept in the points; order and duplicate checks still
        use the original times, the check against the store uses the times that get stored.
        """
        self.allowed = frozenset(allowed_backends) if allowed_backends is not None else None
        self.max_reported = max_reported
        self.retime = retime
        self._next_tick: dict[str, tuple[float, int]] = {}
        self._original_ts: dict[str, list[float]] = {}
        self._stored_lookup = stored
        self._stored: dict[str, Collection[float]] = {}
        self._points: dict[str, list[TelemetryPoint]] = {}
        self._rejections: list[Rejection] = []
        self._seen: set[tuple[str, float]] = set()
        self._sources: list[SourceSummary] = []
        self._stats = _RowStats()

    # -- public -------------------------------------------------------------------------------

    def add_file(
        self, path: str | Path, *, fmt: Format = "auto", backend: str | None = None
    ) -> SourceSummary:
        """Parse one file. `backend` names rows without a backend value (default: the file stem)."""
        path = Path(path)
        source = str(path)
        try:
            with path.open("rb") as handle:
                head = handle.read(8192)
        except OSError as exc:
            raise IngestError(source, f"cannot read: {exc.strerror or exc}") from None
        if b"\x00" in head:
            raise IngestError(source, "binary file (contains NUL bytes), not CSV or JSONL text")
        default = backend if backend is not None else path.stem
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                return self.add_lines(handle, source=source, fmt=fmt, backend=default)
        except UnicodeDecodeError as exc:
            bad = exc.object[exc.start : exc.start + 1].hex()
            raise IngestError(source, f"not UTF-8 text ({exc.reason}: byte 0x{bad})") from None

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
        if not first:
            raise IngestError(source, "empty file (no header and no rows)")
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
        """Everything accepted so far, sorted by (ts, backend), with the report."""
        points = [p for group in self._points.values() for p in group]
        points.sort(key=lambda p: (p.ts, p.backend))
        return IngestResult(
            points=points,
            rejections=list(self._rejections),
            report=self._report(points),
            by_source={k: list(v) for k, v in self._points.items()},
        )

    # -- internals ----------------------------------------------------------------------------

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
        if not name.isprintable():
            raise _Reject(RejectReason.BAD_BACKEND, "backend name contains control characters")
        return name

    def _already_stored(self, backend: str, ts: float) -> bool:
        if self._stored_lookup is None:
            return False
        known = self._stored.get(backend)
        if known is None:
            known = self._stored[backend] = frozenset(self._stored_lookup(backend))
        return ts in known

    def _report(self, points: list[TelemetryPoint]) -> IngestReport:
        reasons = Counter(r.reason.value for r in self._rejections)
        per_backend: dict[str, list[float]] = {}
        for p in points:
            per_backend.setdefault(p.backend, []).append(p.ts)
        spans: dict[str, BackendSpan] = {}
        notes: list[str] = []
        off_tick: Counter[float] = Counter()
        for name in sorted(per_backend):
            stamps = per_backend[name]
            spans[name] = BackendSpan(
                count=len(stamps),
                first_ts=stamps[0],
                last_ts=stamps[-1],
                first=_iso(stamps[0]),
                last=_iso(stamps[-1]),
                median_interval_s=_median_gap(stamps),
            )
        original_stamps = self._original_ts if self.retime else per_backend
        for stamps in original_stamps.values():
            median = _median_gap(stamps)
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
        shown = self._rejections[: self.max_reported]
        return IngestReport(
            sources=list(self._sources),
            accepted=len(points),
            rejected=len(self._rejections),
            rejected_by_reason=dict(sorted(reasons.items())),
            rejections=shown,
            rejections_omitted=len(self._rejections) - len(shown),
            backends=spans,
            notes=notes,
        )


def _median_gap(stamps: list[float]) -> float | None:
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(gaps) if gaps else None


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


class _FileParse:
    """The state of parsing one file; merged into the `Ingestor` only by `commit`."""

    def __init__(self, owner: Ingestor, source: str, default_backend: str | None) -> None:
        self.owner = owner
        self.source = source
        self.default_backend = default_backend
        self.points: list[TelemetryPoint] = []
        self.rejections: list[Rejection] = []
        self.seen: set[tuple[str, float]] = set()
        self.last_ts: dict[str, float] = {}
        self.next_tick: dict[str, tuple[float, int]] = {}
        self.original_ts: dict[str, list[float]] = {}
        self.stats = _RowStats()
        self.rows = 0
        self.blank = 0
        self.fmt: Literal["csv", "jsonl"] = "csv"
        self.columns: dict[str, str] = {}
        self.ignored: list[str] = []

    # -- formats ------------------------------------------------------------------------------

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
                mapping = self._map_keys(keys, ignored)
                key_maps[keys] = mapping
            if isinstance(mapping, str):
                self._reject(line_no, line, RejectReason.AMBIGUOUS_FIELD, mapping)
                continue
            values = {name: obj[key] for name, key in mapping.items()}
            self._accept(line_no, line, values)
        if self.rows and not objects:
            raise IngestError(self.source, "not JSONL: no line is a JSON object")
        self.ignored = sorted(ignored)

    @staticmethod
    def _map_keys(keys: tuple[str, ...], ignored: set[str]) -> dict[str, str] | str:
        mapping: dict[str, str] = {}
        for key in keys:
            name = _ALIAS_TO_FIELD.get(_normalise(key)) if isinstance(key, str) else None
            if name is None:
                ignored.add(key)
                continue
            if name in mapping:
                return f"keys {mapping[name]!r} and {key!r} both name the field {name!r}"
            mapping[name] = key
        return mapping

    # -- rows ---------------------------------------------------------------------------------

    def _reject(self, line: int, raw: str, reason: RejectReason, detail: str) -> None:
        self.rejections.append(
            Rejection(
                source=self.source,
                line=line,
                reason=reason,
                detail=detail,
                raw=raw.rstrip("\r\n")[:MAX_RAW_CHARS],
            )
        )

    def _accept(self, line: int, raw: str, values: dict[str, object]) -> None:
        try:
            point, flags = self._convert(values)
            self._check_sequence(point)
        except _Reject as exc:
            self._reject(line, raw, exc.reason, exc.detail)
            return
        # A valid row takes its place in the sequence (and, retimed, its tick) even when the
        # store already holds it, so re-running a file maps every row to the same time again.
        self.seen.add((point.backend, point.ts))
        self.last_ts[point.backend] = point.ts
        stored = point
        if self.owner.retime:
            origin, n = self.next_tick.get(point.backend) or self.owner._next_tick.get(
                point.backend, (point.ts, 0)
            )
            stored = replace(point, ts=origin + n * TICK_SECONDS)
            self.next_tick[point.backend] = (origin, n + 1)
        try:
            self._check_stored(stored)
        except _Reject as exc:
            self._reject(line, raw, exc.reason, exc.detail)
            return
        self.points.append(stored)
        if self.owner.retime:
            self.original_ts.setdefault(point.backend, []).append(point.ts)
        single, load_unknown, estimated = flags
        self.stats.single_latency += single
        self.stats.load_unknown += load_unknown
        self.stats.in_flight_estimated += estimated

    def _convert(self, values: dict[str, object]) -> tuple[TelemetryPoint, tuple[int, int, int]]:
        raw_ts = values.get("ts")
        if _blank(raw_ts):
            raise _Reject(RejectReason.MISSING_FIELD, "timestamp is missing")
        try:
            ts = parse_timestamp(raw_ts)
        except ValueError as exc:
            raise _Reject(RejectReason.BAD_TIMESTAMP, str(exc)) from None

        backend = self._backend(values.get("backend"))

        raw95, raw50 = values.get("p95_ms"), values.get("p50_ms")
        p95 = None if _blank(raw95) else _number(raw95, "p95 latency")
        p50 = None if _blank(raw50) else _number(raw50, "p50 latency")
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
        rps = None if _blank(raw_rps) else _number(raw_rps, "rps")
        in_flight = None if _blank(raw_fl) else _number(raw_fl, "in_flight")
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
            name = self.owner._check_backend_name(raw)
        allowed = self.owner.allowed
        if allowed is not None and name not in allowed:
            raise _Reject(
                RejectReason.UNKNOWN_BACKEND,
                f"backend {name[:60]!r} is not in the fleet ({', '.join(sorted(allowed)[:10])})",
            )
        return name

    def _check_sequence(self, point: TelemetryPoint) -> None:
        key = (point.backend, point.ts)
        if key in self.seen or key in self.owner._seen:
            raise _Reject(
                RejectReason.DUPLICATE,
                f"backend {point.backend!r} already has a row at {_iso(point.ts)}",
            )
        last = self.last_ts.get(point.backend)
        if last is not None and point.ts < last:
            raise _Reject(
                RejectReason.OUT_OF_ORDER,
                f"{_iso(point.ts)} is before the previous row of {point.backend!r} at {_iso(last)}",
            )

    def _check_stored(self, point: TelemetryPoint) -> None:
        if self.owner._already_stored(point.backend, point.ts):
            when = "retimed to " if self.owner.retime else ""
            raise _Reject(
                RejectReason.DUPLICATE,
                f"backend {point.backend!r} already has a row at {when}{_iso(point.ts)} "
                "in the store",
            )

    def commit(self) -> SourceSummary:
        owner = self.owner
        owner._next_tick.update(self.next_tick)
        for backend, stamps in self.original_ts.items():
            owner._original_ts.setdefault(backend, []).extend(stamps)
        owner._points.setdefault(self.source, []).extend(self.points)
        owner._rejections.extend(self.rejections)
        owner._seen.update(self.seen)
        owner._stats.single_latency += self.stats.single_latency
        owner._stats.load_unknown += self.stats.load_unknown
        owner._stats.in_flight_estimated += self.stats.in_flight_estimated
        summary = SourceSummary(
            source=self.source,
            format=self.fmt,
            rows=self.rows,
            accepted=len(self.points),
            rejected=len(self.rejections),
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
) -> IngestResult:
    """Ingest several files into one result; the first unusable file raises `IngestError`."""
    ingestor = Ingestor(allowed_backends=allowed_backends, max_reported=max_reported)
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
) -> IngestResult:
    """Ingest one file; see the module docstring for how columns and rows are read."""
    return ingest_files(
        [path],
        fmt=fmt,
        backend=backend,
        allowed_backends=allowed_backends,
        max_reported=max_reported,
    )
