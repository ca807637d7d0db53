"""Reading and writing NAB files: `timestamp,value` series, the combined-windows labels, results.

Kept out of `tools/` (which does no I/O). A malformed row stops the run with the file and line:
dropping it silently would shift every later row against the labelled windows.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import TypeAdapter, ValidationError


class NabFormatError(ValueError):
    """A NAB data or labels file that cannot be used as it is; the message says where."""


@dataclass(frozen=True, slots=True)
class Series:
    """One NAB data file: non-decreasing timestamps and finite values.

    Real NAB files repeat a timestamp where clocks went back (daylight saving). Such rows are
    kept, as NAB keeps them (scoring is by row), and counted in `duplicate_timestamps`.
    """

    timestamps: list[datetime]
    raw_timestamps: list[str]
    values: np.ndarray
    duplicate_timestamps: int = 0


def _parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def read_series(path: Path) -> Series:
    """Read a `timestamp,value` CSV; NabFormatError names the file and line of any bad row."""
    stamps: list[datetime] = []
    raw: list[str] = []
    values: list[float] = []
    duplicates = 0
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise NabFormatError(f"{path}: empty file (expected a 'timestamp,value' header)")
        if [h.strip().lower() for h in header] != ["timestamp", "value"]:
            raise NabFormatError(f"{path}:1: header must be 'timestamp,value', got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue  # a blank line (e.g. a trailing newline) carries no sample
            if len(row) != 2:
                raise NabFormatError(f"{path}:{line}: expected 2 fields, got {len(row)}: {row!r}")
            try:
                ts = _parse_timestamp(row[0])
            except ValueError:
                raise NabFormatError(f"{path}:{line}: bad timestamp {row[0]!r}") from None
            try:
                value = float(row[1])
            except ValueError:
                raise NabFormatError(f"{path}:{line}: bad value {row[1]!r}") from None
            if not math.isfinite(value):
                raise NabFormatError(f"{path}:{line}: value is not finite: {row[1]!r}")
            if stamps and ts <= stamps[-1]:
                if ts < stamps[-1]:
                    raise NabFormatError(f"{path}:{line}: out-of-order timestamp {row[0]!r}")
                duplicates += 1
            stamps.append(ts)
            raw.append(row[0].strip())
            values.append(value)
    if not stamps:
        raise NabFormatError(f"{path}: no data rows")
    return Series(stamps, raw, np.asarray(values, dtype=np.float64), duplicates)


_LABELS = TypeAdapter(dict[str, list[tuple[str, str]]])


def read_labels(path: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    """Read NAB's combined windows file: {relative path: [[start, end], ...]}."""
    try:
        data = _LABELS.validate_json(path.read_bytes())
    except ValidationError as exc:
        raise NabFormatError(f"{path}: not a NAB windows file: {exc}") from None
    except OSError as exc:
        raise NabFormatError(f"{path}: {exc.strerror}") from None
    out: dict[str, list[tuple[datetime, datetime]]] = {}
    for name, windows in data.items():
        parsed = []
        for start, end in windows:
            try:
                parsed.append((_parse_timestamp(start), _parse_timestamp(end)))
            except ValueError:
                raise NabFormatError(f"{path}: {name}: bad window [{start}, {end}]") from None
        out[name.replace("\\", "/")] = sorted(parsed)
    return out


def write_results(
    path: Path, series: Series, anomaly_scores: np.ndarray, labels: np.ndarray
) -> None:
    """Write NAB's results format: `timestamp,value,anomaly_score,label`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for ts, v, s, lab in zip(
            series.raw_timestamps, series.values, anomaly_scores, labels, strict=True
        ):
            w.writerow([ts, repr(float(v)), repr(float(s)), int(lab)])  # exact: re-scorable


def dump_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
