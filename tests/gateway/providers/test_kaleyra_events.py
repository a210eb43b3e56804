"""gateway.providers.kaleyra_events: samples follow the Kaleyra docs that module links to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FieldOutOfRange, MalformedPayload
from gateway.providers.kaleyra_events import (
    FIELD_ALIASES,
    MESSAGE_STATUS_MAP,
    canonical_fields,
    map_status,
    normalize,
)
from gateway.providers.request import Params
from gateway.secrets import Secret
from gateway.tenants import KaleyraAccount, Tenant
from schemas.events import MESSAGE_STATUSES, Event, event_id
from tests.support.schema_check import assert_valid_event

SID = "HXAB12XXXXXX71IN"
MID = "ee8a1f2c-3b4d-4e5f-8a9b-9b717c0d330d:1"
ACME = Tenant(id="acme", name="Acme", kaleyra=KaleyraAccount(SID, Secret("s1")))
BERLIN = Tenant(
    id="berlin",
    name="Berlin",
    kaleyra=KaleyraAccount("HXBERLIN0001EU", Secret("s2"), timezone="Europe/Berlin"),
)
NOW = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)
KINDS = ("message.status", "message.incoming")


def fields(**values: str | list[str]) -> Params:
    """Params as the verifier builds them (names may carry brackets, so pass a dict for those)."""
    return {k: v if isinstance(v, list) else [v] for k, v in values.items()}


def build(kind: str, params: Params, tenant: Tenant = ACME, now: datetime = NOW) -> Event:
    """normalize(), then check the schema, the JSON round trip, subject and source."""
    event = normalize(kind, tenant, params, now)
    doc = event.to_dict()
    assert_valid_event(doc)
    assert Event.from_json(event.to_json()).to_dict() == doc
    assert tenant.kaleyra is not None
    assert doc["subject"] == doc["data"]["message_id"]
    assert doc["source"] == f"kaleyra/{doc['data']['kaleyra_sid']}"
    assert doc["data"]["kaleyra_sid"] == tenant.kaleyra.sid
    return event


def dlr(status: str = "Delivered", **extra: str | list[str]) -> Params:
    """A callback-profile delivery report, overridden by ``extra``."""
    return fields(**{"id": MID, "status": status, "to": "+919876543210", **extra})


INCOMING_SAMPLE: Params = fields(
    **{
        "description": "Message has been sent",
        "id": "90e1a2b3-8865-4a96-85b6-4c0ffee00048",
        "kid": "90e74b4c-8d1e-4a96-85b6-44c0ffee0008",
        "recipient": "+919812345678",
        "source": "919876543210",
        "status": "SENT",
        "status_trace": "SENT",
        "message": "UNSUBSCRIBE THE OFFER message",
        "keyword": "SAMPLE",
        "operator": "JIO",
        "circle": "JIO ASSAM",
        "timestamp": "2025-04-17 18:35:20",
        "parts[n]": "SAMPLE",
    }
)


def test_callback_profile_delivery_report_fields() -> None:
    """A kaleyra.io callback-profile DLR yields every normalized field and the envelope."""
    event = build(
        "message.status",
        dlr(
            "Delivered",
            status_details="DELIVERED",
            sender="KLRHXA",
            units="2",
            credits="0.2500",
            sent_at="2025-04-17 18:35:00",
            delivered_at="2025-04-17 18:35:20",
            custom="order-9",
        ),
    )
    assert (event.kind, event.tenant, event.provider, event.time) == (
        "message.status",
        "acme",
        "kaleyra",
        NOW,
    )
    assert (event.source, event.subject) == (f"kaleyra/{SID}", MID)
    raw = event.data.pop("raw")
    assert event.data == {
        "message_id": MID,
        "kaleyra_sid": SID,
        "status": "delivered",
        "provider_status": "Delivered",
        "to": "+919876543210",
        "from": "KLRHXA",
        "channel": "sms",
        "segments": 2,
        "credits": "0.2500",
        "sent_at": "2025-04-17T13:05:00Z",
        "submitted_at": None,
        "delivered_at": "2025-04-17T13:05:20Z",
        "error_code": None,
        "description": None,
        "custom": {"custom": "order-9", "custom1": None, "custom2": None},
    }
    assert raw["status_details"] == "DELIVERED" and raw["units"] == "2"


def test_legacy_dlrurl_fields() -> None:
    """A legacy dlrurl query ({sid}, {status}, {mobile}, {units}, ...) maps to the same data."""
    params = fields(
        sid=MID,
        status="DELIVRD",
        mobile="919876543210",
        custom="c0",
        custom1="c1",
        custom2="c2",
        credits="1.00",
        units="1",
        senttime="2025-04-17 18:35:00",
        submittime="2025-04-17 18:35:05",
        delivered="2025-04-17 18:35:20",
        sentat="1744895100",
        submitat="1744895105",
        delivat="1744895120",
    )
    data = build("message.status", params).data
    data.pop("raw")
    assert data == {
        "message_id": MID,
        "kaleyra_sid": SID,
        "status": "delivered",
        "provider_status": "DELIVRD",
        "to": "919876543210",
        "from": None,
        "channel": "sms",
        "segments": 1,
        "credits": "1.00",
        "sent_at": "2025-04-17T13:05:00Z",
        "submitted_at": "2025-04-17T13:05:05Z",
        "delivered_at": "2025-04-17T13:05:20Z",
        "error_code": None,
        "description": None,
        "custom": {"custom": "c0", "custom1": "c1", "custom2": "c2"},
    }


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        *MESSAGE_STATUS_MAP.items(),
        ("delivered", "delivered"),
        ("DELIVERED", "delivered"),
        (" Sent ", "sent"),
        ("FAILED", "failed"),
        ("UNDELIVERED", "undelivered"),
        ("UnDelivered", "undelivered"),
        ("NOT-SENT", "failed"),
        ("not sent", "failed"),
        ("Sent-No-DLR", "sent"),
        ("awaited_dlr", "sent"),
        ("inv number", "undelivered"),
        ("delivrd", "delivered"),
        ("QUEUED-AT-MOON", "unknown"),
        ("", "unknown"),
        ("ACCEPTD", "unknown"),
    ],
)
def test_status_mapping(sent: str, expected: str) -> None:
    """Every documented Kaleyra status maps (case/separator-insensitively); others: unknown."""
    data = build("message.status", dlr(sent)).data
    assert data["status"] == expected
    assert data["provider_status"] == (sent.strip() or None)
    assert data["raw"]["status"] == sent
    assert map_status(sent) == expected


def test_status_map_targets_are_normalized_statuses() -> None:
    """The status table only produces statuses of schemas.events.MESSAGE_STATUSES."""
    assert set(MESSAGE_STATUS_MAP.values()) <= MESSAGE_STATUSES - {"unknown"}


def test_unknown_status_is_kept_in_raw_and_provider_status() -> None:
    """A status hookline does not know yet becomes unknown; Kaleyra's value is kept."""
    data = build("message.status", dlr("PARTIALLY-ROUTED", status_details="HUH")).data
    assert (data["status"], data["provider_status"]) == ("unknown", "PARTIALLY-ROUTED")
    assert data["raw"] == {
        "id": MID,
        "status": "PARTIALLY-ROUTED",
        "to": "+919876543210",
        "status_details": "HUH",
    }


