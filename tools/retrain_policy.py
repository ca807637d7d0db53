"""When to retrain the forecaster, and on which window: a pure, configurable rule.

Retraining too late serves a stale model; retraining too often thrashes (every new version needs
an experiment before it is trusted) and trains on too little data. The rule, in order:

1. **Triggers** (any one suffices):
   * ``drift``: the latest drift severity is at least `RetrainPolicy.drift_trigger` (high);
   * ``error_above_holdout``: the recent rolling MAE is at least ``mae_ratio_trigger`` (1.3) times
     the MAE the model had on its hold-out set, *measured on at least* ``min_mae_samples`` outcomes
     (a ratio over a dozen outcomes is noise, reported as ``error_ratio_unconfirmed``);
   * ``model_stale``: the model is older than ``max_model_age_seconds`` (off by default);
   * ``no_model``: nothing was ever trained.
2. **Blockers** (any one vetoes):
   * ``insufficient_new_samples``: fewer than ``min_new_samples`` labelled outcomes since the last
     training; never overridden, a model trained on little new data learns nothing new;
   * ``cooldown``: the last training was less than ``cooldown_seconds`` ago; critical drift
     overrides it when ``critical_overrides_cooldown`` (reported as ``cooldown_overridden``);
   * ``post_drift_window_too_short``: after a drift, training uses only data from after the change
     point, and waits until that spans ``min_train_window_seconds``.
3. **Window**: the last ``train_window_seconds`` up to now, starting no earlier than the drift's
   change point when one is known (data from before a concept drift teaches the old concept).

The decision says which codes fired, when to look again if blocked (``retry_after_seconds``), and
a summary sentence. Pure: no clock, no I/O; the caller passes ``now_ts``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DriftSeverity = Literal["none", "low", "medium", "high", "critical"]
SEVERITY_RANK: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}

ReasonCode = Literal[
    # triggers
    "drift",
    "error_above_holdout",
    "model_stale",
    "no_model",
    # blockers
    "insufficient_new_samples",
    "cooldown",
    "post_drift_window_too_short",
    # information
    "no_trigger",
    "error_ratio_unconfirmed",
    "no_holdout_mae",
    "cooldown_overridden",
]
TRIGGERS = ("drift", "error_above_holdout", "model_stale", "no_model")
BLOCKERS = ("insufficient_new_samples", "cooldown", "post_drift_window_too_short")


class RetrainPolicy(BaseModel):
    """The configurable thresholds of the rule (defaults suit 10 s ticks and a 5-minute horizon)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    drift_trigger: DriftSeverity = "high"
    mae_ratio_trigger: float = Field(1.3, gt=1.0)
    min_mae_samples: int = Field(200, ge=1)
    min_new_samples: int = Field(500, ge=0)
    cooldown_seconds: float = Field(1800.0, ge=0)
    critical_overrides_cooldown: bool = True
    max_model_age_seconds: float | None = Field(None, gt=0)
    train_window_seconds: float = Field(6 * 3600.0, gt=0)
    min_train_window_seconds: float = Field(1800.0, ge=0)

    @model_validator(mode="after")
    def _window_fits(self) -> RetrainPolicy:
        if self.min_train_window_seconds > self.train_window_seconds:
            raise ValueError("min_train_window_seconds exceeds train_window_seconds")
        if self.drift_trigger == "none":
            raise ValueError("drift_trigger 'none' would retrain on every check")
        return self


def loop_policy() -> RetrainPolicy:
    """The closed loop's policy (the feedback loop in replays and the monitors over a store).

    The forecaster's temporal split (fit | gap | calibration | gap | hold-out, gaps of one
    horizon) needs about 45 minutes of telemetry with the loop's split fractions, so the
    post-drift window waits for that."""
    return RetrainPolicy(
        drift_trigger="high",
        min_mae_samples=200,
        min_new_samples=300,
        cooldown_seconds=1800.0,
        train_window_seconds=7200.0,
        min_train_window_seconds=2700.0,
    )


class RetrainInputs(BaseModel):
    """What the loop knows at a check. Times are unix seconds; durations seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    now_ts: float
    drift_severity: DriftSeverity = "none"
    drift_started_at: float | None = Field(
        None, description="change point of the latest drift, if the detector located it"
    )
    recent_mae_ms: float | None = Field(None, ge=0)
    recent_mae_samples: int = Field(0, ge=0)
    holdout_mae_ms: float | None = Field(None, ge=0)
    new_samples_since_training: int = Field(ge=0)
    seconds_since_training: float | None = Field(None, ge=0, description="None: never trained")

    @model_validator(mode="after")
    def _drift_not_in_future(self) -> RetrainInputs:
        if self.drift_started_at is not None and self.drift_started_at > self.now_ts:
            raise ValueError("drift_started_at is after now_ts")
        return self


class TrainWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    start_ts: float
    end_ts: float
    seconds: float
    starts_at_drift: bool = Field(description="the start was moved to the drift's change point")


class RetrainDecision(BaseModel):
    """The rule's answer, readable by an operator or an agent."""

    model_config = ConfigDict(frozen=True)

    retrain: bool
    reasons: list[ReasonCode] = Field(description="triggers, then blockers, then information")
    triggers: list[ReasonCode]
    blockers: list[ReasonCode]
    window: TrainWindow | None = Field(None, description="what to train on; None if no trigger")
    mae_ratio: float | None = Field(None, description="recent MAE / hold-out MAE")
    retry_after_seconds: float | None = Field(
        None, description="when a blocker that time lifts (cooldown, short window) ends"
    )
    summary: str


