"""Secret scrubbing for traces and logs: API keys and credentials never leave the process.

Traces are kept forever and read by auditors, and logs end up in many places, so both go through
`redact` first. It works on three levels, because a secret can arrive in any of these shapes:

1. **By name**: in a mapping, the string value of a key that names a credential (`authorization`,
   `x-api-key`, `api_key`, `token`, `secret`, `password`, `cookie`, `webhook_url`, ... and any
   key ending in `_api_key`, `_token`, `_secret`, `_password`) becomes `[REDACTED]`. Numbers are
   kept, so token *counts* (`input_tokens`, `max_tokens`) survive. A `[name, value]` pair in a
   list (headers as pairs) is treated the same way.
2. **By shape**, inside any string: Anthropic keys (`sk-ant-...`) and other well-known key
   formats (OpenAI-style `sk-...`, GitHub, Slack, AWS access key ids, Google API keys),
   `Bearer`/`Basic` credentials, `Authorization:` / `x-api-key:` header lines, webhook URLs whose
   path is the secret (Slack, Discord, Teams, Zapier: only scheme and host are kept), passwords in
   URLs (`https://user:pw@host`) and credential query parameters (`?token=...&sig=...`).
3. **By value**: the value of every environment variable whose name contains KEY, TOKEN, SECRET,
   PASSWORD, CREDENTIAL or WEBHOOK (8 characters or more, so short flags are not scrubbed from
   all text) is replaced wherever it appears, whatever its shape. The environment is re-read when
   it changes, so a key set after import is still caught.

`redact` returns a new object and never mutates its input. For logs: `install_record_redaction`
scrubs every record the HTTP and LLM libraries create (the anthropic SDK logs whole request
bodies at DEBUG); it runs when this module is first imported. `RedactingFilter` applies the same
scrubbing to any handler; `install_log_redaction` attaches it to a logger's handlers (the root
logger's by default), for an application that wants all of its own logs scrubbed as well.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

__all__ = [
    "LIBRARY_LOGGERS",
    "REDACTED",
    "RedactingFilter",
    "install_log_redaction",
    "install_record_redaction",
    "is_sensitive_key",
    "redact",
    "redact_text",
]

REDACTED = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"""^(?:
        authorization | proxy[-_]?authorization | x[-_]?api[-_]?key | api[-_]?key | apikey
      | x[-_]?auth[-_]?token | auth | auth[-_]?token | access[-_]?token | refresh[-_]?token
      | id[-_]?token | session[-_]?token | bearer | token | secret | client[-_]?secret
      | password | passwd | pwd | cookie | set[-_]?cookie | private[-_]?key | secret[-_]?key
      | access[-_]?key | signing[-_]?key | webhook | webhook[-_]?url | credentials?
      | anthropic[-_]?api[-_]?key | arcpoint[-_]?anthropic[-_]?api[-_]?key
    )$
    | (?:[-_](?:api[-_]?key|apikey|token|secret|password|passwd|private[-_]?key|secret[-_]?key
              |access[-_]?key|credentials?|webhook[-_]?url))$
    """,
    re.IGNORECASE | re.VERBOSE,
)

_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|WEBHOOK", re.IGNORECASE)
_MIN_ENV_SECRET = 8

# (pattern, replacement) applied in order to every string.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Well-known key formats.
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{6,}"), REDACTED),
    (re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), REDACTED),
    # Webhook URLs whose path is the secret: keep scheme and host.
    (
        re.compile(
            r"(https?://(?:hooks\.slack\.com|(?:[a-z0-9-]+\.)?discord(?:app)?\.com"
            r"|[a-z0-9-]+\.webhook\.office\.com|outlook\.office(?:365)?\.com"
            r"|hooks\.zapier\.com))(/[^\s\"'<>]*)",
            re.IGNORECASE,
        ),
        r"\1/" + REDACTED,
    ),
    # Passwords in URLs.
    (re.compile(r"(\b[a-z][a-z0-9+.\-]*://[^/\s:@\"']+:)[^@\s/\"']+@", re.IGNORECASE), r"\1***@"),
    # Credential query parameters.
    (
        re.compile(
            r"([?&](?:api[-_]?key|apikey|key|token|access[-_]?token|auth|secret|sig|signature"
            r"|password|code)=)[^&#\s\"']+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # Header lines and key=value pairs naming a credential (JSON-ish quotes allowed).
    (
        re.compile(
            r"((?:\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]?key|\bx-auth-token"
            r"|\baccess[-_]?token|\bclient[-_]?secret|\bpassword|\bsecret)[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token)\s+)?[^\s\"',;}&]+",
            re.IGNORECASE,
        ),
        r"\1" + REDACTED,
    ),
    # Free-standing bearer credentials (with a digit or symbol, so "bearer credentials" in
    # prose survives; Basic credentials are only taken after an Authorization header).
    (
        re.compile(
            r"\b(bearer)\s+(?=[A-Za-z]*[0-9\-._~+/=])[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE
        ),
        r"\1 " + REDACTED,
    ),
)

# A cheap test, on the lowercased text, that some pattern *could* apply: most strings hold no
# secret, and a few substring tests cost a fraction of a dozen regex substitutions. It must stay
# a superset of `_PATTERNS` (tests/test_redact.py checks every example against it).
_MIN_SECRET_TEXT = 6
"""No pattern matches fewer characters (the shortest is a query parameter like `?sig=x`)."""


def _maybe_secret(text: str) -> bool:
    low = text.lower()
    return (
        "=" in low
        or "://" in low
        or "sk-" in low
        or "gh" in low
        or "xox" in low
        or "akia" in low
        or "asia" in low
        or "aiza" in low
        or "bearer" in low
        or "token" in low
        or "secret" in low
        or "passw" in low
        or "auth" in low
        or "api" in low
    )


_env_cache: tuple[Any, re.Pattern[str] | None] = (None, None)


def _environ_snapshot() -> Any:
    data = getattr(os.environ, "_data", None)  # CPython: the raw mapping, no decoding
    return tuple(data.items()) if isinstance(data, dict) else tuple(os.environ.items())


def _env_secrets_pattern() -> re.Pattern[str] | None:
    """One regex matching the values of credential-named environment variables.

    Rebuilt only when the environment changed since the last call (compared as a snapshot of
    its items, which costs about a microsecond), so a key set at any time is caught.
    """
    global _env_cache
    snapshot = _environ_snapshot()
    cached_snapshot, cached = _env_cache
    if snapshot == cached_snapshot:
        return cached
    values = sorted(
        {
            value
            for name, value in os.environ.items()
            if _ENV_NAME.search(name) and len(value) >= _MIN_ENV_SECRET
        },
        key=lambda v: (-len(v), v),  # longest first, so a value containing another wins
    )
    pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None
    _env_cache = (snapshot, pattern)
    return pattern


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    """Whether a mapping key or header name names a credential."""
    return bool(_SENSITIVE_KEY.search(name.strip()))


def redact_text(text: str) -> str:
    """`text` with every secret it contains replaced by `[REDACTED]`."""
    return _redact_text(text, _env_secrets_pattern())


def _redact_text(text: str, env: re.Pattern[str] | None) -> str:
    if env is not None and len(text) >= _MIN_ENV_SECRET:
        text = env.sub(REDACTED, text)
    if len(text) < _MIN_SECRET_TEXT or not _maybe_secret(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(obj: Any) -> Any:
    """A copy of `obj` (JSON-like: dicts, lists, tuples, strings, numbers) with secrets removed.

    Other objects are returned unchanged except `bytes`, which are decoded (lossily) and scrubbed:
    serialise pydantic models first (`model_dump(mode="json")`).
    """
    return _redact(obj, _env_secrets_pattern())


_SCALARS = (int, float, bool, type(None))


def _redact(obj: Any, env: re.Pattern[str] | None) -> Any:
    kind = type(obj)
    if kind is str:
        return _redact_text(obj, env)
    if kind in _SCALARS:
        return obj
    if kind is dict or isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if (
                (type(value) is str or isinstance(value, bytes))
                and isinstance(key, str)
                and is_sensitive_key(key)
            ):
                out[key] = REDACTED if value else value
            else:
                out[key] = _redact(value, env)
        return out
    if kind is list or kind is tuple or isinstance(obj, list | tuple):
        if (
            len(obj) == 2
            and isinstance(obj[0], str)
            and isinstance(obj[1], str)
            and obj[1]
            and is_sensitive_key(obj[0])
        ):
            pair = [obj[0], REDACTED]
            return pair if isinstance(obj, list) else tuple(pair)
        items = [_redact(item, env) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, str):  # a str subclass
        return _redact_text(str(obj), env)
    if isinstance(obj, bytes | bytearray):
        return _redact_text(bytes(obj).decode("utf-8", "replace"), env)
    return obj


def _scrub_record(record: logging.LogRecord, formatter: logging.Formatter) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep what we have, scrubbed
        message = f"{record.msg!r} % {record.args!r}"
    record.msg = redact_text(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from the message, its arguments and tracebacks.

    Attach it to *handlers* (`install_log_redaction`): a filter on a logger does not see records
    propagated from its child loggers, a filter on a handler sees every record it emits.
    """

    def __init__(self) -> None:
        super().__init__("arcpoint.redaction")
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        _scrub_record(record, self._formatter)
        return True


