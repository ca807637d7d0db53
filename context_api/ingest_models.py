"""The vocabulary of ingest: reason codes, the report's models, limits, and the checks one value
of a row goes through (context_api/ingest.py explains the rules; ingest_parse.py applies them)."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from tools.telemetry import TelemetryPoint

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

ALIAS_TO_FIELD = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}

MAX_BACKEND_NAME = 128
MAX_RAW_CHARS = 500
"""Raw text kept per rejection is cut to this many characters (the line number has the rest)."""

CSV_DELIMITERS = (",", "\t", ";", "|")


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


class RowRejected(Exception):
    """Internal: raised while converting a row; becomes a `Rejection`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def is_blank(raw: object) -> bool:
    return raw is None or (isinstance(raw, str) and not raw.strip())


def to_number(raw: object, name: str, upper: float | None = None) -> float:
    if isinstance(raw, bool):
        raise RowRejected(RejectReason.BAD_TYPE, f"{name} is a boolean, not a number")
    if isinstance(raw, float):
        value = raw
    elif isinstance(raw, int):
        try:
            value = float(raw)
        except OverflowError:
            raise RowRejected(RejectReason.NON_FINITE, f"{name} overflows a float") from None
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise RowRejected(
                RejectReason.BAD_TYPE, f"{name} is not a number: {raw.strip()[:40]!r}"
            ) from None
    else:
        raise RowRejected(
            RejectReason.BAD_TYPE, f"{name} has type {type(raw).__name__}, not a number"
        )
    if not math.isfinite(value):
        raise RowRejected(RejectReason.NON_FINITE, f"{name} is {value}")
    if upper is not None and value > upper:
        raise RowRejected(
            RejectReason.OUT_OF_BOUNDS, f"{name} {value:.6g} is above the bound {upper:g}"
        )
    return value


def normalise(name: str) -> str:
    return name.strip().lower()


@dataclass
class RowStats:
    """Per-file counters behind the report's notes."""

    single_latency: int = 0
    load_unknown: int = 0
    in_flight_estimated: int = 0

    def add(self, other: RowStats) -> None:
        self.single_latency += other.single_latency
        self.load_unknown += other.load_unknown
        self.in_flight_estimated += other.in_flight_estimated


@dataclass
class Tally:
    """Rejections of one reason in one file: counted, with the first few kept in full."""

    count: int = 0
    first_line: int = 0
    last_line: int = 0
    kept: list[Rejection] = field(default_factory=list)
