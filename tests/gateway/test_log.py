"""Structured logging: one JSON object per line, stdlib included, with redaction."""

from __future__ import annotations

import io
import logging
import string
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.log import (
    REDACTED,
    configure_logging,
    mask_phone,
    mask_url_password,
    redact,
    reset_logging,
)
from gateway.secrets import Secret

PHONE = "+14155555309"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave logging as we found it for the rest of the suite."""
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


@pytest.fixture
def stream() -> io.StringIO:
    """A JSON log configured at debug level, writing into a StringIO."""
    out = io.StringIO()
    configure_logging("json", "debug", out)
    return out


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    """Every line written so far, each parsed as one JSON object."""
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def only_line(out: io.StringIO) -> dict[str, Any]:
    """The single line written so far."""
    (line,) = lines(out)
    return line


# --- line format -------------------------------------------------------------------------------


def test_lines_are_json_with_utc_timestamp_level_and_event(stream: io.StringIO) -> None:
    """Each structlog call writes one JSON object with timestamp, level and event."""
    log = structlog.get_logger()
    log.info("callback_received", tenant="acme", latency_ms=1.5)
    log.warning("callback_rejected", reason="signature_invalid")
    first, second = lines(stream)
    assert first["event"] == "callback_received"
    assert first["level"] == "info"
    assert first["tenant"] == "acme" and first["latency_ms"] == 1.5
    assert second["level"] == "warning"
    stamp = datetime.fromisoformat(first["timestamp"])
    assert first["timestamp"].endswith("Z")
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_context_variables_are_merged(stream: io.StringIO) -> None:
    """Values bound with bind_contextvars (request_id, tenant) appear on every line."""
    structlog.contextvars.bind_contextvars(request_id="req-1", tenant="acme")
    structlog.get_logger().info("event_published", event_id="ev-1")
    line = only_line(stream)
    assert (line["request_id"], line["tenant"], line["event_id"]) == ("req-1", "acme", "ev-1")


def test_level_filters_lower_levels() -> None:
    """At level warning, info and debug lines are dropped, for structlog and stdlib alike."""
    out = io.StringIO()
    configure_logging("json", "warning", out)
    structlog.get_logger().info("dropped")
    logging.getLogger("aio_pika").info("dropped too")
    structlog.get_logger().error("kept")
    assert [line["event"] for line in lines(out)] == ["kept"]


def test_exceptions_are_rendered_and_scrubbed(stream: io.StringIO) -> None:
    """log.exception adds the traceback as a string, with phone numbers masked."""
    try:
        raise ValueError(f"cannot route {PHONE}")
    except ValueError:
        structlog.get_logger().exception("routing_failed")
    line = only_line(stream)
    assert line["level"] == "error"
    assert "ValueError: cannot route ***5309" in line["exception"]
    assert PHONE not in stream.getvalue()


def test_stdlib_logging_comes_out_as_json(stream: io.StringIO) -> None:
    """uvicorn/aio-pika records are JSON lines with logger name, level and redaction."""
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/1.1" %d',
        "10.0.0.9:5000",
        "GET",
        "/kaleyra/acme/sms/status?sid=x&mobile=919876543210&status=DELIVRD",
        200,
    )
    logging.getLogger("aio_pika.robust_connection").warning(
        "Connection to amqp://hook:s3cret@rabbit/ lost"
    )
    access, pika = lines(stream)
    assert access["logger"] == "uvicorn.access"
    assert access["level"] == "info"
    assert "mobile=***3210&status=DELIVRD" in access["event"]
    assert access["timestamp"].endswith("Z")
    assert pika["level"] == "warning"
    assert pika["event"] == "Connection to amqp://hook:***@rabbit/ lost"
    assert "919876543210" not in stream.getvalue() and "s3cret" not in stream.getvalue()


def test_stdlib_exceptions_and_warnings_are_json(stream: io.StringIO) -> None:
    """logger.exception and warnings.warn also produce single JSON lines."""
    try:
        raise RuntimeError("broker gone")
    except RuntimeError:
        logging.getLogger("gateway.test").exception("publish failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    failure, warning = lines(stream)
    assert failure["event"] == "publish failed"
    assert "RuntimeError: broker gone" in failure["exception"]
    assert warning["logger"] == "py.warnings" and "deprecated thing" in warning["event"]


def test_uvicorn_handlers_are_replaced_by_propagation() -> None:
    """uvicorn's own plain-text handlers are removed so its lines reach our JSON handler."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn_error.propagate = False
    configure_logging("json", "info", io.StringIO())
    assert uvicorn_error.handlers == [] and uvicorn_error.propagate is True


