"""call.flow events: schema-valid, deterministic per request, and refused without CallSid."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import MalformedPayload
from gateway.flows.flow_event import flow_event
from gateway.flows.position import Position
from gateway.flows.render import Rendered
from tests.support.schema_check import assert_valid_event, event_errors

ACCOUNT = "AC" + "0a1b2c3d" * 4
CALL = "CA" + "5e6f7a8b" * 4
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
AT = Position("acme", "refill", "menu", "req-7", 1_800_000_000, "input", 1, {"p": "x"})
RENDERED = Rendered(
    "<Response/>",
    ("confirmed", "thanks", "bye"),
    (("confirmed", "Pickup confirmed."),),
    {"menu": "1"},
    True,
)
PARAMS = {
    "CallSid": [CALL],
    "AccountSid": [ACCOUNT],
    "Digits": ["1"],
    "CallStatus": ["in-progress"],
    "To": ["+14155550123"],
}


def test_a_flow_event_is_schema_valid_and_carries_what_the_step_learned() -> None:
    """Inputs, sms steps, the steps run and the end of the call are in data; the schema holds."""
    event = flow_event("acme", AT, RENDERED, PARAMS, NOW)
    doc = event.to_dict()
    assert_valid_event(doc)
    data = doc["data"]
    assert data["inputs"] == {"menu": "1"} and data["ended"] is True
    assert data["sms"] == [{"step": "confirmed", "text": "Pickup confirmed."}]
    assert (data["flow"], data["step"], data["phase"], data["request_id"]) == (
        "refill",
        "menu",
        "input",
        "req-7",
    )
    assert event.routing_key == "acme.twilio.call.flow" and event.subject == CALL


def test_the_same_request_gives_the_same_id_and_another_attempt_another() -> None:
    """A Twilio retry is the same fact; the next gather attempt is a new one."""
    first = flow_event("acme", AT, RENDERED, PARAMS, NOW)
    assert flow_event("acme", AT, RENDERED, PARAMS, NOW.replace(minute=31)).id == first.id
    assert flow_event("acme", AT.at("menu", "input", 2), RENDERED, PARAMS, NOW).id != first.id


def test_the_schema_refuses_unknown_data_fields() -> None:
    """call.flow data is pinned: an extra field fails validation."""
    doc = flow_event("acme", AT, RENDERED, PARAMS, NOW).to_dict()
    doc["data"]["surprise"] = 1
    assert any("Additional properties" in error for error in event_errors(doc))


def test_no_call_sid_is_a_malformed_payload() -> None:
    """Without CallSid there is no call to attach the step to: 400."""
    with pytest.raises(MalformedPayload, match="CallSid"):
        flow_event("acme", AT, RENDERED, {"AccountSid": [ACCOUNT]}, NOW)