def test_status_detail_stands_in_for_a_missing_status() -> None:
    """Without a status the detail (e.g. DELIVERED) decides; without both the status is unknown."""
    data = build("message.status", fields(id=MID, status_details="DELIVERED")).data
    assert (data["status"], data["provider_status"]) == ("delivered", "DELIVERED")
    bare = build("message.status", fields(id=MID)).data
    assert (bare["status"], bare["provider_status"]) == ("unknown", None)


@pytest.mark.parametrize(
    ("extra", "error_code"),
    [
        ({"status_details": "CON-DND"}, "CON-DND"),
        ({"status_trace": "INVALID-SUB"}, "INVALID-SUB"),
        ({"status_details": "CON-DND", "error_code": "E42"}, "E42"),
        ({"status_details": "FAILED"}, None),
        ({}, None),
    ],
)
def test_failure_detail_becomes_error_code(extra: dict[str, str], error_code: str | None) -> None:
    """For failures the trace code (unless it just repeats the status) is the error code."""
    data = build("message.status", dlr("Failed", description="Blocked", **extra)).data
    assert (data["status"], data["error_code"], data["description"]) == (
        "failed",
        error_code,
        "Blocked",
    )


def test_delivered_detail_is_not_an_error() -> None:
    """A success's detail is not reported as an error code."""
    data = build("message.status", dlr("Delivered", status_details="DELIVERED")).data
    assert data["error_code"] is None


@pytest.mark.parametrize(("alias", "canonical"), list(FIELD_ALIASES.items()))
def test_every_alias_resolves_to_its_canonical_name(alias: str, canonical: str) -> None:
    """Each accepted name, in any case, lands on its canonical field."""
    assert canonical_fields({alias: ["v1"]}) == {canonical: "v1"}
    assert canonical_fields({alias.upper(): ["v2"], "unrelated": ["x"]}) == {canonical: "v2"}


def test_alias_priority_and_blank_values() -> None:
    """The first listed alias with a non-blank value wins; blanks fall through to the next."""
    params = fields(sid="legacy", id="kio", message_id="canonical", mobile="9198", to="  ")
    assert canonical_fields(params) == {"message_id": "canonical", "to": "9198"}
    assert canonical_fields(fields(msgid="m", sid="s"))["message_id"] == "s"


