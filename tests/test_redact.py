"""Secret scrubbing: what must go, and what must survive (token counts, ids, ordinary prose)."""

from __future__ import annotations

import copy
import logging

import pytest

from context_api.redact import (
    REDACTED,
    RedactingFilter,
    _maybe_secret,
    install_log_redaction,
    install_record_redaction,
    is_sensitive_key,
    redact,
    redact_text,
)

ANTHROPIC_KEY = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcdefAA"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"key is {ANTHROPIC_KEY} ok", ANTHROPIC_KEY),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        ('{"x-api-key": "plainsecretvalue123"}', "plainsecretvalue123"),
        ("x-api-key: plainsecretvalue123\r\n", "plainsecretvalue123"),
        ("curl -H 'X-Api-Key: abcdefgh12345678' https://api", "abcdefgh12345678"),
        ("sent with bearer abcdefghijklmnop1234", "abcdefghijklmnop1234"),
        (
            "posted to https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX now",
            "XXXXXXXXXXXXXXXX",
        ),
        ("https://discord.com/api/webhooks/123456/tokenpart-abc", "tokenpart-abc"),
        ("https://example.com/hook?token=s3cr3tvalue&x=1", "s3cr3tvalue"),
        ("https://example.com/cb?sig=abcdef123&user=ann", "abcdef123"),
        ("postgres://arcpoint:hunter2pass@db.internal:5432/x", "hunter2pass"),
        ("openai sk-proj-abcdefghijklmnopqrstuvwxyz123456", "abcdefghijklmnopqrstuvwxyz"),
        ("gh token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghij"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
        ("slack xoxb-123456789012-abcdefghijkl", "xoxb-123456789012"),
        ("password=correct-horse-battery", "correct-horse-battery"),
    ],
)
def test_secret_shapes_are_scrubbed_from_text(text: str, secret: str) -> None:
    assert _maybe_secret(text)  # the cheap pre-check lets every shape through
    out = redact_text(text)
    assert secret not in out
    assert REDACTED in out or "***" in out


@pytest.mark.parametrize(
    "text",
    [
        "backend-a p95 rose from 120 ms to 480 ms at 14:00; input_tokens=812 output_tokens=64",
        "trace 18eaad760cff3e39869c86d0 chose backend b (max_tokens: 1024)",
        "the key insight: load rose before latency; tokens used 5000",
        "https://docs.example.com/guide?page=2#section",
        "a basic question about bearer credentials and the secret sauce",
        "prompt hash 3f2a9c0d4e5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_keys_naming_credentials_lose_their_string_values() -> None:
    data = {
        "headers": {
            "Authorization": "whatever-format-1",
            "x-api-key": "whatever-format-2",
            "content-type": "application/json",
        },
        "api_key": "k1",
        "client_secret": "k2",
        "ARCPOINT_WEBHOOK_URL": "https://example.org/hook/abc",
        "metadata": {"user_token": "k3", "team": "search"},
        "usage": {"input_tokens": 812, "output_tokens": 64, "max_tokens": 1024},
        "dedup_key": "drift:backend-a",
        "token": None,
    }
    out = redact(data)
    assert out["headers"]["Authorization"] == REDACTED
    assert out["headers"]["x-api-key"] == REDACTED
    assert out["headers"]["content-type"] == "application/json"
    assert out["api_key"] == out["client_secret"] == REDACTED
    assert out["ARCPOINT_WEBHOOK_URL"] == REDACTED
    assert out["metadata"] == {"user_token": REDACTED, "team": "search"}
    assert out["usage"] == data["usage"]  # counts survive
    assert out["dedup_key"] == "drift:backend-a"
    assert out["token"] is None


def test_header_pairs_in_lists_are_scrubbed() -> None:
    headers = [["Authorization", "opaque-value-1"], ("X-API-Key", "opaque-value-2"), ["a", "b"]]
    out = redact(headers)
    assert out[0] == ["Authorization", REDACTED]
    assert out[1] == ("X-API-Key", REDACTED)
    assert out[2] == ["a", "b"]


def test_redact_does_not_mutate_its_input() -> None:
    data = {"api_key": "k", "nested": [{"text": f"uses {ANTHROPIC_KEY}"}]}
    before = copy.deepcopy(data)
    redact(data)
    assert data == before


def test_values_of_credential_env_vars_are_scrubbed_whatever_their_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "zz-opaque-VALUE-42")
    monkeypatch.setenv("SOME_SECRET", "another_opaque_value")
    monkeypatch.setenv("FEATURE_KEY", "on")  # too short to scrub everywhere
    out = redact({"note": "called with zz-opaque-VALUE-42 and another_opaque_value", "f": "on"})
    assert "zz-opaque-VALUE-42" not in out["note"]
    assert "another_opaque_value" not in out["note"]
    assert out["f"] == "on"
    monkeypatch.setenv("MY_SERVICE_TOKEN", "rotated-value-0001")  # the cache follows changes
    assert redact_text("rotated-value-0001") == REDACTED


def test_bytes_and_tuples_and_other_types() -> None:
    assert ANTHROPIC_KEY not in redact(ANTHROPIC_KEY.encode())
    assert redact((1, 2.5, None, True)) == (1, 2.5, None, True)


@pytest.mark.parametrize(
    ("name", "sensitive"),
    [
        ("Authorization", True),
        ("x-api-key", True),
        ("ANTHROPIC_API_KEY", True),
        ("refresh_token", True),
        ("password", True),
        ("input_tokens", False),
        ("max_tokens", False),
        ("dedup_key", False),
        ("backend", False),
    ],
)
def test_is_sensitive_key(name: str, sensitive: bool) -> None:
    assert is_sensitive_key(name) is sensitive


def test_log_filter_scrubs_message_args_and_traceback() -> None:
    records: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    logger = logging.getLogger("arcpoint.test.redact")
    logger.propagate = False
    handler = ListHandler()
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.warning("calling with key %s", ANTHROPIC_KEY)
        try:
            raise RuntimeError(f"401 for Authorization: Bearer {ANTHROPIC_KEY}")
        except RuntimeError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert ANTHROPIC_KEY not in text
    assert "calling with key [REDACTED]" in text
    assert "RuntimeError" in text  # the traceback is still there, scrubbed


def test_library_debug_logs_are_scrubbed_whatever_the_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The anthropic SDK logs whole request bodies at DEBUG from child loggers; the record
    factory installed on import scrubs them before any handler (here pytest's) sees them."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("anthropic._base_client").debug(
        "Request options: %s", {"json_data": {"messages": [{"content": f"key {ANTHROPIC_KEY}"}]}}
    )
    logging.getLogger("httpx2").info("POST https://hooks.slack.com/services/T0/B0/secretpath")
    logging.getLogger("myapp.other").info("unrelated record %s", "left as is")
    assert ANTHROPIC_KEY not in caplog.text and "secretpath" not in caplog.text
    assert "Request options" in caplog.text and "left as is" in caplog.text
    install_record_redaction(("myapp",))  # more names can be added
    logging.getLogger("myapp.other").info("now %s", ANTHROPIC_KEY)
    assert ANTHROPIC_KEY not in caplog.text
