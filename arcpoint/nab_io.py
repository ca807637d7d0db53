"""Reading and writing NAB files: `timestamp,value` series, the combined-windows labels, results.

Kept out of `tools/` (which does no I/O). A malformed row makes the whole file unusable (the
error names the file and line): dropping the row silently would shift every later row against the
labelled windows. Timestamps are kept as they are, in file order, as NAB scores them.
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

from tools.anomaly.nab_scoring import FileLabels, window_indices


class NabFormatError(ValueError):
    """A NAB data or labels file that cannot be used as it is; the message says where."""


@dataclass(frozen=True, slots=True)
class Series:
    """One NAB data file: timestamps in file order and finite values.

    Real files step back or repeat a timestamp where a clock was changed (daylight saving, a
    resynchronised host). Such rows are kept, as NAB keeps them (scoring is by row, in file
    order), and counted: `duplicate_timestamps` rows repeat the previous timestamp,
    `backward_timestamps` rows are earlier than the previous one.
    """

    timestamps: list[datetime]
    raw_timestamps: list[str]
    values: np.ndarray
    duplicate_timestamps: int = 0
    backward_timestamps: int = 0


def _parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def read_series(path: Path) -> Series:
    """Read a `timestamp,value` CSV; NabFormatError names the file and line of any bad row."""
    try:
        return _read_series(path)
    except OSError as exc:
        raise NabFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise NabFormatError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise NabFormatError(f"{path}: not a CSV file ({exc})") from None


def _read_series(path: Path) -> Series:
    stamps: list[datetime] = []
    raw: list[str] = []
    values: list[float] = []
    duplicates = 0
    backward = 0
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
                    backward += 1
                else:
                    duplicates += 1
            stamps.append(ts)
            raw.append(row[0].strip())
            values.append(value)
    if not stamps:
        raise NabFormatError(f"{path}: no data rows")
    return Series(stamps, raw, np.asarray(values, dtype=np.float64), duplicates, backward)


@dataclass(frozen=True, slots=True)
class Corpus:
    """The usable files of a NAB directory with their windows, and why the others were not.

    Keys are paths relative to the data directory, as in the labels file."""

    series: dict[str, Series]
    labels: dict[str, FileLabels]
    problems: dict[str, str]


def load_corpus(data_dir: Path, labels_path: Path) -> Corpus:
    """Read every CSV under `data_dir` and map its labelled windows to rows.

    A file that cannot be read, has no entry in the labels file or whose windows match no rows
    is recorded in `problems` and left out; the others are still returned. A labels file that
    cannot be read, or a directory without any CSV, raises NabFormatError.
    """
    labels = read_labels(labels_path)
    files = sorted(data_dir.rglob("*.csv"))
    if not files:
        raise NabFormatError(f"no CSV files under {data_dir}")
    series: dict[str, Series] = {}
    windows: dict[str, FileLabels] = {}
    problems: dict[str, str] = {}
    for f in files:
        rel = f.relative_to(data_dir).as_posix()
        try:
            s = read_series(f)
            if rel not in labels:
                problems[rel] = f"no entry in {labels_path}"
                continue
            rows = window_indices(s.timestamps, labels[rel])
        except (NabFormatError, ValueError) as exc:
            problems[rel] = str(exc)
            continue
        series[rel] = s
        windows[rel] = FileLabels(len(s.values), tuple(rows))
    return Corpus(series, windows, problems)


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