@pytest.mark.parametrize(
    ("alias", "value", "key", "expected"),
    [
        ("message_id", MID, "message_id", MID),
        ("sid", MID, "message_id", MID),
        ("msgid", MID, "message_id", MID),
        ("mobile", "9198", "to", "9198"),
        ("recipient", "+9198", "to", "+9198"),
        ("sender", "KLRHXA", "from", "KLRHXA"),
        ("source", "9198", "from", "9198"),
        ("From", "ACME", "from", "ACME"),
        ("units", "3", "segments", 3),
        ("segments", "4", "segments", 4),
        ("credits", "0.5", "credits", "0.5"),
        ("submitat", "1744895105", "submitted_at", "2025-04-17T13:05:05Z"),
        ("delivat", "1744895120123", "delivered_at", "2025-04-17T13:05:20.123000Z"),
        ("senttime", "2025-04-17T18:35:00+05:30", "sent_at", "2025-04-17T13:05:00Z"),
        ("custom2", " spaced ", "custom", {"custom": None, "custom1": None, "custom2": " spaced "}),
    ],
)
def test_aliases_reach_the_event_data(alias: str, value: str, key: str, expected: Any) -> None:
    """Documented and legacy names fill the normalized data fields."""
    params = {"id": [MID], "status": ["Sent"], alias: [value]}
    assert build("message.status", params).data[key] == expected


def test_times_use_the_tenant_zone() -> None:
    """Zone-less times are in the tenant's zone: Kolkata by default, Berlin (with DST) if set."""
    params = dlr(delivered_at="2025-07-01 12:00:00", sent_at="2025-01-15 12:00:00")
    kolkata = build("message.status", params).data
    assert (kolkata["delivered_at"], kolkata["sent_at"]) == (
        "2025-07-01T06:30:00Z",
        "2025-01-15T06:30:00Z",
    )
    berlin = build("message.status", params, BERLIN).data
    assert (berlin["delivered_at"], berlin["sent_at"]) == (
        "2025-07-01T10:00:00Z",
        "2025-01-15T11:00:00Z",
    )
    incoming = build("message.incoming", INCOMING_SAMPLE, BERLIN).data
    assert incoming["received_at"] == "2025-04-17T16:35:20Z"


@pytest.mark.parametrize(
    "value",
    [
        "1",
        "0",
        "yesterday",
        "2025-13-01 00:00:00",
        "2025-04-17",
        "17/04/2025 18:35:20",
        "123456789012",
        "0001-01-01 00:00:00",
        "2025-04-17 18:35:20 IST",
        "٢٠٢٥-04-17 18:35:20",
    ],
)
def test_junk_times_become_null(value: str) -> None:
    """Values that are not times (flags, dates alone, other formats) give null; raw keeps them."""
    data = build("message.status", dlr(delivered=value)).data
    assert data["delivered_at"] is None and data["raw"]["delivered"] == value


@pytest.mark.parametrize(
    ("units", "credits", "segments", "kept"),
    [
        ("2", "2.0000", 2, "2.0000"),
        ("x", "-1", None, None),
        ("", "1e3", None, None),
        ("1000", "0." + "5" * 13, 1000, None),
        ("²", "NaN", None, None),
    ],
)
def test_segments_and_credits(
    units: str, credits: str, segments: int | None, kept: str | None
) -> None:
    """units is a non-negative integer and credits a plain decimal string, else null."""
    data = build("message.status", dlr(units=units, credits=credits)).data
    assert (data["segments"], data["credits"]) == (segments, kept)


@pytest.mark.parametrize("units", ["1001", "9999999999999", "1" * 19])
def test_segments_beyond_their_bound_are_refused(units: str) -> None:
    """A segment count over 1,000 is refused (400 field_out_of_range), never published."""
    with pytest.raises(FieldOutOfRange, match="segments must be at most 1000"):
        build("message.status", dlr(units=units))


def test_incoming_documented_sample() -> None:
    """Kaleyra's incoming-SMS sample yields every normalized field; its status stays raw."""
    event = build("message.incoming", INCOMING_SAMPLE)
    assert event.subject == "90e1a2b3-8865-4a96-85b6-4c0ffee00048"
    raw = event.data.pop("raw")
    assert event.data == {
        "message_id": "90e1a2b3-8865-4a96-85b6-4c0ffee00048",
        "kaleyra_sid": SID,
        "status": "received",
        "provider_status": "SENT",
        "from": "919876543210",
        "to": "+919812345678",
        "body": "UNSUBSCRIBE THE OFFER message",
        "keyword": "SAMPLE",
        "channel": "sms",
        "segments": None,
        "operator": "JIO",
        "circle": "JIO ASSAM",
        "received_at": "2025-04-17T13:05:20Z",
    }
    assert raw["kid"] == "90e74b4c-8d1e-4a96-85b6-44c0ffee0008" and raw["parts[n]"] == "SAMPLE"


