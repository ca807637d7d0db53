"""Alerts as pure logic: the alert record, deduplication and rate limiting, backoff, Slack payloads.

Why a gate: a monitor that flaps (drift on, off, on) must not page someone a hundred times.
`AlertGate` decides, per (kind, subject), whether a new alert is sent, merged into the open
alert, or held back by the rate limit:

1. **duplicate**: the same severity as an alert sent for this (kind, subject) less than
   `dedup_window_s` ago. It is merged into that alert, whose occurrence count goes up.
2. **escalation**: a severity above every alert sent for this (kind, subject) in the last
   `rate_window_s`. Always sent: getting worse is news, whatever the rate limit says.
3. **rate limited**: `max_per_window` alerts already sent for this (kind, subject) in the last
   `rate_window_s`.
4. otherwise **sent**.

Suppressed alerts are not dropped: the caller stores every alert, with the gate's `reason`
("duplicate of <id>", "rate limited ...") saying why it was not sent and, for a duplicate, the
alert it repeats (`related_id`), so the record is complete and occurrence counts can be rebuilt
from it (`AlertGate.restore`).

Time is the alert's own `at`. An alert older than one already seen for its key (out of order) is
judged at the newest time seen, so a late arrival can be merged or limited but never reopens a
window that has closed.

Everything here is deterministic: no clock, no I/O; randomness (backoff jitter) comes from a
`random.Random` the caller seeds.
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

AlertKind = Literal["drift", "anomaly", "sla_risk", "experiment_verdict", "model_change"]
Severity = Literal["info", "low", "medium", "high", "critical"]
GateAction = Literal["notify", "duplicate", "rate_limited"]

KINDS: tuple[str, ...] = ("drift", "anomaly", "sla_risk", "experiment_verdict", "model_change")
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
_RANK = {s: i for i, s in enumerate(SEVERITIES)}

MAX_SUBJECT_CHARS = 200
MAX_ACTION_CHARS = 2000
MAX_EVIDENCE_BYTES = 64 * 1024
DUPLICATE_PREFIX = "duplicate of "
RATE_LIMITED_PREFIX = "rate limited"


def severity_rank(severity: str) -> int:
    """0 for info up to 4 for critical; ValueError for anything else."""
    try:
        return _RANK[severity]
    except KeyError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {SEVERITIES}") from None


# --- the alert ----------------------------------------------------------------------------------


def _json_able(value: Any, path: str) -> Any:
    """A JSON-safe copy of `value`, or ValueError naming where it is not.

    numpy scalars (anything with `.item()` giving a plain number) become plain numbers and tuples
    become lists, so detectors can pass their results as they are. NaN and infinities are refused:
    an alert's evidence is what a person reads to decide, and "NaN" there hides a bug upstream.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"evidence{path} is {value!r}: numbers must be finite")
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"evidence{path} has a non-string key {k!r}")
            out[k] = _json_able(v, f"{path}[{k!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_able(v, f"{path}[{i}]") for i, v in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            plain = item()
        except (TypeError, ValueError):
            plain = value
        if plain is not value and isinstance(plain, bool | int | float | str):
            return _json_able(plain, path)
    raise ValueError(f"evidence{path} is a {type(value).__name__}, which is not JSON")


class Alert(BaseModel):
    """Something a person should look at: what, about whom, how bad, why, what to do, when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AlertKind
    subject: str = Field(min_length=1, max_length=MAX_SUBJECT_CHARS)
    """What the alert is about: a backend id, a model version, an experiment id."""
    severity: Severity
    evidence: dict[str, Any] = Field(default_factory=dict)
    """The numbers behind the alert (JSON-able, finite)."""
    recommended_action: str = Field(min_length=1, max_length=MAX_ACTION_CHARS)
    at: float
    """Unix seconds when the condition was observed."""

    @field_validator("subject", "recommended_action")
    @classmethod
    def _stripped(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be blank")
        return v

    @field_validator("subject")
    @classmethod
    def _one_line(cls, v: str) -> str:
        # Subjects come from telemetry (backend ids): a newline there could forge log lines.
        if any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("subject must not contain control characters (newlines, tabs, ...)")
        return v

    @field_validator("evidence", mode="before")
    @classmethod
    def _evidence(cls, v: Any) -> dict[str, Any]:
        if not isinstance(v, Mapping):
            raise ValueError("evidence must be a mapping of names to JSON-able values")
        clean = _json_able(v, "")
        size = len(json.dumps(clean, separators=(",", ":")).encode())
        if size > MAX_EVIDENCE_BYTES:
            raise ValueError(f"evidence is {size} bytes as JSON, over {MAX_EVIDENCE_BYTES}")
        return clean

    @field_validator("at")
    @classmethod
    def _time(cls, v: float) -> float:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"at must be finite unix seconds >= 0, got {v!r}")
        return v

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.subject)

    @property
    def dedup_key(self) -> str:
        """The (kind, subject) key as one string, as stored."""
        return dedup_key(self.kind, self.subject)


def dedup_key(kind: str, subject: str) -> str:
    return f"{kind}:{subject}"


# --- the gate -----------------------------------------------------------------------------------


class AlertPolicy(BaseModel):
    """How much one (kind, subject) may say. Defaults: merge repeats for 5 min, 3 alerts an hour."""

    model_config = ConfigDict(frozen=True)

    dedup_window_s: float = Field(300.0, gt=0, allow_inf_nan=False)
    rate_window_s: float = Field(3600.0, gt=0, allow_inf_nan=False)
    max_per_window: int = Field(3, ge=1)


@dataclass(frozen=True)
class GateDecision:
    """What to do with one alert. `reason` is what to store as its suppressed_reason."""

    action: GateAction
    escalation: bool = False
    related_id: str | None = None
    """For a duplicate: the alert it was merged into. Rate limited: the latest alert sent."""
    occurrences: int = 1
    """For a duplicate: the open alert's occurrence count including this one."""
    reason: str | None = None

    @property
    def suppressed(self) -> bool:
        return self.action != "notify"


@dataclass
class _Sent:
    alert_id: str
    severity: str
    at: float
    occurrences: int = 1


@dataclass
class _KeyState:
    sent: deque[_Sent] = field(default_factory=deque)
    latest_at: float = -math.inf


@dataclass(frozen=True)
class PastAlert:
    """A stored alert as `AlertGate.restore` needs it."""

    alert_id: str
    kind: str
    subject: str
    severity: str
    at: float
    suppressed: bool
    suppressed_reason: str | None = None
    duplicate_of: str | None = None
    """The alert a duplicate repeats; read from `suppressed_reason` when not given."""


def merged_into(reason: str | None) -> str | None:
    """The alert id a duplicate was merged into, from its stored reason; None otherwise."""
    if reason and reason.startswith(DUPLICATE_PREFIX):
        rest = reason[len(DUPLICATE_PREFIX) :].split()
        return rest[0] if rest else None
    return None


class AlertGate:
    """Per-(kind, subject) deduplication and rate limiting (see the module docstring).

    Use `decide` then, once the alert is stored, `record` with its id: a failed write then leaves
    the gate as it was. Memory is bounded by the alerts sent in the last window per key.
    """

    _SWEEP_EVERY = 1024

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._keys: dict[tuple[str, str], _KeyState] = {}
        self._records = 0

    @property
    def _horizon(self) -> float:
        return max(self.policy.dedup_window_s, self.policy.rate_window_s)

    def _prune(self, st: _KeyState, now: float) -> None:
        horizon = self._horizon
        while st.sent and now - st.sent[0].at >= horizon:
            st.sent.popleft()

    def decide(self, alert: Alert) -> GateDecision:
        """Send, merge or limit `alert`; changes nothing (see `record`)."""
        st = self._keys.get(alert.key)
        if st is None or not st.sent:
            return GateDecision("notify")
        now = max(alert.at, st.latest_at)
        p = self.policy
        live = [s for s in st.sent if now - s.at < self._horizon]
        for s in reversed(live):
            if s.severity == alert.severity and now - s.at < p.dedup_window_s:
                return GateDecision(
                    "duplicate",
                    related_id=s.alert_id,
                    occurrences=s.occurrences + 1,
                    reason=f"{DUPLICATE_PREFIX}{s.alert_id}",
                )
        in_window = [s for s in live if now - s.at < p.rate_window_s]
        if not in_window:
            return GateDecision("notify")
        ceiling = max(_RANK[s.severity] for s in in_window)
        if _RANK[alert.severity] > ceiling:
            return GateDecision("notify", escalation=True)
        if len(in_window) >= p.max_per_window:
            latest = in_window[-1].alert_id
            return GateDecision(
                "rate_limited",
                related_id=latest,
                reason=(
                    f"{RATE_LIMITED_PREFIX}: {len(in_window)} alerts for "
                    f"{alert.dedup_key} in the last {p.rate_window_s:g} s "
                    f"(max {p.max_per_window}); latest {latest}"
                ),
            )
        return GateDecision("notify")

    def record(self, alert: Alert, decision: GateDecision, alert_id: str) -> None:
        """Remember a stored alert so later ones are judged against it."""
        st = self._keys.setdefault(alert.key, _KeyState())
        now = max(alert.at, st.latest_at)
        st.latest_at = now
        if decision.action == "notify":
            st.sent.append(_Sent(alert_id, alert.severity, now))
        elif decision.action == "duplicate":
            for s in st.sent:
                if s.alert_id == decision.related_id:
                    s.occurrences += 1
                    break
        self._prune(st, now)
        self._records += 1
        if self._records % self._SWEEP_EVERY == 0:
            self.sweep(now)

    def sweep(self, now: float) -> None:
        """Forget keys with nothing sent within the longest window before `now`."""
        for key in list(self._keys):
            st = self._keys[key]
            self._prune(st, max(now, st.latest_at))
            if not st.sent:
                del self._keys[key]

    def occurrences(self, alert_id: str) -> int | None:
        """The occurrence count of a sent alert still in memory, else None."""
        for st in self._keys.values():
            for s in st.sent:
                if s.alert_id == alert_id:
                    return s.occurrences
        return None

    def restore(self, history: Iterable[PastAlert]) -> int:
        """Rebuild the gate from stored alerts (any order); returns how many were used.

        Feed it the alerts of the last `max(dedup_window_s, rate_window_s)` so a restarted
        process neither re-sends what it already sent nor forgets what it merged.
        """
        used = 0
        for past in sorted(history, key=lambda a: (a.at, a.alert_id)):
            key = (past.kind, past.subject)
            st = self._keys.setdefault(key, _KeyState())
            st.latest_at = max(st.latest_at, past.at)
            if not past.suppressed:
                if past.severity not in _RANK:
                    continue
                st.sent.append(_Sent(past.alert_id, past.severity, past.at))
                used += 1
            else:
                target = past.duplicate_of or merged_into(past.suppressed_reason)
                for s in st.sent:
                    if s.alert_id == target:
                        s.occurrences += 1
                        used += 1
                        break
        for st in self._keys.values():
            self._prune(st, st.latest_at)
        return used


# --- retries ------------------------------------------------------------------------------------


class RetryPolicy(BaseModel):
    """Delivery retries: `max_attempts` tries, exponential backoff with equal jitter, short timeout.

    With the defaults a delivery is tried for roughly 20 to 40 minutes before it is declared
    dead, which rides out a webhook's restart or a short outage.
    """

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(10, ge=1)
    base_s: float = Field(5.0, gt=0, allow_inf_nan=False)
    cap_s: float = Field(900.0, gt=0, allow_inf_nan=False)
    timeout_s: float = Field(2.0, gt=0, allow_inf_nan=False)
    """Per attempt: a webhook that never answers costs at most this (per HTTP phase)."""


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait after the `attempt`-th failure (1-based).

    Equal jitter: half of `min(cap, base * 2**(attempt-1))` is fixed and half is random, so
    retries from many alerts spread out yet never come back sooner than half the step.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    step = min(policy.cap_s, policy.base_s * 2.0 ** min(attempt - 1, 62))
    return step / 2.0 + rng.uniform(0.0, step / 2.0)


# --- webhook URLs are secrets -------------------------------------------------------------------


def redact_url(url: str) -> str:
    """Only scheme and host: Slack webhook URLs carry their secret in the path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<webhook>"
    scheme = parts.scheme or "http"
    return f"{scheme}://{host}{port}/…"


def scrub(text: str, url: str) -> str:
    """`text` with the URL, its path and its query replaced by the redacted form."""
    redacted = redact_url(url)
    out = text.replace(url, redacted)
    try:
        parts = urlsplit(url)
    except ValueError:
        return out
    for secret in (parts.path, parts.query, parts.password or "", parts.username or ""):
        if secret and len(secret) > 1:
            out = out.replace(secret, "/…")
    return out


# --- Slack-compatible payload -------------------------------------------------------------------

_EMOJI = {
    "info": ":information_source:",
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}
_KIND_LABEL = {
    "drift": "Drift",
    "anomaly": "Anomaly",
    "sla_risk": "SLA risk",
    "experiment_verdict": "Experiment verdict",
    "model_change": "Model change",
}
_HEADER_MAX = 150
_TEXT_MAX = 3000
_FIELD_MAX = 2000


def _mrkdwn(text: str) -> str:
    """Escape Slack's control characters: subjects and evidence are data, never markup.

    Without this a subject such as "<!channel>" would notify a whole channel.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def slack_payload(
    alert: Alert,
    *,
    alert_id: str | None = None,
    occurrences: int = 1,
    source: str = "Arcpoint",
) -> dict[str, Any]:
    """`{"text": ..., "blocks": [...]}` for a Slack incoming webhook (or anything compatible).

    `text` is the notification fallback; the blocks hold the same facts laid out. Everything taken
    from the alert is escaped and clipped to Slack's block limits.
    """
    label = _KIND_LABEL.get(alert.kind, alert.kind)
    sev = alert.severity.upper()
    title = _clip(f"{sev} {label}: {alert.subject}", _HEADER_MAX)
    repeat = f" (x{occurrences})" if occurrences > 1 else ""
    text = _clip(
        f"{_EMOJI[alert.severity]} *{_mrkdwn(title)}*{repeat}: {_mrkdwn(alert.recommended_action)}",
        _TEXT_MAX,
    )
    evidence = json.dumps(alert.evidence, indent=1, sort_keys=True).replace("```", "'''")
    fields = [
        f"*Kind*\n{label}",
        f"*Subject*\n{_mrkdwn(alert.subject)}",
        f"*Severity*\n{_EMOJI[alert.severity]} {sev}",
        f"*Observed*\n{iso_utc(alert.at)}",
    ]
    if occurrences > 1:
        fields.append(f"*Occurrences*\n{occurrences}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(_mrkdwn(title), _HEADER_MAX),
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": _clip(f, _FIELD_MAX)} for f in fields],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _clip(
                    f"*Recommended action*\n{_mrkdwn(alert.recommended_action)}", _TEXT_MAX
                ),
            },
        },
    ]
    if alert.evidence:
        body = _clip(_mrkdwn(evidence), _TEXT_MAX - 30)
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Evidence*\n```{body}```"}}
        )
    context = f"{_mrkdwn(source)} · {alert.kind}"
    if alert_id:
        context += f" · alert `{_mrkdwn(alert_id)}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": text, "blocks": blocks}
