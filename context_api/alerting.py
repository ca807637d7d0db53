"""The AlertService: every alert is stored, logged, and delivered to webhooks through an outbox.

Why an outbox: the monitoring loop must never wait on Slack. `emit` only decides (dedup and rate
limiting, `tools.alerts.AlertGate`), writes the alert to the store with one *pending* delivery
per webhook, and logs it; it makes no network call. `deliver_due(now)`, called by the loop or by
the background thread from `start_background`, posts the deliveries whose `next_attempt_at` has
come, each with a short timeout (2 s by default), and records every attempt: delivered, failed
(with `last_error` and a `next_attempt_at` after exponential backoff with jitter), or dead after
`max_attempts` (or at once on an error that retrying cannot fix, such as HTTP 404). A dead
delivery's alert stays stored and visible in `arcpoint alerts`.

Bounded cost per `deliver_due` call: after a timeout, connection error or 5xx on a channel, the
rest of that channel's due deliveries wait for the next call, so a webhook that never answers
costs the loop at most one timeout per channel per call. Two calls at once (loop and background
thread) do not both send: the second returns at once with `busy=True`.

Webhook URLs carry secrets (Slack's hold a token in the path): they are never logged, stored or
shown; logs, errors and reprs name the host only. That includes httpx's own INFO line per
request, which a filter on the "httpx" logger rewrites.

Occurrences: a duplicate is stored suppressed, naming the alert it repeats (`duplicate_of`);
the store counts them (`Store.alert_occurrences`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from context_api.store import Alert as StoredAlert
from context_api.store import AlertDelivery, Store
from tools.alerts import (
    Alert,
    AlertGate,
    AlertPolicy,
    GateAction,
    PastAlert,
    RetryPolicy,
    backoff_delay,
    redact_url,
    scrub,
    slack_payload,
)

__all__ = [
    "AlertService",
    "AlertView",
    "BackgroundDelivery",
    "Channel",
    "DeliveryError",
    "DeliveryReport",
    "Emitted",
    "WebhookChannel",
    "recent_alerts",
]

logger = logging.getLogger("arcpoint.alerts")

_LOG_LEVEL = {
    "info": logging.INFO,
    "low": logging.INFO,
    "medium": logging.WARNING,
    "high": logging.WARNING,
    "critical": logging.ERROR,
}
_MAX_ERROR_CHARS = 300


# --- channels -----------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A delivery attempt failed. The message is safe to log and store (no URL).

    `retryable`: whether trying again later can help. `channel_down`: the endpoint did not
    answer properly (timeout, connection error, 5xx), so the other due deliveries on it wait.
    `retry_after_s`: the server asked for this delay (HTTP 429/503 Retry-After).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        channel_down: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message[:_MAX_ERROR_CHARS])
        self.retryable = retryable
        self.channel_down = channel_down
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    """Where alerts are delivered. `send` raises `DeliveryError` on failure."""

    name: str

    def describe(self) -> str: ...
    def send(self, payload: Mapping[str, Any]) -> None: ...
    def close(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class _RedactWebhookUrls(logging.Filter):
    """Rewrites httpx's own log lines ("HTTP Request: POST <url> ...") to name the host only.

    httpx logs every request's full URL at INFO on the "httpx" logger, which would write a Slack
    token into any log that keeps INFO. Attached once to that logger; knows the live channels' URLs.
    """

    def __init__(self) -> None:
        super().__init__("arcpoint.webhook-redaction")
        self.urls: dict[int, str] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            urls = list(self.urls.values())
        if not urls:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging system's problem, not ours
            return True
        clean = message
        for url in urls:
            clean = scrub(clean, url)
        if clean != message:
            record.msg, record.args = clean, ()
        return True

    def register(self, key: int, url: str) -> None:
        with self._lock:
            self.urls[key] = url

    def unregister(self, key: int) -> None:
        with self._lock:
            self.urls.pop(key, None)


_HTTPX_REDACTION = _RedactWebhookUrls()
logging.getLogger("httpx").addFilter(_HTTPX_REDACTION)


class WebhookChannel:
    """POSTs Slack-compatible JSON to one URL over httpx, with a short per-attempt timeout.

    The URL is kept private: `repr`, `describe`, log lines and error messages show the host only.
    Pass `client` to share or mock an `httpx.Client`; the per-request timeout applies either way.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "webhook",
        timeout_s: float = 2.0,
        client: httpx.Client | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"webhook URL is not a URL ({redact_url(str(url))})") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"webhook URL must be http(s) with a host, got {redact_url(url)}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError("timeout_s must be finite and > 0")
        self.name = name
        self._url = url
        self.timeout = httpx.Timeout(timeout_s)
        self._owns_client = client is None
        self._client = client or httpx.Client(timeout=self.timeout, follow_redirects=False)
        _HTTPX_REDACTION.register(id(self), url)

    @property
    def host(self) -> str:
        return httpx.URL(self._url).host

    def describe(self) -> str:
        return f"{self.name} ({redact_url(self._url)})"

    def __repr__(self) -> str:
        return f"WebhookChannel(name={self.name!r}, host={self.host!r})"

    def _safe(self, text: str) -> str:
        return scrub(text, self._url)

    def send(self, payload: Mapping[str, Any]) -> None:
        try:
            response = self._client.post(self._url, json=dict(payload), timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise DeliveryError(
                f"no answer within {self.timeout.read:g} s ({type(exc).__name__})",
                channel_down=True,
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"{type(exc).__name__}: {self._safe(str(exc))}", channel_down=True
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        body = self._safe(" ".join(response.text.split())[:120])
        message = f"HTTP {status}" + (f": {body}" if body else "")
        if status == 429 or status == 408 or status >= 500:
            raise DeliveryError(
                message,
                channel_down=status != 429,
                retry_after_s=_retry_after(response.headers.get("retry-after")),
            )
        # 3xx and other 4xx (Slack: 400 invalid_payload, 403 invalid_token, 404 no_service,
        # 410 channel_is_archived): the same request will fail the same way.
        raise DeliveryError(message + " (not retried)", retryable=False)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
        _HTTPX_REDACTION.unregister(id(self))


# --- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    """What `emit` did with one alert. `alert_id` is the stored row, suppressed or not."""

    alert_id: str
    action: GateAction
    escalation: bool
    occurrences: int
    """For a duplicate: the open alert's count including this one; otherwise 1."""
    related_id: str | None
    """The alert a duplicate was merged into, or the latest one sent when rate limited."""
    reason: str | None
    channels: tuple[str, ...]
    """Channels with a pending delivery (none when suppressed)."""

    @property
    def suppressed(self) -> bool:
        return self.action != "notify"


@dataclass
class DeliveryReport:
    """What one `deliver_due` call did."""

    attempted: int = 0
    delivered: int = 0
    retrying: int = 0
    dead: int = 0
    deferred: int = 0
    """Due but not tried in this call, because their channel was failing."""
    busy: bool = False
    """Another `deliver_due` was running; this call did nothing."""
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AlertView:
    """A stored alert for display: the row, its deliveries, and its occurrence count."""

    alert: StoredAlert
    occurrences: int

    @property
    def delivery_state(self) -> str:
        """One word over all channels: suppressed, none, dead, pending, failed or delivered."""
        if self.alert.suppressed:
            return "suppressed"
        states = {d.state for d in self.alert.deliveries}
        for state in ("dead", "failed", "pending", "delivered"):
            if state in states:
                return state
        return "none"


# --- reading back ------------------------------------------------------------------------------


def recent_alerts(
    store: Store,
    *,
    kind: str | None = None,
    subject: str | None = None,
    min_severity: str | None = None,
    since: float | None = None,
    limit: int | None = 50,
    include_suppressed: bool = False,
) -> list[AlertView]:
    """Most recent first, each with its deliveries and occurrence count."""
    rows = store.list_alerts(
        kind=kind,
        subject=subject,
        min_severity=min_severity,
        since=since,
        limit=limit,
        include_suppressed=include_suppressed,
    )
    counts = store.alert_occurrences([a.alert_id for a in rows if not a.suppressed])
    return [AlertView(a, counts.get(a.alert_id, 1)) for a in rows]


def _past(a: StoredAlert) -> PastAlert:
    return PastAlert(
        alert_id=a.alert_id,
        kind=a.kind,
        subject=a.subject,
        severity=a.severity,
        at=a.created_at,
        suppressed=a.suppressed,
        suppressed_reason=a.suppressed_reason,
        duplicate_of=a.duplicate_of,
    )


def _as_alert(row: StoredAlert) -> Alert:
    return Alert(
        kind=row.kind,  # type: ignore[arg-type]
        subject=row.subject,
        severity=row.severity,
        evidence=row.evidence,
        recommended_action=row.recommended_action or "see evidence",
        at=row.created_at,
    )


def _clip_for_log(evidence: Mapping[str, Any], limit: int = 500) -> str:
    text = json.dumps(evidence, separators=(", ", ": "), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the service --------------------------------------------------------------------------------


class AlertService:
    """Emit alerts (gate, store, log) and deliver them to webhooks from the outbox.

    `clock` gives unix seconds (default `time.time`); alert times and `deliver_due(now)` must
    come from the same clock. `rng` drives backoff jitter (seed it for reproducible schedules).
    With `restore=True` the gate is rebuilt from the store's recent alerts, so a restarted process
    does not re-send what it sent a minute ago.
    """

    def __init__(
        self,
        store: Store,
        *,
        webhooks: Iterable[Channel] = (),
        policy: AlertPolicy | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        restore: bool = True,
        source: str = "Arcpoint",
    ) -> None:
        self.store = store
        self.policy = policy or AlertPolicy()
        self.retry = retry or RetryPolicy()
        self.source = source
        self._clock = clock
        self._rng = rng or random.Random()
        self._gate = AlertGate(self.policy)
        self._channels: dict[str, Channel] = {}
        for channel in webhooks:
            if channel.name in self._channels:
                raise ValueError(f"two channels named {channel.name!r}")
            self._channels[channel.name] = channel
        self._emit_lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._background: BackgroundDelivery | None = None
        if restore:
            self.restore()

    @classmethod
    def with_webhook(
        cls,
        store: Store,
        url: str | None,
        *,
        retry: RetryPolicy | None = None,
        client: httpx.Client | None = None,
        **kwargs: Any,
    ) -> AlertService:
        """A service with one webhook channel named "webhook" (none when `url` is None)."""
        retry = retry or RetryPolicy()
        hooks = [] if not url else [WebhookChannel(url, timeout_s=retry.timeout_s, client=client)]
        return cls(store, webhooks=hooks, retry=retry, **kwargs)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def restore(self, now: float | None = None) -> int:
        """Rebuild the dedup/rate-limit state from the store's alerts of the last window."""
        now = self._clock() if now is None else now
        horizon = max(self.policy.dedup_window_s, self.policy.rate_window_s)
        rows = self.store.list_alerts(since=now - horizon, include_suppressed=True, limit=None)
        with self._emit_lock:
            self._gate = AlertGate(self.policy)
            return self._gate.restore(_past(r) for r in rows)

    # -- emitting --

    def emit(
        self, alert: Alert | None = None, /, *, run_id: str | None = None, **fields: Any
    ) -> Emitted:
        """Gate, store and log one alert; queue its webhook deliveries. No network call.

        Pass an `Alert`, or its fields as keywords (`at` defaults to the clock). Invalid fields
        raise pydantic's ValidationError (a ValueError) naming them. If the store cannot be
        written the alert is logged in full at ERROR and the error is raised.
        """
        if alert is None:
            fields.setdefault("at", self._clock())
            alert = Alert(**fields)
        elif fields:
            raise TypeError("pass an Alert or its fields, not both")
        with self._emit_lock:
            decision = self._gate.decide(alert)
            channels = () if decision.suppressed else tuple(self._channels)
            try:
                stored = self.store.insert_alert(
                    alert.kind,
                    alert.subject,
                    alert.severity,
                    evidence=alert.evidence,
                    recommended_action=alert.recommended_action,
                    dedup_key=alert.dedup_key,
                    created_at=alert.at,
                    channels=channels,
                    suppressed=decision.suppressed,
                    suppressed_reason=decision.reason,
                    run_id=run_id,
                    duplicate_of=decision.related_id if decision.action == "duplicate" else None,
                )
            except Exception:
                logger.exception(
                    "alert NOT STORED (kept here in full): %s",
                    alert.model_dump_json(),
                )
                raise
            self._gate.record(alert, decision, stored.alert_id)
        emitted = Emitted(
            alert_id=stored.alert_id,
            action=decision.action,
            escalation=decision.escalation,
            occurrences=decision.occurrences,
            related_id=decision.related_id,
            reason=decision.reason,
            channels=channels,
        )
        self._log(alert, emitted)
        return emitted

    def _log(self, alert: Alert, emitted: Emitted) -> None:
        extra = {
            "alert_id": emitted.alert_id,
            "alert_kind": alert.kind,
            "alert_subject": alert.subject,
            "alert_severity": alert.severity,
            "alert_action": emitted.action,
        }
        if emitted.suppressed:
            # Suppressed alerts are stored; logging each would flood the log the gate protects.
            logger.debug(
                "alert %s suppressed (%s): %s %s %s",
                emitted.alert_id,
                emitted.reason,
                alert.severity,
                alert.kind,
                alert.subject,
                extra=extra,
            )
            return
        logger.log(
            _LOG_LEVEL[alert.severity],
            "alert %s %s%s %s %s: %s (evidence %s)",
            emitted.alert_id,
            "ESCALATED " if emitted.escalation else "",
            alert.severity.upper(),
            alert.kind,
            alert.subject,
            alert.recommended_action,
            _clip_for_log(alert.evidence),
            extra=extra,
        )

    def occurrences(self, alert_id: str) -> int:
        """1 + the duplicates merged into this alert so far."""
        with self._emit_lock:
            count = self._gate.occurrences(alert_id)
        if count is not None:
            return count
        row = self.store.get_alert(alert_id)
        if row is None:
            raise KeyError(alert_id)
        return self.store.alert_occurrences([alert_id])[alert_id]

    # -- delivering --

    def deliver_due(self, now: float | None = None, *, limit: int = 100) -> DeliveryReport:
        """Try each channel's due deliveries (at most `limit` per channel) and record the result.

        Never raises for a delivery failure or a store error (a locked database, say): it logs,
        notes it in `errors`, ends the round, and the deliveries stay due for the next call.
        Delivery is at least once: a send whose success could not be recorded is sent again.
        See the module docstring for the bound on how long one call can take.
        """
        report = DeliveryReport()
        if not self._deliver_lock.acquire(blocking=False):
            report.busy = True
            return report
        try:
            now = self._clock() if now is None else now
            for name, channel in self._channels.items():
                due = self.store.due_deliveries(now, channel=name, limit=limit)
                for i, delivery in enumerate(due):
                    down = self._attempt(channel, delivery, now, report)
                    if down:
                        report.deferred += len(due) - i - 1
                        break
        except sqlite3.Error as exc:
            logger.exception("alert delivery round stopped: the store failed")
            report.errors.append(f"store: {type(exc).__name__}: {exc}")
        finally:
            self._deliver_lock.release()
        return report

    def _attempt(
        self, channel: Channel, delivery: AlertDelivery, now: float, report: DeliveryReport
    ) -> bool:
        """One attempt; returns True when the channel looks down for the rest of this call."""
        attempts = delivery.attempts + 1
        report.attempted += 1
        where = channel.describe()
        try:
            row = self.store.get_alert(delivery.alert_id)
            if row is None:
                raise DeliveryError("alert row missing", retryable=False)
            try:
                payload = slack_payload(
                    _as_alert(row),
                    alert_id=row.alert_id,
                    occurrences=self.occurrences(row.alert_id),
                    source=self.source,
                )
            except ValueError as exc:
                raise DeliveryError(f"cannot format alert: {exc}", retryable=False) from None
            channel.send(payload)
        except DeliveryError as exc:
            failure = exc
        except Exception as exc:  # a bug in a channel must not stop the loop or lose the alert
            failure = DeliveryError(f"{type(exc).__name__} in channel {channel.name}")
            failure.channel_down = True
        else:
            self.store.update_delivery(
                delivery.alert_id, channel.name, state="delivered", attempts=attempts, at=now
            )
            report.delivered += 1
            logger.info("alert %s delivered to %s", delivery.alert_id, where)
            return False

        error, down = str(failure), failure.channel_down
        report.errors.append(f"{delivery.alert_id} {channel.name}: {error}")
        if not failure.retryable or attempts >= self.retry.max_attempts:
            self.store.update_delivery(
                delivery.alert_id,
                channel.name,
                state="dead",
                attempts=attempts,
                last_error=error,
                at=now,
            )
            report.dead += 1
            logger.error(
                "alert %s: delivery to %s is dead after %d attempt(s): %s "
                "(the alert stays stored; see `arcpoint alerts`)",
                delivery.alert_id,
                where,
                attempts,
                error,
            )
            return down
        delay = backoff_delay(attempts, self.retry, self._rng)
        if failure.retry_after_s is not None:
            delay = max(delay, min(failure.retry_after_s, self.retry.cap_s))
        self.store.update_delivery(
            delivery.alert_id,
            channel.name,
            state="failed",
            attempts=attempts,
            next_attempt_at=now + delay,
            last_error=error,
            at=now,
        )
        report.retrying += 1
        logger.warning(
            "alert %s: delivery to %s failed (attempt %d/%d): %s; retry in %.0f s",
            delivery.alert_id,
            where,
            attempts,
            self.retry.max_attempts,
            error,
            delay,
        )
        return down

    def requeue_dead(self, now: float | None = None) -> int:
        """Give every dead delivery on a configured channel a fresh set of attempts, due now."""
        now = self._clock() if now is None else now
        count = 0
        for row in self.store.list_alerts(include_suppressed=False, limit=None):
            for d in row.deliveries:
                if d.state == "dead" and d.channel in self._channels:
                    self.store.update_delivery(
                        d.alert_id,
                        d.channel,
                        state="pending",
                        attempts=0,
                        next_attempt_at=now,
                        last_error=f"requeued; was: {d.last_error}",
                        at=now,
                    )
                    count += 1
        return count

    # -- background delivery --

    def start_background(self, interval_s: float = 1.0) -> BackgroundDelivery:
        """Run `deliver_due` every `interval_s` on a daemon thread until `stop()` or `close()`."""
        if self._background is not None and self._background.alive:
            return self._background
        self._background = BackgroundDelivery(self, interval_s)
        return self._background

    def close(self) -> None:
        """Stop background delivery and close the HTTP clients this service's channels own."""
        if self._background is not None:
            self._background.stop()
            self._background = None
        for channel in self._channels.values():
            channel.close()

    def __enter__(self) -> AlertService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackgroundDelivery:
    """A daemon thread calling `service.deliver_due()` every `interval_s` seconds."""

    def __init__(self, service: AlertService, interval_s: float) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError("interval_s must be finite and > 0")
        self._service = service
        self._interval = interval_s
        self._stop = threading.Event()
        self.rounds = 0
        self._thread = threading.Thread(
            target=self._run, name="arcpoint-alert-delivery", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                self._service.deliver_due()
            except Exception:  # the store may be briefly locked: try again next round
                logger.exception("background alert delivery round failed")
            self.rounds += 1
            if self._stop.wait(self._interval):
                return

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