@pytest.mark.parametrize(
    ("extra", "segments"),
    [
        ({"parts": "3"}, 3),
        ({"parts[n]": "2"}, 2),
        ({"parts[1]": "a", "parts[2]": "b"}, 2),
        ({"PARTS[1]": "a"}, 1),
        ({}, None),
    ],
)
def test_incoming_parts_count(extra: dict[str, str], segments: int | None) -> None:
    """segments: parts as a number, else the count of numbered parts[<n>] fields."""
    params = fields(id=MID, message="hi", **extra)
    data = build("message.incoming", params).data
    assert data["segments"] == segments and data["body"] == "hi"


def test_incoming_body_kept_verbatim() -> None:
    """The message body keeps its whitespace; an absent body is an empty string."""
    assert build("message.incoming", fields(id=MID, message=" hi \n")).data["body"] == " hi \n"
    assert build("message.incoming", fields(id=MID)).data["body"] == ""


def test_ids_are_deterministic() -> None:
    """A retry (same fields, any time, any field order) has the same id; new facts do not."""
    first = build("message.status", dlr("Delivered", status_details="DELIVERED"))
    reordered = dict(reversed(list(dlr("Delivered", status_details="DELIVERED").items())))
    retry = build("message.status", reordered, now=NOW + timedelta(hours=3))
    assert first.id == retry.id
    assert first.id == event_id(
        "kaleyra", SID, "message.status", MID, "delivered", "delivered", "delivered"
    )
    others = {
        build("message.status", dlr("Sent")).id,
        build("message.status", dlr("DELIVRD")).id,
        build(
            "message.status",
            fields(id=MID.replace(":1", ":2"), status="Delivered", status_details="DELIVERED"),
        ).id,
        build("message.status", dlr("Delivered", status_details="DELIVERED"), BERLIN).id,
        build("message.incoming", fields(id=MID)).id,
    }
    assert first.id not in others and len(others) == 5
    incoming = build("message.incoming", INCOMING_SAMPLE)
    assert incoming.id == build("message.incoming", INCOMING_SAMPLE, now=NOW + timedelta(1)).id


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "params",
    [
        {},
        fields(status="Delivered"),
        fields(id="", sid="  "),
        fields(kid="90e74b4c"),
    ],
)
def test_missing_message_id_is_malformed(kind: str, params: Params) -> None:
    """Without a message id the callback is a MalformedPayload naming what is missing."""
    with pytest.raises(MalformedPayload, match="missing the message id"):
        normalize(kind, ACME, params, NOW)


@pytest.mark.parametrize("bad", ["ee8a 1:1", "x" * 101, "é:1", "a\tb"])
def test_unusable_message_id_is_malformed(bad: str) -> None:
    """Whitespace, non-ASCII or huge ids would corrupt subject and id: MalformedPayload."""
    with pytest.raises(MalformedPayload, match="not a Kaleyra message id"):
        normalize("message.status", ACME, fields(id=bad), NOW)


def test_programming_errors_raise_value_error() -> None:
    """Unknown kinds, naive times and tenants without Kaleyra are bugs: ValueError."""
    with pytest.raises(ValueError, match=r"call\.status"):
        normalize("call.status", ACME, dlr(), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        normalize("message.status", ACME, dlr(), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no Kaleyra account"):
        normalize("message.status", Tenant(id="t", name="t"), dlr(), NOW)


NAMES = st.one_of(
    st.sampled_from([*sorted(FIELD_ALIASES), "parts[1]", "PARTS[7]", "Status"]),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            MID,
            "Delivered",
            "DELIVRD",
            "CON-DND",
            "2025-04-17 18:35:20",
            "1744895120",
            "1744895120123",
            "2.5",
            "3",
            "",
            " ",
            "null",
            "9999-12-31 23:59:59",
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    tenant=st.sampled_from([ACME, BERLIN]),
    params=st.dictionaries(NAMES, st.lists(VALUES, min_size=1, max_size=3), max_size=12),
)
def test_any_fields_give_a_valid_event_or_malformed_payload(
    kind: str, tenant: Tenant, params: Params
) -> None:
    """Whatever fields arrive, normalize returns a schema-valid event or raises MalformedPayload."""
    try:
        event = normalize(kind, tenant, params, NOW)
    except MalformedPayload:
        return
    doc = event.to_dict()
    assert_valid_event(doc)
    assert doc["subject"] == doc["data"]["message_id"]
    assert event.id == normalize(kind, tenant, params, NOW + timedelta(seconds=5)).id
