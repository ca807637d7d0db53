"""Request traces from files: the shared Azure LLM traces and any user's CSV or JSONL trace.

A user trace has one request per record: a timestamp, prompt (input) tokens, output tokens and
optionally the hashes of the prompt's fixed-size blocks (the format public LLM-serving traces
use: Mooncake's `{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [...]}`
with 512-token blocks). Column names are matched case-insensitively against the usual ones
(`FIELD_NAMES`). Timestamps are numbers (seconds or milliseconds, relative or since the epoch)
or ISO date-times; the unit of numbers is detected (`detect_unit`) unless `time_unit` says it.
A record that cannot be used is counted and reported with its line number and reason, never
dropped silently; a trace with no usable record is an error.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tools.sim.workload import Workload, from_arrays

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURE_FILES = {
    "conv": "AzureLLMInferenceTrace_conv.csv",
    "code": "AzureLLMInferenceTrace_code.csv",
}
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "timestamp": ("timestamp", "ts", "time", "arrival_time", "arrival_timestamp", "created_at"),
    "input": (
        "input_length", "input_tokens", "contexttokens", "context_tokens", "prompt_tokens",
        "input_len", "num_prefill_tokens",
    ),
    "output": (
        "output_length", "output_tokens", "generatedtokens", "generated_tokens",
        "completion_tokens", "output_len", "num_decode_tokens",
    ),
    "hashes": ("hash_ids", "prefix_hashes", "block_hashes"),
}  # fmt: skip
MAX_EXAMPLES = 10
TimeUnit = Literal["auto", "s", "ms"]


class TraceError(ValueError):
    """A trace that cannot be used at all (no such file, no usable records, no header...)."""


def data_dirs() -> list[Path]:
    """Where the shared data may live: $ARCPOINT_DATA, then `shared/data` beside the checkout
    or one level further up (a worktree)."""
    out = []
    if os.environ.get("ARCPOINT_DATA"):
        out.append(Path(os.environ["ARCPOINT_DATA"]))
    out += [REPO_ROOT.parent / "shared" / "data", REPO_ROOT.parent.parent / "shared" / "data"]
    return out


def find_shared(path: Path) -> Path:
    """`path`, or when it does not exist and points into a `shared/data/` folder, the same file
    under `data_dirs()` (a scenario file's relative path holds in one checkout, not another)."""
    if path.exists():
        return path
    parts = path.as_posix().split("/shared/data/", 1)
    if len(parts) == 2:
        for d in data_dirs():
            candidate = d / parts[1]
            if candidate.exists():
                return candidate
    return path


def azure_path(kind: str) -> Path:
    if kind not in AZURE_FILES:
        raise TraceError(f"unknown Azure trace {kind!r}; known: {', '.join(AZURE_FILES)}")
    for d in data_dirs():
        p = d / "azure_llm_2023" / AZURE_FILES[kind]
        if p.is_file():
            return p
    raise TraceError(
        f"the Azure {kind} trace ({AZURE_FILES[kind]}) is not under any of "
        + ", ".join(str(d / "azure_llm_2023") for d in data_dirs())
        + " (set ARCPOINT_DATA to the folder that holds azure_llm_2023/)"
    )


@dataclass
class TraceReport:
    """What reading a trace accepted and refused."""

    path: str
    format: str
    accepted: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    """`line N: reason` for the first MAX_EXAMPLES rejected records."""
    time_unit: str = "s"
    time_unit_detected: bool = True
    duration_s: float = 0.0
    out_of_order: int = 0
    with_hashes: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line}: {reason}")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": dict(self.reasons),
            "examples": self.examples,
            "time_unit": self.time_unit,
            "time_unit_detected": self.time_unit_detected,
            "duration_s": round(self.duration_s, 3),
            "out_of_order": self.out_of_order,
            "with_prefix_hashes": self.with_hashes,
        }

    def summary(self) -> str:
        unit = f"{self.time_unit} ({'detected' if self.time_unit_detected else 'as given'})"
        s = (
            f"{self.path}: {self.accepted:,} requests over {self.duration_s:,.0f} s "
            f"(timestamps in {unit}), {self.rejected:,} rejected"
        )
        if self.rejected:
            s += ": " + "; ".join(f"{n} {r}" for r, n in self.reasons.most_common())
        return s