def test_configure_is_idempotent_and_reconfigurable() -> None:
    """Repeated calls never add a second handler; new arguments replace the old setup."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", first)
    configure_logging("json", "info", first)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "hookline"]
    assert len(ours) == 1
    logging.getLogger("x").info("once")
    assert len(lines(first)) == 1
    configure_logging("json", "info", second)
    structlog.get_logger().info("moved")
    logging.getLogger("x").info("moved too")
    assert len(lines(first)) == 1
    assert [line["event"] for line in lines(second)] == ["moved", "moved too"]


def test_module_level_logger_follows_reconfiguration() -> None:
    """A logger created before configure_logging writes where the latest call says."""
    early = structlog.get_logger("gateway.early")
    out = io.StringIO()
    configure_logging("json", "info", out)
    early.info("late_line")
    assert only_line(out)["event"] == "late_line"


def test_console_format_is_human_readable_and_redacted() -> None:
    """The console renderer prints key=value text, still redacted."""
    out = io.StringIO()
    configure_logging("console", "info", out)
    structlog.get_logger().info("call_started", caller=PHONE, auth_token="tok-123456")
    text = out.getvalue()
    assert "call_started" in text and "***5309" in text
    assert PHONE not in text and "tok-123456" not in text
    assert not text.startswith("{")


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "trace"), ("json", "INFO")])
def test_invalid_format_or_level_is_a_config_error(fmt: str, level: str) -> None:
    """configure_logging rejects unknown formats and levels (Settings normalizes case)."""
    with pytest.raises(ConfigError, match=r"log (format|level): expected one of"):
        configure_logging(fmt, level, io.StringIO())


# --- redaction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "auth_token", "previous_auth_token", "callback_secret", "password", "Authorization",
        "X-Twilio-Signature", "signature", "api_key", "token", "Body", "body", "message_body",
        "message", "SpeechResult", "Digits", "cookie",
    ],
)  # fmt: skip
def test_secret_and_content_keys_are_redacted(key: str) -> None:
    """Values under secret-looking or message-content keys become [redacted]."""
    assert redact({"event": "x", key: "value-123"})[key] == REDACTED


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("From", PHONE, "***5309"),
        ("to", "whatsapp:+14155555309", "whatsapp:***5309"),
        ("caller", "+442071838750", "***8750"),
        ("Called", "+919876543210", "***3210"),
        ("mobile", "919876543210", "***3210"),
        ("customer_phone", "(415) 555-5309", "***5309"),
        ("msisdn", 919876543210, "***3210"),
        ("number", "+1 415 555 5309", "***5309"),
        ("to", "client:alice", "client:alice"),
        ("from", "ACME", "ACME"),
        ("to", "12345", "***2345"),
    ],
)
def test_phone_keys_are_masked_to_last_four_digits(key: str, value: object, expected: str) -> None:
    """Values under phone-like keys keep only their last 4 digits (and a channel prefix)."""
    assert redact({key: value})[key] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"calling {PHONE} now", "calling ***5309 now"),
        ("whatsapp:+14155555309 replied", "whatsapp:***5309 replied"),
        ("From=%2B14155555309&To=%2b442071838750", "From=***5309&To=***8750"),
        ("sid=SM1&mobile=919876543210&status=DELIVRD", "sid=SM1&mobile=***3210&status=DELIVRD"),
        ("Body=Hello+there&From=x", f"Body={REDACTED}&From=x"),
        ("amqp://hook:pa55@rabbit:5672/vh", "amqp://hook:***@rabbit:5672/vh"),
        ("postgresql://u:p@ss@db/x", "postgresql://u:***@db/x"),
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {REDACTED}"),
        ("basic dXNlcjpwYXNz", f"basic {REDACTED}"),
        ("count=3 retries=2", "count=3 retries=2"),
        ("2026-11-23T08:00:00+00:00", "2026-11-23T08:00:00+00:00"),
    ],
)
def test_strings_are_scrubbed_anywhere(text: str, expected: str) -> None:
    """Phone numbers, query PII, URL passwords and bearer credentials are masked in any string."""
    assert redact({"event": text})["event"] == expected


def test_nested_payloads_are_redacted_without_mutating_them() -> None:
    """A raw provider payload is redacted in depth; the caller's dict is left untouched."""
    raw = {"Body": "meet at 5", "From": PHONE, "Media": [{"url": "https://u:pw@x/y"}], "n": 3}
    event = redact({"event": "message_received", "raw": raw, "tags": (PHONE, b"To=%2B14155555309")})
    assert event["raw"] == {
        "Body": REDACTED,
        "From": "***5309",
        "Media": [{"url": "https://u:***@x/y"}],
        "n": 3,
    }
    assert event["tags"] == ["***5309", "To=***5309"]
    assert raw["Body"] == "meet at 5" and raw["From"] == PHONE


