"""Validate events against the JSON Schema of their type (docs/architecture.md#events).

Every test that receives an event calls ``assert_valid_event(event.to_dict())``. Format checking
is on; ``date-time`` is checked here because jsonschema only checks it when the optional
rfc3339-validator package is installed, which hookline does not depend on.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from schemas.events import TYPE_PREFIX
from schemas.jsonschema_loader import SCHEMA_KINDS, load_schema

_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]+))?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
# Event kinds whose subject and source repeat fields of data (checked beyond the schema, since
# JSON Schema cannot compare two values of one document).
_SID_FIELDS = {
    "message.status": "message_sid",
    "message.incoming": "message_sid",
    "call.status": "call_sid",
    "call.incoming": "call_sid",
    "call.flow": "call_sid",
}


def _is_rfc3339(instance: object) -> bool:
    """RFC 3339 date-time (any offset; the schemas' patterns demand the Z)."""
    if not isinstance(instance, str):
        return True
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    text = instance.upper().replace("Z", "+00:00")
    if match.group(1) and len(match.group(1)) > 6:  # datetime holds microseconds at most
        text = text.replace("." + match.group(1), "." + match.group(1)[:6])
    datetime.fromisoformat(text)  # raises for month 13, February 30, hour 25 ...
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker()  # every format jsonschema can check in this environment
    checker.checks("date-time", raises=ValueError)(_is_rfc3339)
    return checker


@cache
def validator(kind: str) -> Draft202012Validator:
    """The validator of one kind's schema (the schema itself is checked first)."""
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_format_checker())


def event_errors(doc: dict[str, Any]) -> list[str]:
    """Every reason ``doc`` is not a valid hookline event, as "<json path>: <message>" lines."""
    event_type = doc.get("type") if isinstance(doc, dict) else None
    if not isinstance(event_type, str) or not event_type.startswith(TYPE_PREFIX):
        return [f"$.type: expected a string starting {TYPE_PREFIX!r}, got {event_type!r}"]
    kind = event_type.removeprefix(TYPE_PREFIX)
    if kind not in SCHEMA_KINDS:
        return [f"$.type: no schema for kind {kind!r}; known: {sorted(SCHEMA_KINDS)}"]
    found = sorted(validator(kind).iter_errors(doc), key=lambda e: list(map(str, e.path)))
    # dict.fromkeys: a value checked by the envelope core and the provider's data reports once.
    errors = list(dict.fromkeys(f"{error.json_path}: {error.message}" for error in found))
    sid_field = _SID_FIELDS.get(kind)
    data = doc.get("data")
    if not errors and sid_field and doc.get("provider") == "twilio" and isinstance(data, dict):
        if doc["subject"] != data[sid_field]:
            errors.append(f"$.subject: {doc['subject']!r} differs from data.{sid_field}")
        if doc["source"] != f"twilio/{data['account_sid']}":
            errors.append(f"$.source: {doc['source']!r} is not twilio/<data.account_sid>")
    return errors


def assert_valid_event(doc: dict[str, Any]) -> None:
    """Raise AssertionError listing every schema violation of ``doc`` (silent when valid)."""
    errors = event_errors(doc)
    if errors:
        ident = doc.get("id") if isinstance(doc, dict) else None
        raise AssertionError(
            f"event {ident!r} does not match its schema:\n  " + "\n  ".join(errors)
        )
