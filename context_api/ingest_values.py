"""Reading one value of an ingested row: timestamps in any epoch unit, bounded lines, and the
per-backend statistics a report needs, all in memory that does not grow with the file."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Literal

from context_api.bounds import MAX_TS, MIN_TS

TimeUnit = Literal["auto", "s", "ms", "us", "ns"]
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
UNIT_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
# A unix time after 1973 has 9+ digits in seconds, 12+ in ms, 15+ in us, 18+ in ns; one before
# 2100 has at most 10, 13, 16, 19. So the magnitude names the unit, except for times before 1973
# in a finer unit (which read as seconds and are then refused or stand out in the report).
_MAGNITUDE = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", 1e20))

MAX_LINE_CHARS = 1 << 20
"""A longer line is rejected (and skipped) without ever being held in memory whole."""


def unit_of(value: float) -> str | None:
    """The epoch unit a numeric time of this magnitude is in (None: too large for any)."""
    for unit, upper in _MAGNITUDE:
        if abs(value) < upper:
            return unit
    return None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


def check_time(ts: float, text: str) -> float:
    """`ts` if it lies in [1970, 2100); else ValueError saying why it cannot be a time."""
    if not math.isfinite(ts):
        raise ValueError(f"timestamp {text} is not finite")
    if ts < MIN_TS:
        raise ValueError(f"timestamp {text} is before 1970-01-01")
    if ts >= MAX_TS:
        raise ValueError(
            f"timestamp {text} is after 2100-01-01: if it is in milliseconds or finer, say so "
            "with --time-unit"
        )
    return ts


def number_or_none(raw: object) -> float | None:
    """A numeric timestamp's value, or None when the raw value is text that is not a number."""
    if isinstance(raw, bool):
        raise ValueError("timestamp is a boolean")
    if isinstance(raw, int):
        try:
            return float(raw)
        except OverflowError:
            raise ValueError(f"timestamp {str(raw)[:40]} is too large for any unit") from None
    if isinstance(raw, float):
        return raw
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            return None
    raise ValueError(f"timestamp has type {type(raw).__name__}")


def parse_iso(text: str) -> float:
    """Unix seconds from ISO 8601 or `YYYY-mm-dd HH:MM:SS` (UTC unless an offset is given)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text[:40]!r} is not ISO 8601, 'YYYY-mm-dd HH:MM:SS' or a unix time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        value = moment.timestamp()
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"timestamp {text[:40]!r} is out of range") from None
    return check_time(value, repr(text[:40]))


def read_time(raw: object) -> tuple[float, str | None]:
    """(unix seconds, None) for an ISO time; (the number, the unit its magnitude implies) for a
    numeric one. Raises ValueError with a readable message."""
    number = number_or_none(raw)
    if number is None:
        assert isinstance(raw, str)
        return parse_iso(raw.strip()), None
    if not math.isfinite(number):
        raise ValueError(f"timestamp {number} is not finite")
    found = unit_of(number)
    if found is None:
        raise ValueError(f"timestamp {number:.6g} is too large for any epoch unit")
    return number, found


def to_seconds(number: float, unit: str) -> float:
    """A numeric time in `unit` as unix seconds, checked to lie in [1970, 2100)."""
    ts = number * UNIT_SCALE[unit]
    if MIN_TS <= ts < MAX_TS:
        return ts
    return check_time(ts, f"{number:.15g} ({UNIT_NAMES[unit]})")


def parse_timestamp(raw: object, unit: TimeUnit = "auto") -> float:
    """Unix seconds from ISO 8601, `YYYY-mm-dd HH:MM:SS` or a unix time in `unit` (`auto`: the
    unit its magnitude implies). Raises ValueError with a readable message."""
    value, found = read_time(raw)
    if found is None:
        return value
    return to_seconds(value, found if unit == "auto" else unit)


class LongLine(str):
    """The start of a line longer than `MAX_LINE_CHARS` (the rest was skipped)."""


def bounded_lines(handle: IO[str], limit: int = MAX_LINE_CHARS) -> Iterator[str]:
    """Lines of a text stream, none held longer than `limit` characters."""
    while True:
        line = handle.readline(limit)
        if not line:
            return
        if len(line) < limit or line.endswith(("\n", "\r")):
            yield line
            continue
        head = line
        while line and not line.endswith(("\n", "\r")):  # skip the rest of the long line
            line = handle.readline(limit)
        yield LongLine(head[:500])


def undecodable(line: str) -> bool:
    """Whether a line read with errors='surrogateescape' held bytes that are not UTF-8."""
    if line.isascii():
        return False
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_raw(line: str, limit: int) -> str:
    """The line as storable text: undecodable bytes become U+FFFD, cut to `limit`."""
    text = line.rstrip("\r\n")[:limit]
    if undecodable(text):
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


class Span:
    """Count, first and last time of a backend's accepted points, and a bounded systematic
    sample of their spacing (every `stride`-th gap; the stride doubles when the sample fills),
    so the median interval costs the same memory for ten rows or a billion."""

    __slots__ = ("_skip", "_stride", "count", "first", "gaps", "last")
    SAMPLE = 2048

    def __init__(self) -> None:
        self.count = 0
        self.first = math.nan
        self.last = math.nan
        self.gaps = array("d")
        self._stride = 1
        self._skip = 0

    def add(self, ts: float) -> None:
        if self.count:
            self._skip += 1
            if self._skip >= self._stride:
                self._skip = 0
                self.gaps.append(ts - self.last)
                if len(self.gaps) >= self.SAMPLE:
                    self.gaps = self.gaps[::2]
                    self._stride *= 2
        else:
            self.first = ts
        self.last = ts
        self.count += 1

    def median_gap(self) -> float | None:
        if not self.gaps:
            return None
        ordered = sorted(self.gaps)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
