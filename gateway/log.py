"""Structured logging shared by every hookline process, with redaction on every line.

JSON lines (docs/architecture.md#logs): ``timestamp`` (ISO 8601 UTC), ``level``, ``event``
and whatever context is bound. Lines from the standard library (uvicorn, aio-pika, warnings)
go through the same processors, so stdout never carries a non-JSON line or an unredacted value.

Redaction runs on every line of the hot path, so it is built to be cheap: key classification
is cached per key name and string values are only regex-scanned when a cheap substring test
says a match is possible.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from datetime import date, datetime, time
from typing import Any, Final, TextIO
from uuid import UUID

import orjson
import structlog

from gateway.errors import ConfigError

REDACTED: Final = "[redacted]"
LOG_LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FORMATS: Final = ("json", "console")

# Keys are normalized (lower case, "_" and "-" removed) so "AuthToken", "auth_token" and
# "X-Twilio-Signature" all hit the same rules. Substrings catch "acme_twilio_auth_token".
_SECRET_PARTS: Final = (
    "token", "secret", "password", "passwd", "authorization", "signature",
    "apikey", "credential", "cookie",
)  # fmt: skip
# Message bodies, DTMF digits (PINs) and speech transcripts are personal content, not secrets,
# but must never be logged either (docs/architecture.md#logs). Exact names: a "body" substring would
# also hide harmless keys such as "max_body_bytes".
_CONTENT_KEYS: Final = frozenset({
    "body", "messagebody", "smsbody", "mmsbody", "message", "messagetext", "text", "content",
    "digits", "speechresult", "unstablespeechresult", "transcriptiontext",
})  # fmt: skip
_PHONE_KEYS: Final = frozenset({
    "from", "to", "caller", "called", "number", "sender", "recipient", "msisdn", "fromnumber",
    "tonumber", "forwardedfrom", "calledvia", "callerid", "destination", "dest",
})  # fmt: skip
_PHONE_PARTS: Final = ("phone", "mobile", "msisdn")

_CHATTY_LIBRARIES: Final = ("aiormq", "aio_pika", "pamqp", "httpcore", "httpx", "hpack")
# A failed broker connection is reported once, in plain words, by the hookline code that
# connects (gateway.broker.failures); these client-library lines would say it again, worse.
_CONNECTION_NOISE: Final = {
    "aiormq.connection": ("error when creating transport",),
    "aio_pika.robust_connection": ("Connection to %s closed. Reconnecting",),
}


class _DropConnectionNoise(logging.Filter):
    """Drops a library logger's records whose message template starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


_PLAIN, _SECRET, _PHONE = 0, 1, 2
_KEY_CACHE: dict[str, int] = {}
# Nested payloads (e.g. a provider's raw form) may carry attacker-chosen key names: bound the
# cache so they cannot grow it without limit.
_KEY_CACHE_MAX: Final = 4096
_MAX_DEPTH: Final = 8