def parse_time(value: Any) -> tuple[float, bool]:
    """(value, is_datetime): a number as is, or an ISO date-time as unix seconds."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        v = float(value)
    else:
        text = str(value).strip()
        if not text:
            raise ValueError("empty timestamp")
        try:
            v = float(text)
        except ValueError:
            head, dot, frac = text.partition(".")
            if dot:  # more than 6 fractional digits (Azure has 7): keep microseconds
                digits = "".join(c for c in frac if c.isdigit())
                tz = frac[len(digits) :]
                text = f"{head}.{(digits + '000000')[:6]}{tz}"
            try:
                return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp(), True
            except ValueError:
                raise ValueError(f"{value!r} is neither a number nor an ISO date-time") from None
    if not math.isfinite(v):
        raise ValueError(f"timestamp {value!r} is not finite")
    return v, False


def detect_unit(stamps: np.ndarray) -> str:
    """`ms` or `s` for numeric timestamps: epoch values above 1e11 are milliseconds (1e11 s is
    the year 5138); relative ones are milliseconds when, read as seconds, the trace would span
    more than a day (request logs are shorter; Mooncake's hour of traffic spans 3.6e6 ms)."""
    if stamps.size == 0:
        return "s"
    if float(np.median(stamps)) > 1e11:
        return "ms"
    if float(np.median(stamps)) > 1e8:
        return "s"
    return "ms" if float(stamps.max() - stamps.min()) > 86_400.0 else "s"


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or f < 1 or f != int(f):
        return None
    return int(f)


def _hashes(value: Any) -> tuple[int, ...] | None:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                return None
        else:
            value = [x for x in text.replace(";", " ").replace(",", " ").split() if x]
    if not isinstance(value, list):
        return None
    out = []
    for x in value:
        if isinstance(x, bool):
            return None
        try:
            out.append(int(x))
        except (TypeError, ValueError):
            return None
    return tuple(out)


def _pick(keys: list[str], role: str) -> str | None:
    lower = {k.lower(): k for k in keys}
    for name in FIELD_NAMES[role]:
        if name in lower:
            return lower[name]
    return None


def _records(path: Path, report: TraceReport) -> Iterator[tuple[int, dict[str, Any]]]:
    suffix = path.suffix.lower()
    with path.open(newline="", encoding="utf-8") as f:
        if suffix in (".jsonl", ".json", ".ndjson"):
            report.format = "jsonl"
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    report.reject(line_no, f"not valid JSON ({err.msg})")
                    continue
                if not isinstance(rec, dict):
                    report.reject(line_no, "not a JSON object")
                    continue
                yield line_no, rec
        else:
            report.format = "csv"
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise TraceError(f"{path}: empty file, or no header row")
            for rec in reader:
                if not any((v or "").strip() for v in rec.values() if isinstance(v, str)):
                    continue
                yield reader.line_num, rec


def read_trace(
    path: str | Path,
    *,
    time_unit: TimeUnit = "auto",
    block_tokens: int = 512,
    seed: int = 0,
    name: str | None = None,
) -> tuple[Workload, TraceReport]:
    """A user's request trace as a `Workload` (arrivals from its first request), and the report
    of what was accepted and why anything was refused."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(f"{p}: no such file")
    if block_tokens < 1:
        raise TraceError("block_tokens must be >= 1")
    report = TraceReport(str(p), "csv")
    stamps: list[float] = []
    inputs: list[int] = []
    outputs: list[int] = []
    hashes: list[tuple[int, ...]] = []
    kinds: set[bool] = set()
    fields: dict[str, str | None] | None = None
    try:
        for line_no, rec in _records(p, report):
            if fields is None or report.format == "jsonl":
                keys = list(rec)
                fields = {role: _pick(keys, role) for role in FIELD_NAMES}
                if report.format == "csv":
                    missing = [r for r in ("timestamp", "input", "output") if fields[r] is None]
                    if missing:
                        raise TraceError(
                            f"{p}: no column for {', '.join(missing)}; columns: "
                            f"{', '.join(keys)} (expected names such as "
                            + "; ".join(f"{r}: {', '.join(FIELD_NAMES[r][:3])}" for r in missing)
                            + ")"
                        )
            ts_key, in_key, out_key, h_key = (
                fields["timestamp"], fields["input"], fields["output"], fields["hashes"]
            )  # fmt: skip
            if ts_key is None or rec.get(ts_key) in (None, ""):
                report.reject(line_no, "missing timestamp")
                continue
            try:
                ts, is_dt = parse_time(rec[ts_key])
            except ValueError as err:
                report.reject(line_no, f"bad timestamp: {err}")
                continue
            i = _positive_int(rec.get(in_key)) if in_key else None
            if i is None:
                report.reject(line_no, "input tokens missing or not a positive integer")
                continue
            o = _positive_int(rec.get(out_key)) if out_key else None
            if o is None:
                report.reject(line_no, "output tokens missing or not a positive integer")
                continue
            h = _hashes(rec.get(h_key)) if h_key else ()
            if h is None:
                report.reject(line_no, "prefix hashes are not a list of integers")
                continue
            kinds.add(is_dt)
            if len(kinds) > 1:
                report.reject(line_no, "timestamp mixes numbers and date-times")
                kinds.discard(is_dt)
                continue
            if stamps and ts < stamps[-1]:
                report.out_of_order += 1
            stamps.append(ts)
            inputs.append(i)
            outputs.append(o)
            hashes.append(h)
    except UnicodeDecodeError as err:
        raise TraceError(f"{p}: not UTF-8 text ({err.reason})") from None
    except csv.Error as err:
        raise TraceError(f"{p}: not a readable CSV ({err})") from None
    if not stamps:
        why = "; ".join(f"{n} {r}" for r, n in report.reasons.most_common(3)) or "no records"
        raise TraceError(f"{p}: no usable request records ({why})")
    t = np.asarray(stamps, dtype=float)
    if kinds == {True}:
        report.time_unit, report.time_unit_detected = "s", False
    elif time_unit == "auto":
        report.time_unit = detect_unit(t)
    else:
        report.time_unit, report.time_unit_detected = time_unit, False
    if report.time_unit == "ms":
        t = t / 1000.0
    report.accepted = t.size
    report.with_hashes = sum(1 for h in hashes if h)
    prefix = tuple(hashes) if report.with_hashes else None
    w = from_arrays(
        name or p.stem, t, np.asarray(inputs), np.asarray(outputs), seed=seed,
        prefix=prefix, block_tokens=block_tokens, notes={"source": str(p)},
    )  # fmt: skip
    report.duration_s = w.duration_s
    return w, report


_AZURE: dict[str, Workload] = {}


def azure_trace(kind: str) -> Workload:
    """The Azure `conv` or `code` trace at its recorded rate (read once per process)."""
    if kind not in _AZURE:
        w, report = read_trace(azure_path(kind), name=f"azure_{kind}")
        if report.rejected:
            raise TraceError(f"the Azure {kind} trace has bad rows: {report.summary()}")
        _AZURE[kind] = w
    return _AZURE[kind]


def trace_for(source: str, base: Path | None = None) -> Workload:
    """A scenario's trace: `azure_conv`, `azure_code`, or a file path (relative to `base`)."""
    if source.startswith("azure_") and source[6:] in AZURE_FILES:
        return azure_trace(source[6:])
    p = Path(os.path.expandvars(os.path.expanduser(source)))
    if not p.is_absolute() and base is not None:
        p = base / p
    return read_trace(p)[0]