def test_harmless_values_pass_unchanged() -> None:
    """The usual hot-path fields are not altered."""
    event = {
        "event": "event_published", "tenant": "acme", "provider": "twilio",
        "kind": "message.status", "sid": "SM" + "a" * 32, "event_id": "01HXYZ", "outcome": "ok",
        "latency_ms": 2.5, "max_body_bytes": 65536, "sequence_number": 3, "ok": True, "x": None,
    }  # fmt: skip
    assert redact(dict(event)) == event


def test_objects_are_rendered_through_redaction() -> None:
    """Arbitrary objects and exceptions are turned into scrubbed text; Secrets stay masked."""
    event = redact({"error": ValueError(f"bad {PHONE}"), "thing": {PHONE}, "s": Secret("x" * 9)})
    assert event["error"] == "bad ***5309"
    assert event["thing"] == ["***5309"]
    assert event["s"] == "Secret('**********')"


def test_deep_nesting_is_truncated() -> None:
    """Pathologically deep structures are cut off instead of recursing forever."""
    deep: dict[str, object] = {"leaf": PHONE}
    for _ in range(20):
        deep = {"d": deep}
    assert "[truncated]" in orjson.dumps(redact({"x": deep})).decode()


def test_mask_phone_and_url_password_helpers() -> None:
    """The exported helpers mask as documented."""
    assert mask_phone(PHONE) == "***5309"
    assert mask_phone("whatsapp:+14155555309") == "whatsapp:***5309"
    assert mask_phone("1234") == "1234"
    assert mask_url_password("amqp://guest:guest@localhost/") == "amqp://guest:***@localhost/"
    assert mask_url_password("memory://") == "memory://"
    assert mask_url_password("https://example.com/a:b") == "https://example.com/a:b"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:***@127.0.0.1:5672/"),
        ("amqps://svc:p%40ss@mq.example:5671/prod", "amqps://svc:***@mq.example:5671/prod"),
        ("amqp://u:pa/ss#x@h/", "amqp://u:***@h/"),  # unescaped / and # in the password
        ("postgresql://u:p?s/s@ss@db/x", "postgresql://u:***@db/x"),
        ("amqp://u@h/", "amqp://u@h/"),
        ("amqp://h:5672/", "amqp://h:5672/"),
        ("memory://", "memory://"),
        ("got amqp://a:x/y@h1/ and amqp://b:z@h2/", "got amqp://a:***@h1/ and amqp://b:***@h2/"),
    ],
)
def test_mask_url_password_is_the_one_rule(url: str, masked: str) -> None:
    """One rule masks every URL password, even one a URL parser would misread, keeping the rest."""
    assert mask_url_password(url) == masked


