"""The raw callback as providers sent it, and strict parsers for its payload.

Pure code: the HTTP layer builds a ``RawRequest`` (public URL rebuilt, headers lower-cased,
body read under the size limit) and everything downstream is a function of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, unquote_to_bytes

import orjson

from gateway.errors import FieldOutOfRange, MalformedPayload, UnsupportedMediaType

FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE: Final = "application/json"

# Parameters by name, each with its values in arrival order (repeated keys keep every value).
Params = dict[str, list[str]]

# Twilio callbacks carry a few dozen parameters; a body of 64 KiB cannot hold more than this
# many meaningful ones, and the cap keeps a hostile body from building a huge dict.
MAX_FIELDS: Final = 1000

#: The largest value accepted in each numeric field of a normalized event. Generous beyond
#: what providers send (a Twilio body is at most 1,600 characters, i.e. 24 segments; a message
#: has at most 10 media; a call at most 24 hours), tight enough that every accepted value fits
#: the ledger's integer columns and means something. A signed callback beyond one is refused
#: with 400 ``field_out_of_range``, naming the field: published, it could never be metered.
FIELD_MAXIMUMS: Final[Mapping[str, int]] = {
    "segments": 1_000,
    "num_media": 100,
    "duration_s": 7 * 86_400,
    "sequence_number": 2**31 - 1,
}
_MAX_DIGITS: Final = 18


@dataclass(frozen=True, slots=True)
class RawRequest:
    """One received callback, before any verification.

    ``url`` is the public URL the provider called (scheme, host, port, path and the query string
    exactly as sent); ``headers`` keys are lower-case.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: str = ""

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower-cased ("" when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def parse_urlencoded(text: bytes | str, *, what: str = "form body") -> Params:
    """Parse ``application/x-www-form-urlencoded`` strictly (UTF-8, no junk fields).

    Raises MalformedPayload for invalid UTF-8 (raw or percent-encoded), too many fields, or a
    field without ``=``.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPayload(
                f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from exc
    params: Params = {}
    if not text:
        return params
    fields = text.split("&")
    if len(fields) > MAX_FIELDS:
        raise MalformedPayload(f"{what} has {len(fields)} fields, more than {MAX_FIELDS}")
    # The rules of urllib.parse.parse_qsl(strict_parsing=True, errors="strict"), without its
    # per-field regex and generic decoding: Twilio bodies are mostly plain ASCII, so a field is
    # only unquoted when it holds "+" or "%" (this is on the path of every callback).
    for field in fields:
        name, equals, value = field.partition("=")
        if not equals:
            raise MalformedPayload(f"{what} is not valid form encoding: bad field {field[:64]!r}")
        try:
            if "+" in name or "%" in name:
                name = _unquote(name)
            if "+" in value or "%" in value:
                value = _unquote(value)
        except UnicodeDecodeError as exc:
            raise MalformedPayload(
                f"{what} has a percent-escape that is not UTF-8: {exc.reason}"
            ) from exc
        values = params.get(name)
        if values is None:
            params[name] = [value]
        else:
            values.append(value)
    return params


def _unquote(text: str) -> str:
    """``unquote(text.replace("+", " "), errors="strict")``; for ASCII text (what providers
    send: "%2B1415..." phone numbers) the same result straight from the bytes, without
    urllib's per-chunk splitting. Raises UnicodeDecodeError for escapes that are not UTF-8."""
    text = text.replace("+", " ")
    if text.isascii():
        return unquote_to_bytes(text).decode("utf-8")
    return unquote(text, errors="strict")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a JSON body that must be an object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"JSON body does not parse: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedPayload(f"expected a JSON object body, got {type(doc).__name__}")
    return doc


def require_media_type(request: RawRequest, allowed: tuple[str, ...]) -> str:
    """Return the request's media type, or raise UnsupportedMediaType naming what is accepted."""
    media_type = request.media_type
    if media_type not in allowed:
        shown = media_type or "no Content-Type"
        raise UnsupportedMediaType(f"expected Content-Type {' or '.join(allowed)}, got {shown}")
    return media_type


def bounded_count(value: str | None, field: str, source: str) -> int | None:
    """A non-negative decimal (ASCII digits only) as int, at most ``FIELD_MAXIMUMS[field]``.

    None when absent or not a number (the event's ``raw`` keeps the text); FieldOutOfRange,
    naming ``source`` (the provider's parameter name), when it is a number over the bound.
    ``str.isdigit`` alone would admit superscripts and other scripts that ``int`` rejects.
    """
    if not value or not value.isascii() or not value.isdigit():
        return None
    maximum = FIELD_MAXIMUMS[field]
    if len(value) > _MAX_DIGITS or int(value) > maximum:
        raise FieldOutOfRange(
            f"{source} must be at most {maximum}, got a {len(value)}-digit number"
        )
    return int(value)


def first(params: Params, name: str, default: str | None = None) -> str | None:
    """The first value of a parameter, or ``default``."""
    values = params.get(name)
    return values[0] if values else default


def raw_view(params: Params) -> dict[str, str | list[str]]:
    """Parameters as received for an event's ``raw``: single values as strings, repeats as lists."""
    return {key: values[0] if len(values) == 1 else list(values) for key, values in params.items()}


def json_params(doc: dict[str, Any]) -> Params:
    """Top-level JSON fields as form-like params: strings as-is, null as "", others as JSON.

    Providers' JSON callbacks are read through the same field lookups as form callbacks.
    """
    if len(doc) > MAX_FIELDS:
        raise MalformedPayload(f"JSON body has {len(doc)} fields, more than {MAX_FIELDS}")
    params: Params = {}
    for name, value in doc.items():
        if isinstance(value, str):
            params[name] = [value]
        elif value is None:
            params[name] = [""]
        else:
            params[name] = [orjson.dumps(value).decode()]
    return params
