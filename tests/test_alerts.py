"""The pure alert logic: the record, the gate (dedup, rate limit, escalation), backoff, payloads."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tools.alerts import (
    SEVERITIES,
    Alert,
    AlertGate,
    AlertPolicy,
    PastAlert,
    RetryPolicy,
    backoff_delay,
    merged_into,
    redact_url,
    scrub,
    slack_payload,
)

POLICY = AlertPolicy(dedup_window_s=300, rate_window_s=3600, max_per_window=3)


def make(
    at: float,
    severity: str = "high",
    *,
    kind: str = "drift",
    subject: str = "b1",
    evidence: dict | None = None,
) -> Alert:
    return Alert(
        kind=kind,
        subject=subject,
        severity=severity,
        evidence=evidence if evidence is not None else {"p_value": 0.001},
        recommended_action="retrain the forecaster on the last hour",
        at=at,
    )


class Feed:
    """Drive a gate as the service does: decide, then record with a fresh id."""

    def __init__(self, policy: AlertPolicy = POLICY) -> None:
        self.gate = AlertGate(policy)
        self.n = 0

    def __call__(self, alert: Alert):
        decision = self.gate.decide(alert)
        self.n += 1
        alert_id = f"a{self.n}"
        self.gate.record(alert, decision, alert_id)
        return alert_id, decision


# --- the record ---------------------------------------------------------------------------------


def test_alert_holds_what_a_person_needs():
    a = make(100.0)
    assert a.key == ("drift", "b1")
    assert a.dedup_key == "drift:b1"
    assert json.loads(a.model_dump_json())["evidence"] == {"p_value": 0.001}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "weather", "kind"),
        ("severity", "urgent", "severity"),
        ("subject", "   ", "blank"),
        ("subject", "", "subject"),
        ("subject", "b1\nINFO forged log line", "control characters"),
        ("recommended_action", "", "recommended_action"),
        ("at", math.nan, "finite"),
        ("at", math.inf, "finite"),
        ("at", -1.0, ">= 0"),
        ("evidence", {"p": math.nan}, "evidence['p']"),
        ("evidence", {"xs": [1.0, math.inf]}, "evidence['xs'][1]"),
        ("evidence", {"when": object()}, "not JSON"),
        ("evidence", {1: "x"}, "non-string key"),
        ("evidence", ["not", "a", "dict"], "mapping"),
        ("evidence", {"blob": "x" * 70_000}, "bytes"),
    ],
)
def test_bad_alerts_are_refused_with_a_clear_error(field, value, message):
    fields = make(1.0).model_dump()
    fields[field] = value
    with pytest.raises(ValidationError) as info:
        Alert(**fields)
    assert message in str(info.value)


def test_evidence_from_numpy_and_tuples_becomes_plain_json():
    a = make(
        1.0,
        evidence={"score": np.float64(0.93), "n": np.int64(12), "ok": np.bool_(True), "xy": (1, 2)},
    )
    assert a.evidence == {"score": 0.93, "n": 12, "ok": True, "xy": [1, 2]}
    assert type(a.evidence["n"]) is int
    json.dumps(a.evidence, allow_nan=False)


def test_alert_is_immutable():
    a = make(1.0)
    with pytest.raises(ValidationError):
        a.severity = "low"  # type: ignore[misc]


# --- the gate -----------------------------------------------------------------------------------


def test_identical_alerts_within_the_dedup_window_merge_with_a_count():
    feed = Feed()
    first, d0 = feed(make(0.0))
    assert d0.action == "notify" and not d0.suppressed
    decisions = [feed(make(t))[1] for t in (10.0, 60.0, 299.0)]
    assert [d.action for d in decisions] == ["duplicate"] * 3
    assert all(d.related_id == first for d in decisions)
    assert [d.occurrences for d in decisions] == [2, 3, 4]
    assert decisions[0].reason == f"duplicate of {first}"
    assert merged_into(decisions[0].reason) == first
    assert feed.gate.occurrences(first) == 4


def test_after_the_dedup_window_the_same_alert_is_sent_again():
    feed = Feed()
    feed(make(0.0))
    _, d = feed(make(300.0))
    assert d.action == "notify"


def test_rate_limit_caps_notifications_per_kind_and_subject():
    feed = Feed()
    # Each one past the previous dedup window, all within one rate window.
    actions = [feed(make(t))[1] for t in (0.0, 400.0, 800.0, 1200.0, 1600.0)]
    assert [d.action for d in actions] == ["notify"] * 3 + ["rate_limited"] * 2
    limited = actions[3]
    assert limited.suppressed and limited.reason.startswith("rate limited")
    assert "drift:b1" in limited.reason and "max 3" in limited.reason
    # The window slides: an hour after the first, room again.
    _, d = feed(make(3600.0 + 1.0))
    assert d.action == "notify"


def test_severity_escalation_always_goes_through():
    feed = Feed(AlertPolicy(dedup_window_s=300, rate_window_s=3600, max_per_window=1))
    assert feed(make(0.0, "low"))[1].action == "notify"
    assert feed(make(10.0, "low"))[1].action == "duplicate"
    assert feed(make(500.0, "low"))[1].action == "rate_limited"
    for t, sev in ((20.0, "medium"), (30.0, "high"), (40.0, "critical")):
        _, d = feed(make(t, sev))
        assert d.action == "notify" and d.escalation
    # Back down (not an escalation): limited.
    assert feed(make(900.0, "high"))[1].action == "rate_limited"


def test_other_subjects_and_kinds_are_independent():
    feed = Feed(AlertPolicy(max_per_window=1))
    assert feed(make(0.0, subject="b1"))[1].action == "notify"
    assert feed(make(0.0, subject="b2"))[1].action == "notify"
    assert feed(make(0.0, kind="anomaly", subject="b1"))[1].action == "notify"
    assert feed(make(1.0, subject="b1"))[1].action == "duplicate"


def test_a_flapping_signal_does_not_flood():
    feed = Feed()
    sent = 0
    for i in range(200):  # low/high every 30 s for 100 minutes
        _, d = feed(make(i * 30.0, "high" if i % 2 == 0 else "low"))
        sent += d.action == "notify"
    # 3 per hour-long window, plus the first escalation: far from 200.
    assert sent <= 2 * (POLICY.max_per_window + 1)


def test_a_late_alert_is_judged_at_the_newest_time_seen():
    feed = Feed()
    first, _ = feed(make(1000.0))
    # Arrives late, stamped before the open alert: merged, not a new page.
    _, d = feed(make(900.0))
    assert d.action == "duplicate" and d.related_id == first


def test_restore_rebuilds_counts_and_prevents_resending():
    history = [
        PastAlert("a1", "drift", "b1", "high", 0.0, False),
        PastAlert("a2", "drift", "b1", "high", 10.0, True, "duplicate of a1"),
        PastAlert("a3", "drift", "b1", "high", 20.0, True, "duplicate of a1"),
        PastAlert("a4", "anomaly", "b2", "low", 5.0, False),
        PastAlert("a5", "drift", "b1", "low", 6.0, True, "rate limited: ...; latest a1"),
    ]
    gate = AlertGate(POLICY)
    assert gate.restore(reversed(history)) == 4
    assert gate.occurrences("a1") == 3
    d = gate.decide(make(30.0))
    assert d.action == "duplicate" and d.related_id == "a1" and d.occurrences == 4


def test_memory_is_bounded_by_the_window():
    gate = AlertGate(AlertPolicy(dedup_window_s=10, rate_window_s=10, max_per_window=1))
    for i in range(3000):
        a = make(float(i * 20), subject=f"b{i}")
        gate.record(a, gate.decide(a), f"id{i}")
    gate.sweep(3000 * 20.0)
    assert len(gate._keys) <= 1


alerts_stream = st.lists(
    st.tuples(st.floats(0, 50), st.sampled_from(SEVERITIES), st.sampled_from(["b1", "b2"])),
    max_size=120,
)


@settings(max_examples=60, deadline=None)
@given(steps=alerts_stream, max_per=st.integers(1, 4))
def test_no_window_sends_more_than_the_limit_plus_escalations(steps, max_per):
    policy = AlertPolicy(dedup_window_s=120, rate_window_s=600, max_per_window=max_per)
    feed = Feed(policy)
    t = 0.0
    sent: list[tuple[float, str, bool]] = []
    for gap, sev, subject in steps:
        t += gap
        _, d = feed(make(t, sev, subject=subject))
        if d.action == "notify":
            sent.append((t, subject, d.escalation))
        if d.action == "duplicate":
            assert d.related_id is not None and d.occurrences >= 2
    for start, subject, _ in sent:
        window = [s for s in sent if s[1] == subject and start <= s[0] < start + 600]
        plain = [s for s in window if not s[2]]
        assert len(plain) <= max_per
        assert len(window) <= max_per + len(SEVERITIES)


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    policy = RetryPolicy(base_s=2.0, cap_s=60.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        step = min(60.0, 2.0 * 2 ** (attempt - 1))
        delay = backoff_delay(attempt, policy, rng)
        assert step / 2 <= delay <= step
    assert backoff_delay(10_000, policy, rng) <= 60.0
    # Deterministic given the seed.
    a = [backoff_delay(k, policy, random.Random(1)) for k in range(1, 6)]
    b = [backoff_delay(k, policy, random.Random(1)) for k in range(1, 6)]
    assert a == b
    with pytest.raises(ValueError):
        backoff_delay(0, policy, rng)


def test_retry_policy_refuses_nonsense():
    with pytest.raises(ValidationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValidationError):
        RetryPolicy(timeout_s=math.inf)


# --- secrets and payloads -----------------------------------------------------------------------

SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"


def test_urls_are_reduced_to_their_host():
    assert redact_url(SLACK) == "https://hooks.slack.com/…"
    assert redact_url("http://localhost:8080/hook?token=abc") == "http://localhost:8080/…"
    assert "SECRET" not in scrub(f"error posting to {SLACK}: boom", SLACK)
    assert "abc" not in scrub("url=/hook?token=abc", "http://h/hook?token=abc")


def test_slack_payload_has_text_and_blocks():
    a = make(1_700_000_000.0, "critical", evidence={"p_value": 0.0001, "ks": 0.4})
    p = slack_payload(a, alert_id="abc123", occurrences=3)
    assert set(p) == {"text", "blocks"}
    assert "CRITICAL" in p["text"] and "b1" in p["text"] and "(x3)" in p["text"]
    types = [b["type"] for b in p["blocks"]]
    assert types[0] == "header" and types[-1] == "context" and "section" in types
    dumped = json.dumps(p)
    assert "Occurrences" in dumped and "abc123" in dumped and "2023-11-14 22:13:20 UTC" in dumped
    assert "p_value" in dumped
    assert len(p["blocks"][0]["text"]["text"]) <= 150


def test_slack_payload_escapes_data_and_respects_limits():
    a = Alert(
        kind="anomaly",
        subject="<!channel> & <http://evil|click>",
        severity="low",
        evidence={"note": "```" + "y" * 5000},
        recommended_action="look at <@U123>",
        at=0.0,
    )
    p = slack_payload(a)
    dumped = json.dumps(p)
    assert "<!channel>" not in dumped and "<@U123>" not in dumped
    assert "&lt;!channel&gt; &amp;" in p["text"]
    for block in p["blocks"]:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
            assert block["text"]["text"].count("```") in (0, 2)