def _mae_ratio(recent: float | None, holdout: float | None) -> float | None:
    if recent is None or holdout is None:
        return None
    if holdout == 0.0:
        return 1.0 if recent == 0.0 else math.inf
    return recent / holdout


def decide_retrain(inputs: RetrainInputs, policy: RetrainPolicy | None = None) -> RetrainDecision:
    """Apply the retraining rule (see the module docstring) to one check."""
    p = policy or RetrainPolicy()
    triggers: list[ReasonCode] = []
    blockers: list[ReasonCode] = []
    info: list[ReasonCode] = []
    waits: list[float] = []
    said: list[str] = []

    sev = SEVERITY_RANK[inputs.drift_severity]
    if sev >= SEVERITY_RANK[p.drift_trigger]:
        triggers.append("drift")
        said.append(f"{inputs.drift_severity} drift")

    ratio = _mae_ratio(inputs.recent_mae_ms, inputs.holdout_mae_ms)
    if inputs.recent_mae_ms is not None and inputs.holdout_mae_ms is None:
        info.append("no_holdout_mae")
    if ratio is not None and ratio >= p.mae_ratio_trigger:
        if inputs.recent_mae_samples >= p.min_mae_samples:
            triggers.append("error_above_holdout")
            said.append(
                f"recent MAE {inputs.recent_mae_ms:.1f} ms is {ratio:.2f}x the hold-out "
                f"{inputs.holdout_mae_ms:.1f} ms"
            )
        else:
            info.append("error_ratio_unconfirmed")

    since = inputs.seconds_since_training
    if since is None:
        triggers.append("no_model")
        said.append("no model was ever trained")
    elif p.max_model_age_seconds is not None and since >= p.max_model_age_seconds:
        triggers.append("model_stale")
        said.append(f"the model is {since / 3600:.1f} h old")

    if not triggers:
        ratio_txt = "" if ratio is None else f", MAE ratio {ratio:.2f}"
        return RetrainDecision(
            retrain=False,
            reasons=["no_trigger", *info],
            triggers=[],
            blockers=[],
            mae_ratio=ratio,
            summary=(
                f"No retraining: drift {inputs.drift_severity}{ratio_txt}"
                f" (thresholds: {p.drift_trigger} drift, {p.mae_ratio_trigger}x hold-out MAE)."
            ),
        )

    if inputs.new_samples_since_training < p.min_new_samples:
        blockers.append("insufficient_new_samples")
    if since is not None and since < p.cooldown_seconds:
        if inputs.drift_severity == "critical" and p.critical_overrides_cooldown:
            info.append("cooldown_overridden")
        else:
            blockers.append("cooldown")
            waits.append(p.cooldown_seconds - since)

    end = inputs.now_ts
    start = end - p.train_window_seconds
    at_drift = False
    if inputs.drift_started_at is not None and sev > 0 and inputs.drift_started_at > start:
        start, at_drift = inputs.drift_started_at, True
        if end - start < p.min_train_window_seconds:
            blockers.append("post_drift_window_too_short")
            waits.append(p.min_train_window_seconds - (end - start))
    window = TrainWindow(start_ts=start, end_ts=end, seconds=end - start, starts_at_drift=at_drift)

    retrain = not blockers
    time_only = bool(blockers) and "insufficient_new_samples" not in blockers
    retry = (
        max(waits) if time_only else None
    )  # more samples is not a matter of waiting a known time
    why = "; ".join(said)
    if retrain:
        summary = (
            f"Retrain: {why}. Train on the last {window.seconds / 3600:.1f} h"
            + (" (from the drift's change point)" if at_drift else "")
            + f", {inputs.new_samples_since_training} new outcomes"
            + (" (critical drift overrides the cooldown)" if "cooldown_overridden" in info else "")
            + "."
        )
    else:
        texts = {
            "insufficient_new_samples": (
                f"only {inputs.new_samples_since_training} new outcomes (< {p.min_new_samples})"
            ),
            "cooldown": (
                f"last training {since or 0:.0f} s ago (cooldown {p.cooldown_seconds:.0f} s)"
            ),
            "post_drift_window_too_short": (
                f"only {window.seconds:.0f} s of data since the drift "
                f"(< {p.min_train_window_seconds:.0f} s)"
            ),
        }
        summary = (
            f"Retraining wanted ({why}) but blocked: "
            + "; ".join(texts[b] for b in blockers)
            + (f". Check again in {retry:.0f} s." if retry is not None else ".")
        )
    return RetrainDecision(
        retrain=retrain,
        reasons=[*triggers, *blockers, *info],
        triggers=triggers,
        blockers=blockers,
        window=window,
        mae_ratio=ratio,
        retry_after_seconds=retry,
        summary=summary,
    )
