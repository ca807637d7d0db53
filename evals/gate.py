"""The regression gate: limits on the metrics of eval entries, read from a thresholds file.

    entries:
      "*":                         # an entry name or a glob; every matching block applies
        max_escalation_pct: 40     # max_<metric> / min_<metric> on the entry's metrics
      "ci_*":
        max_sla_violation_pct: 12
        expectations: all          # or a list of expectation names that must pass
        kind: scenario             # optional: only entries of this kind

A limit on a metric the entry does not report, or that has no value in this run, fails: a typo
or a missing figure must not pass silently. Expectations that a block does not require are
reported but do not fail the gate (they state what the product aims for; the thresholds state
what it must not fall below).
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from evals.results import EntryResult, PropertyResult


class ThresholdsError(ValueError):
    pass


class Block(BaseModel):
    """Limits for the entries a pattern matches."""

    model_config = ConfigDict(extra="allow", frozen=True)

    expectations: Literal["all"] | list[str] = Field(default_factory=list)
    kind: Literal["scenario", "telemetry", "nab_benchmark", "drift_benchmark"] | None = None
    """Apply only to entries of this kind (so a glob can match scenarios but not benchmarks)."""

    @field_validator("expectations", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) and v != "all" else v

    def limits(self) -> dict[str, float]:
        out = {}
        for key, value in (self.model_extra or {}).items():
            if not (key.startswith("max_") or key.startswith("min_")) or len(key) < 5:
                raise ValueError(
                    f"{key!r} is not a limit: use max_<metric>, min_<metric> or expectations"
                )
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key} must be finite")
            out[key] = float(value)
        return out


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: dict[str, Block] = Field(default_factory=dict)

    def blocks_for(self, name: str) -> list[tuple[str, Block]]:
        return [(p, b) for p, b in self.entries.items() if fnmatch.fnmatchcase(name, p)]


def load_thresholds(path: str | Path) -> Thresholds:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThresholdsError(f"{p}: no such thresholds file") from None
    except yaml.YAMLError as err:
        raise ThresholdsError(f"{p}: not valid YAML: {err}") from None
    try:
        th = Thresholds.model_validate(data or {})
        for block in th.entries.values():
            block.limits()
    except (ValidationError, ValueError) as err:
        raise ThresholdsError(f"{p}: {err}") from None
    return th


def apply_thresholds(th: Thresholds, results: list[EntryResult]) -> None:
    """Check every matching limit on every entry; the checks land in `entry.thresholds`."""
    for entry in results:
        checks: list[PropertyResult] = []
        for pattern, block in th.blocks_for(entry.name):
            if block.kind is not None and block.kind != entry.kind:
                continue
            for key, limit in block.limits().items():
                checks.append(_check(entry, pattern, key, limit))
            wanted = block.expectations
            names = [e.name for e in entry.expectations] if wanted == "all" else list(wanted)
            for name in names:
                found = [e for e in entry.expectations if e.name == name]
                if not found:
                    checks.append(
                        PropertyResult(
                            f"expectation {name}",
                            False,
                            f"[{pattern}] requires expectation {name!r}, which {entry.name} "
                            f"does not have (it has: {[e.name for e in entry.expectations]})",
                        )
                    )
                    continue
                e = found[0]
                checks.append(
                    PropertyResult(
                        f"expectation {name}",
                        e.passed is not False,
                        f"[{pattern}] {e.detail}",
                        e.value,
                        e.limit,
                    )
                )
        entry.thresholds = checks


def _check(entry: EntryResult, pattern: str, key: str, limit: float) -> PropertyResult:
    metric = key[4:]
    where = f"[{pattern}]"
    if entry.error is not None:
        return PropertyResult(key, False, f"{where} the entry did not run", None, limit)
    if metric not in entry.metrics:
        return PropertyResult(
            key,
            False,
            f"{where} {entry.name} reports no metric {metric!r} "
            f"(it has: {', '.join(sorted(entry.metrics))})",
            None,
            limit,
        )
    value = entry.metrics[metric]
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return PropertyResult(key, False, f"{where} {metric} has no value in this run", None, limit)
    v = float(value)
    ok = v <= limit if key.startswith("max_") else v >= limit
    op = ("<=" if ok else ">") if key.startswith("max_") else (">=" if ok else "<")
    return PropertyResult(key, ok, f"{where} {metric} {v:.4g} {op} {limit:g}", v, limit)


def lost_to_baselines(results: list[EntryResult]) -> list[str]:
    """One line per scenario where the predictive loop had more SLA violations than the best
    reactive baseline, gated or not: a loss stays visible when the gate passes."""
    out = []
    for e in results:
        gain = e.metrics.get("sla_improvement_vs_best_baseline_pct")
        if gain is None or not isinstance(gain, int | float) or not math.isfinite(gain):
            continue
        if gain < 0:
            best = e.detail.get("best_baseline", "the best baseline")
            out.append(
                f"{e.name}: LOST to {best} "
                f"({e.metrics.get('sla_violation_pct')} vs "
                f"{e.metrics.get('best_baseline_sla_violation_pct')} % SLA violations)"
            )
    return out


def gate_failures(results: list[EntryResult]) -> list[str]:
    """One line per failure that makes the run exit non-zero."""
    out = []
    for e in results:
        if e.error is not None:
            out.append(f"{e.name}: did not run: {e.error}")
        for t in e.thresholds:
            if t.passed is False:
                out.append(f"{e.name}: {t.name}: {t.detail}")
    return out
