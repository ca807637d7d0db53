"""Inputs and outputs of the context API's tools: pydantic models, so every tool has a JSON schema
the model sees and a validator the tool loop runs before anything executes.

Times go in as unix seconds, ISO 8601 (`2023-11-14T23:10:00Z`), a clock time on the current day
(`14:00`, UTC), a relative offset (`-90m`, `-2h`) or `now`; they come out as both unix seconds
(`ts`) and ISO 8601 UTC (`at`). "Now" is the newest telemetry in the database unless given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TimeArg = float | str | None
TIME_HELP = (
    "unix seconds, ISO 8601 (2023-11-14T23:10:00Z), a UTC clock time today (14:00), "
    "a relative offset (-90m, -2h), 'now', or 'today'/'yesterday' (00:00 UTC); default: the "
    "newest telemetry in the database"
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- inputs ------------------------------------------------------------------------------------


class AtInput(_In):
    at: TimeArg = Field(None, description=f"the moment to look at: {TIME_HELP}")


class BackendInput(_In):
    backend: str = Field(min_length=1, max_length=64, description="backend id, e.g. b0")
    at: TimeArg = Field(None, description=f"the moment to look at: {TIME_HELP}")
    window_minutes: float = Field(15.0, gt=0, le=24 * 60, description="history to summarise")


class ForecastsInput(_In):
    at: TimeArg = Field(None, description=f"the moment to look at: {TIME_HELP}")
    tier: str | None = Field(
        None, description="service tier whose SLA the breach probability uses (default standard)"
    )


class CapacityRiskInput(_In):
    minutes: float = Field(5.0, gt=0, le=60, description="how far ahead to look")
    at: TimeArg = Field(None, description=f"the moment to look from: {TIME_HELP}")
    sla_ms: float | None = Field(None, gt=0, le=600_000, description="SLA (default 300 ms)")
    capacity_threshold: float = Field(
        0.9, gt=0, le=2, description="utilisation (load / capacity) counted as past capacity"
    )


class DriftInput(_In):
    at: TimeArg = Field(None, description=f"end of the current window: {TIME_HELP}")
    window_minutes: float = Field(15.0, ge=5, le=24 * 60, description="current window")
    reference_minutes: float = Field(60.0, ge=10, le=7 * 24 * 60, description="reference window")
    backend: str | None = Field(None, description="one backend only")


class AnomaliesInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default one hour before now")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")
    backend: str | None = None
    min_severity: float = Field(0.0, ge=0, le=1)
    limit: int = Field(50, ge=1, le=500)


class TimelineInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default one hour before until")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")
    around: TimeArg = Field(
        None, description="a named moment (e.g. 14:00): the window becomes 30 min either side"
    )
    bucket_minutes: float = Field(5.0, ge=1, le=120)


class ExperimentsInput(_In):
    status: Literal["running", "concluded", "aborted"] | None = None
    experiment_id: str | None = None


class AlertsInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default all")
    limit: int = Field(20, ge=1, le=200)
    min_severity: Literal["info", "low", "medium", "high", "critical"] | None = None
    kind: str | None = None


class ExplainInput(_In):
    decision_id: str = Field(min_length=1, max_length=200)


class FindDecisionsInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default 15 min before until")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")
    backend: str | None = None
    ambiguous_only: bool = False
    limit: int = Field(10, ge=1, le=100)


class RecommendInput(_In):
    tier: str = Field("standard", description="service tier: standard, premium, batch, review")
    sla_ms: float | None = Field(None, gt=0, le=600_000, description="overrides the tier's SLA")
    at: TimeArg = Field(None, description=f"the moment to decide at: {TIME_HELP}")


class ModelVersionsInput(_In):
    kind: str = "forecaster"


class PerformanceInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default one hour before until")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")


class RetrainCheckInput(_In):
    at: TimeArg = Field(None, description=f"the moment to check at: {TIME_HELP}")


class RequestRetrainInput(_In):
    reason: str = Field(min_length=3, max_length=500, description="why, in one sentence")
    at: TimeArg = Field(None, description=f"the moment to check at: {TIME_HELP}")


class RecordDriftInput(DriftInput):
    min_severity: Literal["low", "medium", "high", "critical"] = "medium"


class CompareInput(_In):
    backends: list[str] | None = Field(
        None, min_length=2, max_length=8, description="the backends to compare; default: all"
    )
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default one hour before until")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")
    around: TimeArg = Field(
        None, description=f"instead of since/until: the hour centred on this time ({TIME_HELP})"
    )


class CostInput(_In):
    since: TimeArg = Field(None, description=f"start: {TIME_HELP}; default one hour before until")
    until: TimeArg = Field(None, description=f"end: {TIME_HELP}")
    backends: list[str] | None = Field(None, max_length=16, description="default: every backend")


class ModelHistoryInput(_In):
    version: str | None = Field(None, max_length=200, description="one version; default: serving")
    kind: str = "forecaster"


class ApprovalsInput(_In):
    status: Literal["pending", "approved", "rejected", "applied", "superseded", "failed"] | None = (
        None
    )
    approval_id: str | None = Field(None, max_length=100)


class WhatIfInput(_In):
    action: Literal["drain", "fail"] = Field(
        description="drain: out of rotation; fail: it hangs (every request times out)"
    )
    backend: str = Field(min_length=1, max_length=200)
    minutes: float = Field(10.0, ge=1, le=60, description="how far ahead to simulate")


class RetrainRequestsInput(_In):
    include_handled: bool = Field(False, description="also list requests already acted on")


class TrainChallengerInput(_In):
    request_id: int = Field(ge=1, description="the retrain request's id (from retrain_requests)")


class StartExperimentInput(_In):
    challenger_id: str = Field(min_length=1, max_length=200, description="a trained version")


class ExperimentIdInput(_In):
    experiment_id: str = Field(min_length=1, max_length=200)


class ProposeChangeInput(_In):
    experiment_id: str = Field(
        min_length=1, max_length=200, description="the concluded experiment behind the change"
    )
    reason: str = Field(min_length=3, max_length=500, description="why, citing its figures")


# --- outputs -----------------------------------------------------------------------------------


class Forecast(_Out):
    backend: str
    forecast_ms: float | None = Field(description="p95 latency forecast 5 minutes ahead")
    lo_ms: float | None
    hi_ms: float | None
    sigma_ms: float | None = Field(description="interval half-width / 1.645 (Gaussian reading)")
    p_over_sla: float | None = Field(description="probability the p95 ends above the SLA")


class BackendState(_Out):
    backend: str
    status: Literal["ok", "degraded", "failing", "ejected", "stale", "unknown"]
    status_reasons: list[str]
    telemetry_at: str | None
    p50_ms: float | None
    p95_ms: float | None
    rps: float | None
    error_rate: float | None
    in_flight: float | None
    capacity_rps: float | None
    utilisation: float | None
    cost_per_request: float | None
    traffic_share: float | None = Field(description="share of standard traffic at the last tick")
    ejected: bool
    forecast: Forecast


class FleetStateOut(_Out):
    now: str
    now_ts: float
    sla_ms: float
    backends: list[BackendState]
    model_version: str | None
    forecast_source: str
    total_rps: float
    healthy: list[str]
    recent_window_minutes: float
    recent_requests: int
    recent_sla_violation_pct: float | None
    recent_escalated: int
    active_alerts: list[dict[str, Any]]
    notes: list[str]


class BackendDetailOut(_Out):
    now: str
    state: BackendState
    window_minutes: float
    p95_ms_min: float | None
    p95_ms_mean: float | None
    p95_ms_max: float | None
    p95_slope_ms_per_min: float | None
    error_rate_max: float | None
    rps_mean: float | None
    requests: int
    sla_violation_pct: float | None
    anomalies: list[dict[str, Any]]
    drift_reports: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    events: list[dict[str, Any]]


class ForecastsOut(_Out):
    now: str
    sla_ms: float
    tier: str
    horizon_minutes: float
    model_version: str | None
    source: str
    forecasts: list[Forecast]
    notes: list[str]


class Risk(_Out):
    backend: str
    kind: Literal["sla", "capacity", "unavailable"]
    probability: float
    level: Literal["high", "medium", "low"]
    detail: str
    figures: dict[str, float | None]


class CapacityRiskOut(_Out):
    now: str
    minutes: float
    sla_ms: float
    risks: list[Risk]
    no_risk: list[str]
    unknown: list[str] = Field(
        default_factory=list, description="backends with no forecast: their SLA risk is unknown"
    )
    fleet_capacity_rps: float | None
    fleet_load_rps: float
    projected_load_rps: float
    notes: list[str]


class DriftFinding(_Out):
    backend: str
    test: str
    status: str
    severity: str
    p_value: float | None
    p_adjusted: float | None
    reference_mae_ms: float | None
    current_mae_ms: float | None
    n_reference: int
    n_current: int


class ChangePoint(_Out):
    backend: str
    at: str
    ts: float
    mae_before_ms: float | None
    mae_after_ms: float | None


class DriftStatusOut(_Out):
    now: str
    window: str
    reference: str
    max_severity: str
    drifted_backends: list[str]
    live: list[DriftFinding]
    change_points: list[ChangePoint]
    stored_reports: list[dict[str, Any]]
    method: str
    notes: list[str]


class AnomaliesOut(_Out):
    since: str
    until: str
    count: int
    by_backend: dict[str, dict[str, Any]]
    anomalies: list[dict[str, Any]]


class Bucket(_Out):
    start: str
    start_ts: float
    requests: int
    violations: int
    violation_pct: float | None
    no_outcome: int
    ambiguous: int
    escalated_to_agent: int
    degraded: bool


class TimelineEvent(_Out):
    at: str
    ts: float
    kind: str
    subject: str | None
    summary: str
    end_at: str | None = None


class BackendImpact(_Out):
    backend: str
    violations: int
    share_of_violations: float
    violation_pct: float | None
    p95_ms_before: float | None
    p95_ms_during: float | None
    error_rate_during: float | None


class QualityTimelineOut(_Out):
    since: str
    until: str
    bucket_minutes: float
    reference_violation_pct: float | None
    reference: str
    peak: Bucket | None
    degraded_from: str | None
    degraded_until: str | None
    buckets: list[Bucket]
    backends: list[BackendImpact]
    events: list[TimelineEvent]
    likely_causes: list[TimelineEvent]
    events_omitted: int
    notes: list[str]


class ExperimentOut(_Out):
    experiment_id: str
    name: str | None
    mode: str
    status: str
    champion_id: str
    challenger_id: str
    started_at: str
    ended_at: str | None
    verdict: str | None
    winner_id: str | None
    purpose: str | None = Field(None, description="challenge, or a post-promotion watch")
    source: str | None = Field(
        None, description="telemetry: judged over the store; otherwise by the loop that ran it"
    )
    live: dict[str, Any] | None = Field(description="a fresh evaluation of a running experiment")
    last_result: dict[str, Any] | None


class ExperimentsOut(_Out):
    experiments: list[ExperimentOut]
    untested_challengers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="trained versions that never served nor entered an experiment, newest first",
    )
    notes: list[str]


class AlertsOut(_Out):
    count: int
    alerts: list[dict[str, Any]]


class CandidateView(_Out):
    backend: str
    forecast_ms: float | None
    lo_ms: float | None
    hi_ms: float | None
    p_over_sla: float | None
    cost_per_request: float | None
    share: float | None
    ejected: bool
    allowed: bool


class ExplainOut(_Out):
    decision_id: str
    request_id: str | None
    at: str
    tier: str | None
    sla_ms: float | None
    backend: str
    decided_by: Literal["policy", "router_agent", "policy_after_agent_fallback"]
    policy: str | None
    reason: str | None
    reason_text: str
    ambiguous: bool
    ambiguous_reason: str | None
    ambiguity_text: str | None
    agent_fallback_reason: str | None
    model_version: str | None
    candidates: list[CandidateView]
    chosen: CandidateView | None
    outcome: dict[str, Any]
    explanation: list[str]
    escalation: dict[str, Any] | None = Field(
        None, description="the router agent's answer from the escalation trace, when escalated"
    )


class DecisionsOut(_Out):
    since: str
    until: str
    decisions: list[dict[str, Any]]


class Recommendation(_Out):
    backend: str
    forecast_ms: float | None
    lo_ms: float | None
    hi_ms: float | None
    p_over_sla: float | None
    p95_now_ms: float | None = Field(None, description="the latest measured p95")
    cost_per_request: float | None
    policy_share: float | None


class RecommendOut(_Out):
    now: str
    tier: str
    sla_ms: float
    recommended: Recommendation | None
    confident: bool
    basis: Literal["forecast", "measured_p95", "none"] = Field(
        description="forecast: 5-minute forecasts; measured_p95: no forecast, the latest p95 only"
    )
    alternatives: list[Recommendation]
    excluded: dict[str, str]
    unknown: list[str] = Field(description="usable backends with no forecast: risk unknown")
    rationale: str
    model_version: str | None


class ModelVersionsOut(_Out):
    kind: str
    active: dict[str, Any] | None
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]


class PerformanceOut(_Out):
    since: str
    until: str
    by_version_backend: list[dict[str, Any]]
    sla_by_backend: list[dict[str, Any]]


class RetrainCheckOut(_Out):
    now: str
    retrain: bool
    summary: str
    decision: dict[str, Any]
    inputs: dict[str, Any]


class CompareOut(_Out):
    since: str
    until: str
    sla_ms: float
    backends: list[dict[str, Any]]
    best: dict[str, str | None] = Field(description="per criterion, the better backend")
    notes: list[str]


class CostOut(_Out):
    since: str
    until: str
    backends: list[dict[str, Any]]
    total_usd: float | None = Field(description="estimated from the request rates served")
    stored_decisions_usd: float | None = Field(description="over the decisions stored")
    notes: list[str]


class ModelHistoryOut(_Out):
    kind: str
    now: str | None
    serving: dict[str, Any] | None
    version: dict[str, Any] | None = Field(description="the version asked about, if any")
    activations: list[dict[str, Any]]
    notes: list[str]


class ApprovalsOut(_Out):
    pending: int
    approvals: list[dict[str, Any]]


class WhatIfOut(_Out):
    now: str
    action: str
    backend: str
    minutes: float
    demand_rps: float
    policy: str
    summary: str
    overall: dict[str, dict[str, Any]]
    backends: list[dict[str, Any]]
    notes: list[str]


class RetrainRequestsOut(_Out):
    now: str
    pending: list[dict[str, Any]]
    handled: list[dict[str, Any]]


class WriteOut(_Out):
    ok: bool
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)