# --- properties --------------------------------------------------------------------------------

E164 = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)
FILLER = st.text(
    alphabet=st.characters(blacklist_categories=("Nd", "Cs"), blacklist_characters="+%"),
    max_size=20,
)
KEYS = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)
SECRET_KEYS = st.sampled_from(
    ["auth_token", "previous_auth_token", "callback_secret", "password", "authorization",
     "x_twilio_signature", "acme_twilio_auth_token", "body", "message_body", "secret"]
)  # fmt: skip
TOKENS = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=8, max_size=40)


@given(number=E164, before=FILLER, after=FILLER, key=KEYS, whatsapp=st.booleans())
def test_no_e164_number_survives_anywhere(
    number: str, before: str, after: str, key: str, whatsapp: bool
) -> None:
    """A random E.164 number inside any string under any key never reaches the output."""
    value = f"{before}{'whatsapp:' if whatsapp else ''}{number}{after}"
    event = redact({"event": "x", key: value, "nested": {key: [value]}})
    rendered = orjson.dumps(event).decode()
    assert number[1:] not in rendered


@given(key=SECRET_KEYS, token=TOKENS, upper=st.booleans())
def test_no_token_survives_under_a_secret_key(key: str, token: str, upper: bool) -> None:
    """A random token under a secret key, at top level or nested, is always redacted."""
    name = key.upper() if upper else key
    event = redact({"event": "x", name: token, "raw": {name: token, "list": [{name: token}]}})
    assert event[name] == REDACTED
    assert event["raw"][name] == REDACTED
    assert all(token not in leaf for leaf in string_leaves(event))


def string_leaves(value: object) -> Iterator[str]:
    """Every string value inside nested dicts and lists (keys excluded)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def test_client_library_debug_frames_are_not_logged() -> None:
    """At debug level, aiormq/httpx wire dumps (bodies, numbers) still stay out of the logs."""
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    logging.getLogger("aiormq.connection").debug("Prepare to send frame %s", PHONE)
    logging.getLogger("httpx").debug("request body %s", PHONE)
    logging.getLogger("aiormq.connection").warning("connection reset")
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["connection reset"]


def test_cached_logger_follows_reconfiguration_and_captures() -> None:
    """A module-level logger is cached on first use (structlog's own caching) and still
    writes where the latest configuration says, at its level; capture_logs sees its lines,
    also after reset_logging."""
    cached = structlog.get_logger("hookline.test")
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    cached.info("first_line", n=1)
    assert "bind" in vars(cached), "the proxy did not cache its bound logger"
    configure_logging("json", "warning", stream=second)
    cached.info("filtered_line")
    cached.warning("second_line", phone="+14155550100")
    with structlog.testing.capture_logs() as captured:
        cached.warning("captured_line")
    configure_logging("json", "debug", stream=first)
    cached.debug("back_to_first")
    reset_logging()
    with structlog.testing.capture_logs() as after_reset:
        cached.debug("after_reset")
    assert [orjson.loads(line)["event"] for line in first.getvalue().splitlines()] == [
        "first_line",
        "back_to_first",
    ]
    [line] = [orjson.loads(line) for line in second.getvalue().splitlines()]
    assert (line["event"], line["phone"]) == ("second_line", "***0100")
    assert [entry["event"] for entry in captured] == ["captured_line"]
    assert [entry["event"] for entry in after_reset] == ["after_reset"]
