"""The JSON Schemas of the event types (schemas/jsonschema, docs/architecture.md#events)."""

from __future__ import annotations

import copy
from importlib import resources
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.events import (
    CALL_STATUSES,
    KINDS,
    MESSAGE_STATUSES,
    PROVIDERS,
    SPEC_VERSION,
    TYPE_PREFIX,
)
from schemas.jsonschema_loader import SCHEMA_KINDS, load_schema
from tests.support.schema_check import assert_valid_event, event_errors

ACCOUNT = "AC" + "0a1b2c3d" * 4
SM = "SM" + "5e6f7a8b" * 4
TWILIO_KINDS = ("message.status", "message.incoming", "call.status", "call.incoming")
# The other kinds are pinned by the feature that emits them and tested there
# (tests/gateway/flows, tests/workers/flows, tests/workers/usage).


def message_status_event() -> dict[str, Any]:
    """A hand-written valid Twilio message.status event (as twilio_events builds it)."""
    return {
        "specversion": "1.0",
        "id": "0d9b6a52-3f1e-5b7c-9a2d-4e8f6c1b0a3d",
        "source": f"twilio/{ACCOUNT}",
        "type": "io.hookline.message.status",
        "subject": SM,
        "time": "2026-11-23T08:00:00Z",
        "datacontenttype": "application/json",
        "tenant": "acme",
        "provider": "twilio",
        "data": {
            "message_sid": SM,
            "account_sid": ACCOUNT,
            "status": "delivered",
            "provider_status": "delivered",
            "from": "+15017122661",
            "to": "+15558675310",
            "channel": "sms",
            "error_code": None,
            "segments": 1,
            "messaging_service_sid": None,
            "raw": {
                "AccountSid": ACCOUNT,
                "MessageSid": SM,
                "MessageStatus": "delivered",
                "To": ["+15558675310", "+15558675311"],
            },
        },
    }


@pytest.mark.parametrize("kind", sorted(SCHEMA_KINDS))
def test_schema_is_valid_draft_2020_12(kind: str) -> None:
    """Each schema file is itself a valid Draft 2020-12 schema, typed for its kind."""
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["type"] == {"const": TYPE_PREFIX + kind}
    assert schema["properties"]["specversion"] == {"const": SPEC_VERSION}
    assert set(schema["properties"]["provider"]["enum"]) == PROVIDERS
    assert schema["description"]


def test_schema_kinds_match_event_kinds_and_files() -> None:
    """SCHEMA_KINDS equals schemas.events.KINDS and the package data holds exactly those files."""
    assert SCHEMA_KINDS == KINDS
    folder = resources.files("schemas").joinpath("jsonschema")
    names = {entry.name for entry in folder.iterdir() if entry.name.endswith(".json")}
    assert names == {f"{kind}.json" for kind in KINDS}


def test_load_schema_returns_fresh_dicts_and_refuses_unknown_kinds() -> None:
    """load_schema gives each caller its own dict and names unknown kinds in a ValueError."""
    first = load_schema("call.status")
    first["title"] = "changed"
    assert load_schema("call.status")["title"] == "io.hookline.call.status"
    with pytest.raises(ValueError, match=r"call\.teleport"):
        load_schema("call.teleport")


def test_status_enums_match_python_constants() -> None:
    """The schemas' status enums are exactly schemas.events' normalized statuses."""
    for kind in ("message.status", "message.incoming"):
        assert set(load_schema(kind)["$defs"]["message_status"]["enum"]) == MESSAGE_STATUSES
    for kind in ("call.status", "call.incoming"):
        assert set(load_schema(kind)["$defs"]["call_status"]["enum"]) == CALL_STATUSES


def test_loader_does_not_import_jsonschema() -> None:
    """The runtime loader stays free of the test-only jsonschema dependency."""
    import schemas.jsonschema_loader as loader

    source = resources.files("schemas").joinpath("jsonschema_loader.py").read_text("utf-8")
    assert "import jsonschema" not in source and "from jsonschema" not in source
    assert "jsonschema" not in {getattr(v, "__name__", "") for v in vars(loader).values()}


def test_valid_events_pass() -> None:
    """A well-formed Twilio event passes."""
    assert_valid_event(message_status_event())


def test_kaleyra_data_is_pinned_too() -> None:
    """A Kaleyra message.status needs its own pinned data (issue 5), not only status and raw."""
    doc = message_status_event()
    doc.update(
        provider="kaleyra",
        source="kaleyra/HXAB12IN_1710",
        subject="dlr-1",
        data={"status": "delivered", "raw": {"status": "DELIVRD", "delivered": 1}},
    )
    errors = event_errors(doc)
    assert "$.data: 'message_id' is a required property" in errors
    assert any(error.startswith("$.data.raw.delivered") for error in errors)
    doc["data"]["status"] = "DELIVRD"
    assert any("status" in error for error in event_errors(doc))


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A copy of the valid event with one value replaced (or removed when value is ...)."""
    doc = copy.deepcopy(message_status_event())
    *parents, leaf = path.split(".")
    target = doc
    for key in parents:
        target = target[key]
    if value is ...:
        del target[leaf]
    else:
        target[leaf] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "complaint"),
    [
        ("type", "io.hookline.call.status", "'call_sid' is a required property"),
        ("type", "com.example.other", "expected a string starting"),
        ("tenant", ..., "'tenant' is a required property"),
        ("tenant", "Acme Corp", "does not match"),
        ("data.status", "DELIVRD", "is not one of"),
        ("data.status", "bogus", "is not one of"),
        ("specversion", "0.3", "'1.0' was expected"),
        ("time", "2026-11-23T08:00:00+01:00", "does not match"),
        ("time", "2026-13-01T08:00:00Z", "is not a 'date-time'"),
        ("datacontenttype", "text/plain", "'application/json' was expected"),
        ("provider", "plivo", "is not one of"),
        ("source", "kaleyra/HX1", "does not match"),
        ("subject", "SM 1", "does not match"),
        ("extension", "x", "Additional properties are not allowed"),
        ("data.segments", "1", "is not of type"),
        ("data.segments", -1, "less than the minimum"),
        ("data.channel", "carrier-pigeon", "is not one of"),
        ("data.error_code", "", "should be non-empty"),
        ("data.raw.To", ["+15558675310"], "is not valid under any of the given schemas"),
        ("data.raw.NumMedia", 0, "is not valid under any of the given schemas"),
        ("data.surprise", True, "Additional properties are not allowed"),
        ("data.message_sid", ..., "'message_sid' is a required property"),
        ("data", [], "is not of type 'object'"),
    ],
)
def test_invalid_events_are_rejected(path: str, value: Any, complaint: str) -> None:
    """Hand-written invalid events fail, and the error names what is wrong."""
    doc = mutate(path, value)
    with pytest.raises(AssertionError) as caught:
        assert_valid_event(doc)
    assert complaint in str(caught.value)


def test_subject_and_source_must_agree_with_data() -> None:
    """Beyond the schema: a Twilio event's subject and source repeat data's SIDs."""
    errors = event_errors(mutate("subject", "SM" + "0" * 32))
    assert errors == [f"$.subject: {'SM' + '0' * 32!r} differs from data.message_sid"]
    assert event_errors(mutate("source", "twilio/AC" + "1" * 32))[0].startswith("$.source")
