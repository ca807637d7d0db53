"""Settings from the environment: `ARCPOINT_*`, and the Anthropic variables by their own names.

The API key is a `SecretStr`: it never prints, and nothing below the CLI receives the settings
object itself, only the values it needs.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from context_api.bounds import ValueBounds


class ConfigurationError(ValueError):
    """A setting that cannot work (a model endpoint with a wrong scheme, ...): exit 2, no
    traceback."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARCPOINT_", extra="ignore")

    db: str = "arcpoint.db"
    sla_ms: float = Field(300.0, gt=0)
    anthropic_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "ARCPOINT_ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "ARCPOINT_ANTHROPIC_BASE_URL")
    )
    model: str = Field(
        "claude-sonnet-4-6", validation_alias=AliasChoices("ARCPOINT_MODEL", "ANTHROPIC_MODEL")
    )
    router_model: str = Field(
        "claude-haiku-4-5",
        validation_alias=AliasChoices("ARCPOINT_ROUTER_MODEL"),
        description="the model for escalations, a hot path: a fast one by default",
    )
    escalation_deadline_s: float = Field(1.5, gt=0)
    ask_deadline_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    """A question's whole turn (every agent it passes through) ends by then, answered offline
    if the model has not answered."""
    auto_approve: bool = False
    """Approve the monitors' proposed model changes without an operator (ARCPOINT_AUTO_APPROVE).
    Off by default: a promotion or rollback waits for `arcpoint approvals approve`."""
    outcome_max_age_s: float = Field(3600.0, gt=0)
    webhook_url: str | None = None
    max_latency_ms: float = Field(600_000.0, gt=0, allow_inf_nan=False)
    max_rps: float = Field(1_000_000.0, gt=0, allow_inf_nan=False)
    max_label_lag_s: float = Field(86_400.0, gt=0, allow_inf_nan=False)

    @property
    def bounds(self) -> ValueBounds:
        """Physical bounds on ingested telemetry and recorded outcomes."""
        return ValueBounds(
            max_latency_ms=self.max_latency_ms,
            max_rps=self.max_rps,
            max_label_lag_s=self.max_label_lag_s,
        )

    @property
    def llm(self) -> str:
        return "claude" if self.anthropic_api_key else "offline"


def load_settings() -> Settings:
    return Settings()