# "+" (or its URL encoding %2B) followed by 8 or more digits: E.164 allows 8-15, longer runs
# are masked too, erring on the side of privacy. "whatsapp:+1..." keeps its channel prefix.
_PHONE_RE: Final = re.compile(r"(?:\+|%2[bB])\d{4,}(\d{4})")
# The password runs to the LAST "@" before whitespace: an unescaped "/", "?", "#" or "@" in it
# must not end it early (a URL parser would read the rest as the path and leak it). An "@"
# further on (in a path or a vhost) masks too much, never too little.
_URL_PASSWORD_RE: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):\S*@")
# Phone numbers without "+" travel in query strings and form bodies (Kaleyra's legacy dlrurl
# sends mobile=919876543210); uvicorn's access log prints the query string.
_QUERY_RE: Final = re.compile(
    r"(?<![\w%])(from|to|caller|called|mobile|phone|msisdn|number|body|message|text|digits)"
    r"=([^&\s\"']*)",
    re.IGNORECASE,
)
_QUERY_CONTENT: Final = frozenset({"body", "message", "text", "digits"})
_BEARER_RE: Final = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_SCHEME_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:(?!//)")
_NON_DIGIT_RE: Final = re.compile(r"\D+")
_SAFE_SCALARS: Final = (int, float, bool, datetime, date, time, UUID)


def mask_phone(value: str) -> str:
    """Keep only the last 4 digits of a phone number: "+14155555309" -> "***5309".

    A channel prefix such as "whatsapp:" is kept. Values with 4 digits or fewer (short codes,
    alphanumeric sender ids, "client:alice") cannot identify a person and are returned as is.
    """
    match = _SCHEME_RE.match(value)
    prefix = match.group(0) if match else ""
    digits = _NON_DIGIT_RE.sub("", value[len(prefix) :])
    if len(digits) <= 4:
        return value
    return f"{prefix}***{digits[-4:]}"


def mask_url_password(value: str) -> str:
    """Replace the password of every URL in ``value``: "amqp://u:p@h" -> "amqp://u:***@h".

    The one masking rule for URLs in logs, error messages and reprs (scrub() applies it too).
    """
    if "://" not in value:
        return value
    return _URL_PASSWORD_RE.sub(r"\1:***@", value)


def _mask_query(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    if name.lower() in _QUERY_CONTENT:
        return f"{name}={REDACTED}" if value else match.group(0)
    return f"{name}={_mask_phone_digits(value)}"


def _mask_phone_digits(value: str) -> str:
    digits = _NON_DIGIT_RE.sub("", value)
    return value if len(digits) <= 4 else f"***{digits[-4:]}"


def scrub(text: str) -> str:
    """Mask phone numbers, URL passwords, bearer/basic credentials and query-string PII."""
    # Each regex only runs when a substring test says it could match: most strings skip all.
    if "+" in text or "%2" in text:
        text = _PHONE_RE.sub(r"***\1", text)
    if "://" in text:
        text = _URL_PASSWORD_RE.sub(r"\1:***@", text)
    if "=" in text:
        text = _QUERY_RE.sub(_mask_query, text)
    if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
        text = _BEARER_RE.sub(rf"\1 {REDACTED}", text)
    return text


def _classify(key: str) -> int:
    kind = _KEY_CACHE.get(key)
    if kind is not None:
        return kind
    norm = key.lower().replace("_", "").replace("-", "")
    if norm in _CONTENT_KEYS or any(part in norm for part in _SECRET_PARTS):
        kind = _SECRET
    elif norm in _PHONE_KEYS or any(part in norm for part in _PHONE_PARTS):
        kind = _PHONE
    else:
        kind = _PLAIN
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[key] = kind
    return kind


def _clean(value: object, kind: int, depth: int) -> object:
    """Redact one value; containers are copied, never mutated (they may be the caller's)."""
    if kind == _SECRET:
        return REDACTED
    if isinstance(value, str):
        return mask_phone(scrub(value)) if kind == _PHONE else scrub(value)
    if value is None or isinstance(value, _SAFE_SCALARS):
        if kind == _PHONE and isinstance(value, int) and not isinstance(value, bool):
            return mask_phone(str(value))
        return value
    if depth >= _MAX_DEPTH:
        return "[truncated]"
    if isinstance(value, Mapping):
        return {
            k: _clean(v, _classify(k) if isinstance(k, str) else kind, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, kind, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return _clean(value.decode("utf-8", "replace"), kind, depth)
    # Anything else would be rendered through repr()/str() (orjson would even serialize a
    # dataclass field by field): turn it into text here so the text gets scrubbed.
    text = str(value) if isinstance(value, BaseException) else repr(value)
    return _clean(text, kind, depth)


def redact(event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Redact secrets, message bodies, phone numbers and URL passwords from one log event.

    Mutates and returns ``event_dict`` (structlog hands every processor a fresh dict); nested
    containers are replaced by redacted copies.
    """
    for key, value in event_dict.items():
        kind = _classify(key)
        if kind == _PLAIN and type(value) is str:
            # The hot path: a plain key with a plain string value.
            cleaned: object = scrub(value)
        elif kind == _PLAIN and (value is None or type(value) in _SAFE_SCALARS):
            continue
        else:
            cleaned = _clean(value, kind, 0)
        if cleaned is not value:
            event_dict[key] = cleaned
    return event_dict


def redact_processor(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """``redact`` with structlog's processor signature."""
    return redact(event_dict)


def _dumps(obj: object, **kwargs: Any) -> str:
    # orjson is several times faster than json.dumps; structlog passes its repr() fallback as
    # ``default`` for objects orjson cannot encode.
    return orjson.dumps(obj, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()


class _BoundLogger(structlog.BoundLoggerBase):
    """The one wrapper class of every hookline logger; configure_logging gives it the level
    methods of ``structlog.make_filtering_bound_logger(level)``.

    Loggers are cached on first use (https://www.structlog.org/en/stable/performance.html):
    a module-level ``structlog.get_logger()`` proxy binds once and keeps that bound logger.
    What a cached logger holds is therefore made stable here - this class, the processors list
    (edited in place, as ``structlog.testing.capture_logs`` does) and one sink - and a later
    configure_logging changes them in place, so cached loggers follow a new stream or level.
    """


_LEVEL_METHODS: Final = frozenset(
    name
    for name, value in vars(structlog.make_filtering_bound_logger(logging.INFO)).items()
    if callable(value) and not name.startswith("__")
)


def _set_level(level: int) -> None:
    filtering = vars(structlog.make_filtering_bound_logger(level))
    for name in _LEVEL_METHODS:
        setattr(_BoundLogger, name, filtering[name])


class _Sink:
    """Writes rendered lines to the configured stream (``None``: sys.stdout at write time)."""

    __slots__ = ("_lock", "stream")

    def __init__(self) -> None:
        self.stream: TextIO | None = None
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        out = self.stream if self.stream is not None else sys.stdout
        with self._lock:
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


_SINK: Final = _Sink()
_PROCESSORS: Final[list[structlog.typing.Processor]] = []


def _sink_factory(*_args: object) -> _Sink:
    return _SINK


def _configure_structlog(
    processors: list[structlog.typing.Processor], level: int, stream: TextIO | None
) -> None:
    _PROCESSORS[:] = processors
    _set_level(level)
    _SINK.stream = stream
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=_BoundLogger,
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )


_HANDLER_NAME: Final = "hookline"
_state: tuple[str, str, TextIO] | None = None


def configure_logging(
    format: str = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the stdlib root logger to write redacted lines to ``stream``.

    Calling it again with the same arguments does nothing; with other arguments it replaces
    the previous configuration (never adds a second handler), so tests can point it elsewhere.
    """
    global _state
    if format not in LOG_FORMATS:
        raise ConfigError(f"log format: expected one of {', '.join(LOG_FORMATS)}, got {format!r}")
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level: expected one of {', '.join(LOG_LEVELS)}, got {level!r}")
    out = sys.stdout if stream is None else stream
    if _state == (format, level, out):
        return

    renderer: structlog.typing.Processor
    if format == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp")

    _configure_structlog(
        [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        LOG_LEVELS[level],
        out,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _drop_color_message,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    _remove_handler(root)
    root.addHandler(handler)
    root.setLevel(LOG_LEVELS[level])
    # uvicorn installs its own plain-text handlers; send its records to ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib_logger = logging.getLogger(name)
        lib_logger.handlers.clear()
        lib_logger.propagate = True
    # Client libraries log whole wire frames (message bodies, phone numbers) at debug level:
    # keep them at info or above whatever hookline's own level is.
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LOG_LEVELS[level], logging.INFO))
    for name, prefixes in _CONNECTION_NOISE.items():
        lib_logger = logging.getLogger(name)
        if not any(isinstance(f, _DropConnectionNoise) for f in lib_logger.filters):
            lib_logger.addFilter(_DropConnectionNoise(prefixes))
    logging.captureWarnings(True)
    _state = (format, level, out)


def _drop_color_message(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # uvicorn adds an ANSI-coloured copy of each message for its own console formatter.
    event_dict.pop("color_message", None)
    return event_dict


def reset_logging() -> None:
    """Undo ``configure_logging`` (for tests): structlog defaults, our root handler removed.

    Loggers cached meanwhile keep this module's sink, processors list and wrapper class:
    those are set back to structlog's defaults (every level, its default processors, stdout),
    and they stay the configured ones, so capture_logs keeps seeing cached loggers' lines."""
    global _state
    structlog.reset_defaults()
    _configure_structlog(list(structlog.get_config()["processors"]), logging.NOTSET, None)
    _remove_handler(logging.getLogger())
    logging.getLogger().setLevel(logging.WARNING)  # the stdlib default
    logging.captureWarnings(False)
    _state = None


def _remove_handler(root: logging.Logger) -> None:
    for existing in list(root.handlers):
        if existing.get_name() == _HANDLER_NAME:
            root.removeHandler(existing)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
