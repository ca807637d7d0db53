from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from tools.retrain_policy import RetrainInputs, RetrainPolicy, decide_retrain

NOW = 1_700_000_000.0
HOUR = 3600.0


def _inputs(**kw) -> RetrainInputs:
    base = dict(
        now_ts=NOW,
        drift_severity="none",
        recent_mae_ms=20.0,
        recent_mae_samples=1000,
        holdout_mae_ms=20.0,
        new_samples_since_training=5000,
        seconds_since_training=10 * HOUR,
    )
    base.update(kw)
    return RetrainInputs(**base)


def test_healthy_model_is_not_retrained():
    d = decide_retrain(_inputs(drift_severity="medium", recent_mae_ms=24.0))
    assert not d.retrain
    assert d.reasons == ["no_trigger"] and d.window is None
    assert d.mae_ratio == pytest.approx(1.2)
    assert "No retraining" in d.summary


@pytest.mark.parametrize("severity", ["high", "critical"])
def test_high_drift_triggers_with_the_default_window(severity):
    d = decide_retrain(_inputs(drift_severity=severity))
    assert d.retrain and d.triggers == ["drift"] and d.blockers == []
    assert d.window is not None
    assert d.window.end_ts == NOW and d.window.seconds == 6 * HOUR
    assert not d.window.starts_at_drift
    assert d.summary.startswith("Retrain:")


def test_drift_trigger_level_is_configurable():
    policy = RetrainPolicy(drift_trigger="medium")
    assert decide_retrain(_inputs(drift_severity="medium"), policy).retrain
    assert not decide_retrain(_inputs(drift_severity="low"), policy).retrain


def test_error_above_holdout_needs_enough_samples():
    d = decide_retrain(_inputs(recent_mae_ms=27.0, recent_mae_samples=1000))
    assert d.retrain and d.triggers == ["error_above_holdout"]
    assert "1.35x" in d.summary
    few = decide_retrain(_inputs(recent_mae_ms=27.0, recent_mae_samples=50))
    assert not few.retrain
    assert few.reasons == ["no_trigger", "error_ratio_unconfirmed"]


def test_never_with_fewer_than_min_new_samples():
    d = decide_retrain(_inputs(drift_severity="critical", new_samples_since_training=499))
    assert not d.retrain
    assert d.blockers == ["insufficient_new_samples"]
    assert d.retry_after_seconds is None
    assert "only 499 new outcomes" in d.summary


def test_cooldown_blocks_and_says_when_to_retry():
    d = decide_retrain(_inputs(drift_severity="high", seconds_since_training=600.0))
    assert not d.retrain and d.blockers == ["cooldown"]
    assert d.retry_after_seconds == pytest.approx(1200.0)
    assert "1200 s" in d.summary


def test_critical_drift_overrides_the_cooldown_only_if_configured():
    d = decide_retrain(_inputs(drift_severity="critical", seconds_since_training=600.0))
    assert d.retrain and "cooldown_overridden" in d.reasons
    strict = RetrainPolicy(critical_overrides_cooldown=False)
    d2 = decide_retrain(_inputs(drift_severity="critical", seconds_since_training=600.0), strict)
    assert not d2.retrain and d2.blockers == ["cooldown"]


def test_window_starts_at_the_drift_change_point():
    d = decide_retrain(_inputs(drift_severity="high", drift_started_at=NOW - 2 * HOUR))
    assert d.retrain and d.window is not None
    assert d.window.start_ts == NOW - 2 * HOUR and d.window.starts_at_drift
    old = decide_retrain(_inputs(drift_severity="high", drift_started_at=NOW - 24 * HOUR))
    assert old.window is not None and old.window.seconds == 6 * HOUR
    assert not old.window.starts_at_drift


def test_waits_for_enough_post_drift_data():
    d = decide_retrain(_inputs(drift_severity="high", drift_started_at=NOW - 600.0))
    assert not d.retrain and d.blockers == ["post_drift_window_too_short"]
    assert d.retry_after_seconds == pytest.approx(1200.0)


def test_never_trained_and_stale_models():
    d = decide_retrain(_inputs(seconds_since_training=None, recent_mae_ms=None))
    assert d.retrain and d.triggers == ["no_model"]
    aging = RetrainPolicy(max_model_age_seconds=24 * HOUR)
    assert not decide_retrain(_inputs(), aging).retrain
    d2 = decide_retrain(_inputs(seconds_since_training=25 * HOUR), aging)
    assert d2.retrain and d2.triggers == ["model_stale"]


def test_zero_holdout_mae_and_missing_holdout():
    d = decide_retrain(_inputs(holdout_mae_ms=0.0, recent_mae_ms=5.0))
    assert d.retrain and d.mae_ratio == math.inf
    d2 = decide_retrain(_inputs(holdout_mae_ms=None))
    assert not d2.retrain and "no_holdout_mae" in d2.reasons


def test_several_triggers_and_blockers_are_all_reported():
    d = decide_retrain(
        _inputs(
            drift_severity="high",
            recent_mae_ms=40.0,
            new_samples_since_training=10,
            seconds_since_training=60.0,
        )
    )
    assert d.triggers == ["drift", "error_above_holdout"]
    assert d.blockers == ["insufficient_new_samples", "cooldown"]
    assert d.reasons[:4] == [*d.triggers, *d.blockers]
    json.loads(d.model_dump_json())  # an agent can read it


@pytest.mark.parametrize(
    "bad",
    [
        dict(drift_severity="severe"),
        dict(recent_mae_ms=float("nan")),
        dict(recent_mae_ms=-1.0),
        dict(new_samples_since_training=-5),
        dict(seconds_since_training=float("inf")),
        dict(drift_started_at=NOW + 1.0),
    ],
)
def test_bad_inputs_are_rejected(bad):
    with pytest.raises(ValidationError):
        _inputs(**bad)


def test_bad_policy_is_rejected():
    with pytest.raises(ValidationError):
        RetrainPolicy(mae_ratio_trigger=0.9)
    with pytest.raises(ValidationError):
        RetrainPolicy(train_window_seconds=600.0, min_train_window_seconds=1800.0)
    with pytest.raises(ValidationError):
        RetrainPolicy(drift_trigger="none")
