"""The service's settings, and the rule that keeps an unauthenticated service on loopback."""

from __future__ import annotations

import ipaddress
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787


class ServeConfig(BaseModel):
    """Everything `create_app` needs. Secrets are `SecretStr`: they never print."""

    model_config = ConfigDict(frozen=True)

    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    db: str = "arcpoint.db"
    fleet: str | None = None
    """A fleet file (YAML or JSON); None means the simulator's default fleet."""
    token: SecretStr | None = None
    """Bearer token for every state-changing `/v1` endpoint (`ARCPOINT_TOKEN`)."""
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Requests with a larger body get 413 before any of it is parsed."""
    max_outcome_batch: int = Field(5000, ge=1)
    ask_rate_per_min: float = Field(30.0, gt=0)
    """Questions per minute per client on `/v1/ask` (a token bucket)."""
    ask_burst: float = Field(5.0, ge=1)
    decision_queue: int = Field(100_000, ge=1)
    """Decisions waiting for the background writer at most; past that they are dropped, counted."""
    tick_s: float = Field(10.0, gt=0)
    """How often live telemetry becomes a tick for the router (forecasts, policy, monitor)."""
    scrape_interval_s: float = Field(5.0, gt=0)
    scrape_timeout_s: float = Field(2.0, gt=0)
    monitor_interval_s: float = Field(60.0, gt=0)
    """How often the scheduled monitors run (drift, feedback, experiments, expiry)."""
    outcome_max_age_s: float = Field(3600.0, gt=0)
    shutdown_grace_s: float = Field(7.0, ge=0)
    """How long in-flight requests may take to finish on SIGTERM before the writers are flushed."""
    sla_ms: float = Field(300.0, gt=0)
    llm: str = "offline"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    model: str = "claude-sonnet-4-6"
    escalation_deadline_s: float | None = None
    escalation_mode: Literal["advisory", "override"] = "advisory"
    """`advisory`: the router agent's answer is recorded with the decision, the request gets
    the policy's pick at once; `override`: the answer may move the request, which then waits
    for it (at most the escalation deadline)."""
    policy: str = "predictive"
    """`predictive` (the forecaster-driven router, with escalation), or a per-request baseline
    from `tools.routers` (least_request, peak_ewma, prequal, c3, llmd, ...)."""
    run_monitors: bool = True
    auto_approve: bool = False
    """Apply the monitors' proposals without an operator (ARCPOINT_AUTO_APPROVE; off)."""
    log_requests: bool = False

    def token_value(self) -> str | None:
        if self.token is None:
            return None
        value = self.token.get_secret_value().strip()
        return value or None


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class UnsafeBindError(ValueError):
    pass


def check_bind(config: ServeConfig) -> None:
    """Refuse a non-loopback bind without a token: an open router is an open door."""
    if not is_loopback(config.host) and config.token_value() is None:
        raise UnsafeBindError(
            f"refusing to listen on {config.host}: that address is reachable from other machines "
            "and no token is configured. Set ARCPOINT_TOKEN (clients then send "
            "'Authorization: Bearer <token>'), or bind to 127.0.0.1."
        )
    if not math.isfinite(config.tick_s):
        raise ValueError("tick_s must be finite")