LIBRARY_LOGGERS = (
    "anthropic",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore2",
    "langgraph",
    "langchain",
)
"""Libraries that log request bodies or URLs at DEBUG (the anthropic SDK logs every request's
messages, which can quote tool results holding a secret)."""

_scrubbed_prefixes: tuple[str, ...] = ()
_factory_installed = False
_factory_lock = threading.Lock()
_record_formatter = logging.Formatter()


def install_record_redaction(loggers: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Scrub every log record created by these loggers (and their children) the moment it is
    created, whichever handlers later see it (idempotent; more names can be added later).

    Done with a log-record factory because the libraries log from many child loggers created
    on import, where filters on a parent logger would never run. Records of other loggers are
    untouched; a scrubbed record costs one `redact_text` of its message, and only records at an
    enabled level are ever created.
    """
    global _scrubbed_prefixes, _factory_installed
    with _factory_lock:
        _scrubbed_prefixes = tuple(sorted(set(_scrubbed_prefixes) | set(loggers)))
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            name = record.name
            for prefix in _scrubbed_prefixes:
                if name == prefix or name.startswith(prefix + "."):
                    _scrub_record(record, _record_formatter)
                    break
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def install_log_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach one `RedactingFilter` to every handler of `logger` (root by default); idempotent."""
    target = logger if logger is not None else logging.getLogger()
    existing = next(
        (f for h in target.handlers for f in h.filters if isinstance(f, RedactingFilter)),
        None,
    )
    flt = existing or RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt


# Importing this module (the trace store and the agents do) keeps the HTTP and LLM libraries'
# own logs free of secrets from then on.
install_record_redaction()
