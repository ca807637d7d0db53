"""What an eval run produces, passed between its stages: the run's settings, one policy's
replay of a scenario, one entry's scores and verdicts, and the whole suite's result.

These records are shared by the harness (which fills them), the gate (which judges them) and the
report (which prints them), so they live apart from all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

START_TS = 1_700_000_000.0
"""Every simulated scenario starts here, so runs of one scenario line up tick for tick."""

LLM = Literal["offline", "claude", "none"]


@dataclass(frozen=True)
class HarnessConfig:
    """How a suite runs: where its outputs go, the router agent's model, how many workers."""

    out_dir: Path
    llm: LLM = "offline"
    """The router agent's model for escalations; `none` runs the deterministic policy alone."""
    jobs: int = 2
    record: bool = True
    """Write the predictive run (telemetry, decisions, outcomes, anomalies, alerts) to a store."""
    claude_model_id: str | None = None
    """The Claude model for `llm="claude"` (default: the client's default)."""


@dataclass(frozen=True)
class PropertyResult:
    """One expected property (or threshold): passed, failed, or None when it cannot apply."""

    name: str
    passed: bool | None
    detail: str
    value: float | None = None
    limit: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "value": _round(self.value),
            "limit": self.limit,
        }


@dataclass
class PolicyRun:
    """One scenario under one policy, reduced to what scoring and plotting need (picklable)."""

    policy: str
    summary: dict[str, float | int]
    requests: int
    ts: np.ndarray
    counts: dict[str, np.ndarray]
    p95_ms: dict[str, np.ndarray]
    error_rate: dict[str, np.ndarray]
    forecast_ms: dict[str, np.ndarray]
    violations: np.ndarray
    tick_requests: np.ndarray
    seconds: float
    chaos: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    """Per backend, per tick: the chaos kinds the simulator applied (the ground truth)."""
    residuals: list[dict[str, tuple[int, float, float]]] = field(default_factory=list)
    """Per tick: the routing model's residuals per backend (`agents.router.tick_residuals`)."""
    anomalies: list[tuple[float, str, float]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[str, Any] = field(default_factory=dict)
    """Outcomes of ambiguous (escalated) and routine decisions."""
    escalation: dict[str, Any] | None = None
    loop: dict[str, Any] | None = None
    db: str | None = None


@dataclass
class EntryResult:
    """What one entry produced: flat metrics (what thresholds gate), details, properties."""

    name: str
    kind: str
    source: str | None
    description: str
    metrics: dict[str, float | int | None]
    detail: dict[str, Any]
    expectations: list[PropertyResult]
    seconds: float
    runs: dict[str, PolicyRun] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)
    """Series for the detection-timeline plot: windows, anomalies, drift alarms, alerts."""
    error: str | None = None
    thresholds: list[PropertyResult] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """The gate's verdict: the entry ran and broke no threshold."""
        return self.error is None and all(p.passed is not False for p in self.thresholds)

    @property
    def expectations_passed(self) -> int:
        return sum(p.passed is True for p in self.expectations)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "description": self.description,
            "passed": self.passed,
            "expectations_passed": f"{self.expectations_passed}/{len(self.expectations)}",
            "error": self.error,
            "seconds": round(self.seconds, 2),
            "metrics": {k: _round(v) for k, v in self.metrics.items()},
            "expectations": [p.to_json() for p in self.expectations],
            "thresholds": [p.to_json() for p in self.thresholds],
            "detail": self.detail,
            "plots": self.plots,
        }


@dataclass
class SuiteResult:
    entries: list[EntryResult]
    config: HarnessConfig
    seconds: float
    forecasters: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.entries)


def _round(v: Any) -> Any:
    """Six significant digits: enough for a cost per request in dollars, no float noise."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        return float(f"{v:.6g}")
    return v
