"""Parsing one file of telemetry, row by row: formats, conversion, sequence checks, and handing
accepted points to the sink in chunks (the rules are in context_api/ingest.py's docstring)."""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from context_api.ingest_models import (
    ALIAS_TO_FIELD,
    CHUNK_ROWS,
    CSV_DELIMITERS,
    FIELD_ALIASES,
    KEEP_PER_REASON,
    MAX_RAW_CHARS,
    IngestError,
    Rejection,
    RejectReason,
    RowRejected,
    RowStats,
    SourceSummary,
    Tally,
    is_blank,
    normalise,
    to_number,
)
from context_api.ingest_values import (
    UNIT_NAMES,
    LongLine,
    Span,
    printable_raw,
    read_time,
    to_seconds,
    undecodable,
)
from context_api.ingest_values import iso as _iso
from tools.telemetry import TICK_SECONDS, TelemetryPoint

if TYPE_CHECKING:
    from context_api.ingest import Ingestor


def chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


@dataclass
class Pending:
    """An accepted row on its way to the sink."""

    point: TelemetryPoint
    original_ts: float
    line: int
    raw: str
    flags: tuple[int, int, int]


class FileParse:
    """The state of parsing one file; merged into the `Ingestor` by `commit` (and, with a sink,
    chunk by chunk as points land)."""

    def __init__(self, owner: Ingestor, source: str, default_backend: str | None) -> None:
        self.owner = owner
        self.source = source
        self.default_backend = default_backend
        self.points: list[TelemetryPoint] = []
        self.pending: list[Pending] = []
        self.seen: set[tuple[str, float]] = set()
        self.last_ts: dict[str, float] = {}
        self.next_tick: dict[str, tuple[float, int]] = {}
        self.spans: dict[str, Span] = {}
        self.original: dict[str, Span] = {}
        self.first: list[Rejection] = []
        self.tallies: dict[RejectReason, Tally] = {}
        self.stats = RowStats()
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
        delimiter = max(CSV_DELIMITERS, key=header_line.count)
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
            name = ALIAS_TO_FIELD.get(normalise(column))
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
            name = ALIAS_TO_FIELD.get(normalise(key)) if isinstance(key, str) else None
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
            tally = self.tallies[reason] = Tally(first_line=line)
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
        except RowRejected as exc:
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
        self.pending.append(Pending(stored, point.ts, line, raw, flags))
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

    def _land(self, p: Pending) -> None:
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
            number, found = read_time(raw)
            if found is None:  # an ISO time
                return number
            unit = self.unit
            if unit is None:
                unit = self.unit = found
            elif found != unit and self.owner.time_unit == "auto":
                raise RowRejected(
                    RejectReason.TIME_UNIT_MIXED,
                    f"timestamp {number:.15g} looks like {UNIT_NAMES[found]}, but this file's "
                    f"numeric times are in {UNIT_NAMES[unit]}",
                )
            return to_seconds(number, unit)
        except ValueError as exc:
            raise RowRejected(RejectReason.BAD_TIMESTAMP, str(exc)) from None

    def _convert(self, values: dict[str, object]) -> tuple[TelemetryPoint, tuple[int, int, int]]:
        raw_ts = values.get("ts")
        if is_blank(raw_ts):
            raise RowRejected(RejectReason.MISSING_FIELD, "timestamp is missing")
        ts = self._timestamp(raw_ts)

        backend = self._backend(values.get("backend"))
        bounds = self.owner.bounds

        raw95, raw50 = values.get("p95_ms"), values.get("p50_ms")
        top = bounds.max_latency_ms
        p95 = None if is_blank(raw95) else to_number(raw95, "p95 latency", top)
        p50 = None if is_blank(raw50) else to_number(raw50, "p50 latency", top)
        single = 0
        if p95 is None and p50 is None:
            raise RowRejected(RejectReason.MISSING_FIELD, "latency is missing")
        if p95 is None:
            p95, single = p50, 1
        elif p50 is None:
            p50, single = p95, 1
        assert p50 is not None and p95 is not None
        if p95 < 0 or p50 < 0:
            raise RowRejected(
                RejectReason.NEGATIVE_LATENCY, f"latency is negative ({min(p50, p95)})"
            )
        if p50 > p95:
            raise RowRejected(RejectReason.PERCENTILE_ORDER, f"p50 {p50} exceeds p95 {p95}")

        raw_rps, raw_fl = values.get("rps"), values.get("in_flight")
        rps = None if is_blank(raw_rps) else to_number(raw_rps, "rps", bounds.max_rps)
        in_flight = None if is_blank(raw_fl) else to_number(raw_fl, "in_flight", bounds.max_rps)
        if rps is not None and rps < 0:
            raise RowRejected(RejectReason.NEGATIVE_LOAD, f"rps is negative ({rps})")
        if in_flight is not None and in_flight < 0:
            raise RowRejected(RejectReason.NEGATIVE_LOAD, f"in_flight is negative ({in_flight})")

        raw_err = values.get("error_rate")
        error_rate = 0.0 if is_blank(raw_err) else to_number(raw_err, "error_rate")
        if not 0.0 <= error_rate <= 1.0:
            raise RowRejected(
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
        if is_blank(raw):
            if self.default_backend is None:
                raise RowRejected(RejectReason.MISSING_FIELD, "backend is missing")
            name = self.default_backend
        elif not isinstance(raw, str):
            raise RowRejected(
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
            raise RowRejected(
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
            raise RowRejected(
                RejectReason.DUPLICATE,
                f"backend {point.backend!r} already has a row at {_iso(point.ts)}",
            )
        if last is not None and point.ts < last:
            raise RowRejected(
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
