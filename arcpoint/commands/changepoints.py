"""`arcpoint changepoints`: where did an operator's metric series change, and by how much.

Reads a CSV with a time column and one or more value columns, runs the online change-point
detector (`tools.drift.changepoint`) over each value column, row by row, and prints every change
with its row, time, the level before and after, and when it was detected. Each change is
decided from the rows up to its detection row only. A row whose value is empty or not a number
is left out of that column's series and reported (row indices still refer to the file).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

TIME_NAMES = ("timestamp", "time", "date", "datetime", "ts")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "changepoints",
        help="find change points in a metric series (CSV), online, with their magnitudes",
        description=(
            "Find change points in each value column of a CSV (a header row, a time column "
            f"named one of {', '.join(TIME_NAMES)} or else the first column, then value "
            "columns). Row indices count data rows from 0. A change's row is the first row of "
            "the new segment, estimated when the change is reported ('detected at'); nothing "
            "after the detection row is read. Exit status 2 on unusable input."
        ),
    )
    p.add_argument("path", type=Path, help="CSV file")
    p.add_argument(
        "--column",
        action="append",
        metavar="NAME",
        help="value column to analyse (repeatable; default: every column but the time column)",
    )
    p.add_argument(
        "--json", type=Path, metavar="PATH", help="write the change points and details as JSON"
    )
    p.set_defaults(func=run)


class InputError(ValueError):
    """The CSV cannot be analysed; the message says why."""


def _read(
    path: Path, wanted: list[str] | None
) -> tuple[list[str], str, dict[str, list[float]], dict[str, list[int]]]:
    """Times, the time column's name, values per column (NaN where unusable), rejected rows."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise InputError(f"{path}: empty file (expected a header row)")
            names = [h.strip() for h in header]
            lower = [n.lower() for n in names]
            t_idx = next((lower.index(n) for n in TIME_NAMES if n in lower), 0)
            value_cols = [n for i, n in enumerate(names) if i != t_idx]
            if wanted:
                unknown = [c for c in wanted if c not in value_cols]
                if unknown:
                    raise InputError(
                        f"{path}: no column {unknown[0]!r}; value columns: {', '.join(value_cols)}"
                    )
                value_cols = list(dict.fromkeys(wanted))
            if not value_cols:
                raise InputError(f"{path}: no value column besides the time column")
            index = {n: i for i, n in enumerate(names)}
            times: list[str] = []
            values: dict[str, list[float]] = {c: [] for c in value_cols}
            rejected: dict[str, list[int]] = {c: [] for c in value_cols}
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                r = len(times)
                times.append(row[t_idx].strip() if t_idx < len(row) else "")
                for c in value_cols:
                    i = index[c]
                    try:
                        v = float(row[i]) if i < len(row) else math.nan
                    except ValueError:
                        v = math.nan
                    if not math.isfinite(v):
                        rejected[c].append(r)
                        v = math.nan
                    values[c].append(v)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a CSV file ({exc})") from None
    return times, names[t_idx], values, rejected


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tools.drift.changepoint import ChangePointConfig, ChangePointDetector, merge_locations

    try:
        times, time_name, values, rejected = _read(args.path, args.column)
    except InputError as exc:
        print(f"arcpoint changepoints: {exc}", file=sys.stderr)
        return 2
    config = ChangePointConfig()
    n_rows = len(times)
    changes: list[dict[str, Any]] = []
    per_column: list[list[int]] = []
    for col, vals in values.items():
        x = np.asarray(vals, dtype=np.float64)
        rows = np.flatnonzero(np.isfinite(x))
        if rows.size < config.warmup + 1:
            print(
                f"arcpoint changepoints: column {col!r} has {rows.size} usable rows; "
                f"at least {config.warmup + 1} are needed",
                file=sys.stderr,
            )
            return 2
        found = ChangePointDetector(config).detect(x[rows])
        per_column.append([int(rows[c.location]) for c in found])
        for c in found:
            at, seen = int(rows[c.location]), int(rows[c.detected_at])
            changes.append(
                {
                    "row": at,
                    "time": times[at],
                    "column": col,
                    "detected_at": seen,
                    "detected_at_time": times[seen],
                    "mean_before": c.mean_before,
                    "mean_after": c.mean_after,
                    "shift": c.shift,
                    "shift_sigmas": c.shift_sigmas,
                    "probability": c.probability,
                }
            )
    changes.sort(key=lambda c: (c["row"], c["column"]))
    merged = merge_locations(per_column)

    cols = ", ".join(values)
    print(
        f"{len(merged)} change point(s) in {args.path} ({n_rows} rows; time column "
        f"{time_name!r}; value column(s): {cols}):"
    )
    if changes:
        print(
            f"  {'row':>6s}  {'time':20s}  {'column':16s} {'before':>12s} {'after':>12s} "
            f"{'shift sd':>9s}  detected at"
        )
    for c in changes:
        print(
            f"  {c['row']:6d}  {c['time'][:20]:20s}  {c['column'][:16]:16s} "
            f"{c['mean_before']:12.4g} {c['mean_after']:12.4g} {c['shift_sigmas']:+9.2f}  "
            f"row {c['detected_at']} ({c['detected_at_time']})"
        )
    for col, bad in rejected.items():
        if bad:
            shown = ", ".join(str(r) for r in bad[:5]) + (" ..." if len(bad) > 5 else "")
            print(
                f"arcpoint changepoints: column {col!r}: {len(bad)} row(s) without a number "
                f"left out (rows {shown})",
                file=sys.stderr,
            )
    if args.json is not None:
        payload = {
            "changepoints": merged,
            "detector": "bocpd",
            "params": asdict(config),
            "rows": n_rows,
            "time_column": time_name,
            "columns": list(values),
            "changes": changes,
            "rejected_rows": {c: r for c, r in rejected.items() if r},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        import json

        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0
