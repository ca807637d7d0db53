"""Request and response bodies of the HTTP API (pydantic: validated at the door, documented in
the OpenAPI schema at `/openapi.json` and `/docs`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from arcpoint.serve.engine_metrics import EngineScrape
from tools.routing import TIERS

MAX_METADATA_ITEMS = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(None, min_length=1, max_length=128)
    tier: str = Field("standard", description=f"one of {', '.join(TIERS)}")
    sla_ms: float | None = Field(
        None, gt=0, le=3_600_000, allow_inf_nan=False, description="overrides the tier's SLA"
    )
    input_tokens: int | None = Field(None, ge=0, le=10_000_000)
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="caller's text, stored with the decision; data only, never instructions",
    )

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, value: str) -> str:
        if value not in TIERS:
            raise ValueError(f"unknown tier {value!r}; known: {', '.join(TIERS)}")
        return value

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_METADATA_ITEMS:
            raise ValueError(f"at most {MAX_METADATA_ITEMS} metadata entries")
        for k, v in value.items():
            if len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"metadata keys are at most {MAX_METADATA_KEY} characters and values "
                    f"{MAX_METADATA_VALUE}"
                )
        return value


class RouteOut(BaseModel):
    decision_id: str
    backend: str
    reason: str
    ambiguous: bool
    p_meet_slo: float | None = Field(
        description="probability that the chosen backend meets the SLA (forecast interval read "
        "as Gaussian); null while no forecast is available"
    )
    escalated: bool
    recorded: bool = Field(
        description="false when the decision log was full and this decision was not stored "
        "(counted in arcpoint_decisions_dropped_total)"
    )
    sla_ms: float
    model_version: str | None


class OutcomesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcomes: list[Any] = Field(
        min_length=1,
        description="rows of {decision_id, e2e_ms, status, ttft_ms?, observed_at?}; each row is "
        "accepted or rejected on its own",
    )


class OutcomeRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision_id: str = Field(min_length=1, max_length=128)
    e2e_ms: float = Field(description="end-to-end latency the caller saw")
    status: Literal["ok", "timeout", "error", "rejected"] = "ok"
    ttft_ms: float | None = Field(None, description="time to first token, when streamed")
    observed_at: float | None = Field(
        None, description="unix seconds when the request ended; default: when received"
    )


class Rejection(BaseModel):
    index: int
    decision_id: str | None = None
    reason: str
    detail: str | None = None


class OutcomesOut(BaseModel):
    accepted: int
    duplicate: int
    rejected: list[Rejection]


class TelemetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scrapes: list[EngineScrape] = Field(min_length=1, max_length=1000)


class TelemetryOut(BaseModel):
    accepted: int
    rejected: list[Rejection]


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    thread_id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[\w.:-]+$")


class AskOut(BaseModel):
    answer: str
    trace_id: str | None
    agent: str | None = None
    llm: str
    model: str | None = None
    tools_called: list[str] = Field(default_factory=list)
    thread_id: str | None = None


class ApprovalAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    reason: str | None = Field(None, max_length=2000)
    by: str | None = Field(None, max_length=128)


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorOut(BaseModel):
    error: str
    detail: list[ErrorDetail]
