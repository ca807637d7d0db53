"""Times and numbers as the context API reads and writes them.

Times come in as unix seconds, ISO 8601, a UTC clock time ("14:00": the most recent one at or
before now), a relative offset ("-90m"), "now", or "today"/"yesterday" (00:00 UTC of that
day), and go out as ISO 8601 UTC. Numbers go out
finite and rounded, or null.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any


class ToolError(Exception):
    """A failure the model should see as a plain message (bad id, nothing stored, ...)."""


def iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_or_unknown(ts: float) -> str:
    return iso(ts) or "unknown"


def num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def rnd(x: Any, digits: int = 1) -> float | None:
    v = num(x)
    return None if v is None else round(v, digits)


_REL = re.compile(r"^\s*-\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|hour|hours|d|day|days)\s*$", re.I)
_CLOCK = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:utc|z)?\s*$", re.I)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "hour": 3600}


def parse_time(value: float | str | None, now: float) -> float | None:
    """A time argument (see api_models.TIME_HELP) as unix seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ToolError("a time must be a number or a string, not a boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ToolError("a time must be finite")
        return float(value)
    text = value.strip()
    if text.lower() == "now":
        return now
    if text.lower() in ("today", "yesterday"):
        day = datetime.fromtimestamp(now, UTC)
        midnight = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=1 if text.lower() == "yesterday" else 0)).timestamp()
    try:
        return float(text)
    except ValueError:
        pass
    rel = _REL.match(text)
    if rel:
        unit = rel.group(2).lower()
        scale = 86400 if unit.startswith("d") else _UNIT_S.get(unit, 3600)
        return now - float(rel.group(1)) * scale
    clock = _CLOCK.match(text)
    if clock:
        h, mi, s = int(clock.group(1)), int(clock.group(2)), int(clock.group(3) or 0)
        if h > 23 or mi > 59 or s > 59:
            raise ToolError(f"not a clock time: {text!r}")
        day = datetime.fromtimestamp(now, UTC).replace(hour=h, minute=mi, second=s, microsecond=0)
        if day.timestamp() > now + 60:
            day -= timedelta(days=1)  # "14:00" said after midnight means yesterday's
        return day.timestamp()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError:
        raise ToolError(
            f"cannot read the time {text!r}: give unix seconds, ISO 8601, HH:MM (UTC), -90m, now, "
            "today or yesterday"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
