"""gateway.providers.twilio_events: samples follow the Twilio docs that module links to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import FieldOutOfRange, MalformedPayload
from gateway.providers.request import Params
from gateway.providers.twilio_events import MESSAGE_STATUS_MAP, normalize
from gateway.tenants import Tenant
from schemas.events import CALL_STATUSES, Event
from tests.support.schema_check import assert_valid_event

# Twilio SIDs: two letters and 32 hex digits (account, message, MMS, call, recording, service).
ACCOUNT, SM, MM = "AC" + "0a1b2c3d" * 4, "SM" + "5e6f7a8b" * 4, "MM" + "9c0d1e2f" * 4
CA, RE, MG = "CA" + "3a4b5c6d" * 4, "RE" + "7e8f9a0b" * 4, "MG" + "1c2d3e4f" * 4
TENANT = Tenant(id="acme", name="Acme Pharmacy")
NOW = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)
SID_PARAM = {
    "message.status": "MessageSid",
    "message.incoming": "MessageSid",
    "call.status": "CallSid",
    "call.incoming": "CallSid",
}
KINDS = tuple(SID_PARAM)


def form(**fields: str | list[str]) -> Params:
    """Params as the form parser builds them, AccountSid included."""
    params: Params = {"AccountSid": [ACCOUNT]}
    params.update({k: v if isinstance(v, list) else [v] for k, v in fields.items()})
    return params


def build(kind: str, params: Params, now: datetime = NOW) -> Event:
    """normalize(), then check the event against its schema and a JSON round trip."""
    event = normalize(kind, TENANT, params, now)
    assert_valid_event(event.to_dict())
    assert Event.from_json(event.to_json()).to_dict() == event.to_dict()
    return event


def sms_status(status: str = "delivered", **extra: str | list[str]) -> Params:
    """A message status callback as Twilio posts it, overridden by ``extra``."""
    return form(
        **{
            "ApiVersion": "2010-04-01",
            "From": "+15017122661",
            "To": "+15558675310",
            "MessageSid": SM,
            "SmsSid": SM,
            "MessageStatus": status,
            "SmsStatus": status,
            "MessagingServiceSid": MG,
            **extra,
        }
    )


def call_status(status: str = "completed", **extra: str | list[str]) -> Params:
    """A call status callback (StatusCallbackEvent) as Twilio posts it, overridden by ``extra``."""
    return form(
        **{
            "Called": "+15558675310",
            "To": "+15558675310",
            "Caller": "+15017122661",
            "From": "+15017122661",
            "Direction": "outbound-api",
            "CallSid": CA,
            "CallStatus": status,
            "ApiVersion": "2010-04-01",
            "Timestamp": "Mon, 23 Nov 2026 08:00:00 +0000",
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "3",
            "CallDuration": "42",
            "Duration": "1",
            "AnsweredBy": "human",
            **extra,
        }
    )


def test_message_status_delivered_fields() -> None:
    """A delivered SMS status callback yields every normalized field and the envelope."""
    event = build(
        "message.status", sms_status("delivered", NumSegments="2", RawDlrDoneDate="2611230800")
    )
    assert (event.kind, event.tenant, event.provider) == ("message.status", "acme", "twilio")
    assert (event.source, event.subject, event.time) == (f"twilio/{ACCOUNT}", SM, NOW)
    raw = event.data.pop("raw")
    assert event.data == {
        "message_sid": SM,
        "account_sid": ACCOUNT,
        "status": "delivered",
        "provider_status": "delivered",
        "from": "+15017122661",
        "to": "+15558675310",
        "channel": "sms",
        "error_code": None,
        "segments": 2,
        "messaging_service_sid": MG,
    }
    assert raw["RawDlrDoneDate"] == "2611230800" and raw["SmsSid"] == SM


def test_message_status_undelivered_whatsapp() -> None:
    """A WhatsApp failure keeps ErrorCode as a string and derives the whatsapp channel."""
    params = form(
        MessageSid=SM,
        MessageStatus="undelivered",
        ErrorCode="63016",
        From="whatsapp:+14155238886",
        To="whatsapp:+15005550006",
        ChannelPrefix="whatsapp",
        ChannelToAddress="+15005550006",
    )
    data = build("message.status", params).data
    assert (data["status"], data["error_code"]) == ("undelivered", "63016")
    assert data["channel"] == "whatsapp"
    assert data["segments"] is None and data["messaging_service_sid"] is None


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        *MESSAGE_STATUS_MAP.items(),
        ("DELIVERED", "delivered"),
        ("Sending", "queued"),
        (" sent ", "sent"),
        ("Partially_Delivered", "undelivered"),
        ("bogus", "unknown"),
    ],
)
def test_message_status_mapping(sent: str, expected: str) -> None:
    """Every Twilio message status maps (case-insensitively); others become unknown."""
    data = build("message.status", sms_status(sent)).data
    assert data["status"] == expected and data["provider_status"] == sent


def test_message_status_absent_or_legacy() -> None:
    """Without MessageStatus the legacy SmsStatus/SmsSid count; without both, unknown."""
    legacy = build("message.status", form(SmsSid=SM, SmsStatus="sent")).data
    assert (legacy["message_sid"], legacy["status"]) == (SM, "sent")
    bare = build("message.status", form(MessageSid=SM)).data
    assert (bare["status"], bare["provider_status"]) == ("unknown", None)


@pytest.mark.parametrize(
    ("fields", "channel"),
    [
        ({"From": "+15017122661", "To": "+15558675310"}, "sms"),
        ({"NumMedia": "0"}, "sms"),
        ({"From": "whatsapp:+14155238886", "To": "whatsapp:+15005550006"}, "whatsapp"),
        ({"From": "+15017122661", "To": "WhatsApp:+15005550006"}, "whatsapp"),
        ({"From": "messenger:1234567890"}, "messenger"),
        ({"From": "rcs:acme_agent"}, "rcs"),
        ({"From": "gbm:agent", "To": "+15558675310"}, "unknown"),
        ({"ChannelPrefix": "whatsapp", "From": "+14155238886"}, "whatsapp"),
        ({"NumMedia": "1"}, "mms"),
        ({"MessageSid": MM}, "mms"),
        ({"From": "whatsapp:+14155238886", "NumMedia": "2"}, "whatsapp"),
    ],
)
def test_channel(fields: dict[str, str], channel: str) -> None:
    """The channel comes from ChannelPrefix, an address prefix, media or the MM SID prefix."""
    params = form(**{"MessageSid": SM, "MessageStatus": "sent", **fields})
    assert build("message.status", params).data["channel"] == channel


def test_message_incoming_sms() -> None:
    """An incoming SMS webhook yields every normalized field."""
    event = build(
        "message.incoming",
        form(
            ToCountry="US",
            SmsMessageSid=SM,
            NumMedia="0",
            SmsSid=SM,
            SmsStatus="received",
            Body="Is my prescription ready?",
            FromCountry="US",
            To="+15558675310",
            MessageSid=SM,
            MessagingServiceSid=MG,
            NumSegments="1",
            From="+15017122661",
            ApiVersion="2010-04-01",
        ),
    )
    event.data.pop("raw")
    assert event.subject == SM and event.data == {
        "message_sid": SM,
        "account_sid": ACCOUNT,
        "status": "received",
        "provider_status": "received",
        "from": "+15017122661",
        "to": "+15558675310",
        "body": "Is my prescription ready?",
        "channel": "sms",
        "num_media": 0,
        "media": [],
        "segments": 1,
        "messaging_service_sid": MG,
    }


def test_message_incoming_mms_media_in_index_order() -> None:
    """Media URLs are listed by numeric index (10 after 2) with their content types."""
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Messages/{MM}/Media/ME"
    params = form(
        MessageSid=MM,
        SmsStatus="received",
        From="+15017122661",
        To="+15558675310",
        Body="",
        NumMedia="3",
        MediaUrl10=url + "10",
        MediaContentType10="image/png",
        MediaUrl2=url + "2",
        MediaUrl0=url + "0",
        MediaContentType0="image/jpeg",
        MediaUrlX="ignored",
        MediaUrl="ignored",
    )
    data = build("message.incoming", params).data
    assert (data["channel"], data["num_media"], data["body"]) == ("mms", 3, "")
    assert data["media"] == [
        {"url": url + "0", "content_type": "image/jpeg"},
        {"url": url + "2", "content_type": None},
        {"url": url + "10", "content_type": "image/png"},
    ]


def test_call_incoming_fields() -> None:
    """An incoming call webhook yields every normalized field."""
    event = build(
        "call.incoming",
        form(
            Called="+15558675310",
            Direction="inbound",
            CallSid=CA,
            To="+15558675310",
            CallStatus="ringing",
            From="+15017122661",
            Caller="+15017122661",
            CallerName="ACME CORP",
            ForwardedFrom="+15550001111",
            StirVerstat="TN-Validation-Passed-A",
        ),
    )
    event.data.pop("raw")
    assert event.subject == CA and event.data == {
        "call_sid": CA,
        "account_sid": ACCOUNT,
        "status": "ringing",
        "provider_status": "ringing",
        "direction": "inbound",
        "from": "+15017122661",
        "to": "+15558675310",
        "caller_name": "ACME CORP",
        "forwarded_from": "+15550001111",
    }
    bare = build("call.incoming", form(CallSid=CA, CallerName="")).data
    assert bare["caller_name"] is None and bare["status"] == "unknown"


def test_call_status_completed_fields() -> None:
    """A completed call status callback yields every normalized field."""
    event = build("call.status", call_status("completed"))
    event.data.pop("raw")
    assert event.subject == CA and event.data == {
        "call_sid": CA,
        "account_sid": ACCOUNT,
        "status": "completed",
        "provider_status": "completed",
        "direction": "outbound-api",
        "from": "+15017122661",
        "to": "+15558675310",
        "duration_s": 42,
        "sequence_number": 3,
        "answered_by": "human",
        "timestamp": "2026-11-23T08:00:00Z",
        "recording": None,
    }


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        *((s, s) for s in sorted(CALL_STATUSES - {"unknown"})),
        ("In-Progress", "in-progress"),
        ("NO-ANSWER", "no-answer"),
        ("answered", "unknown"),
        ("in_progress", "unknown"),
    ],
)
def test_call_status_mapping(sent: str, expected: str) -> None:
    """Every Twilio CallStatus maps to itself (case-insensitively); others become unknown."""
    data = build("call.status", call_status(sent)).data
    assert data["status"] == expected and data["provider_status"] == sent


def test_recording_status_callback() -> None:
    """A recording status callback on the call status route fills ``recording``."""
    url = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{RE}"
    params = form(
        CallSid=CA,
        RecordingSid=RE,
        RecordingUrl=url,
        RecordingStatus="completed",
        RecordingDuration="35",
        RecordingChannels="1",
        RecordingSource="RecordVerb",
        RecordingStartTime="Mon, 23 Nov 2026 08:00:10 +0000",
        ErrorCode="0",
    )
    data = build("call.status", params).data
    assert data["recording"] == {"sid": RE, "url": url, "status": "completed", "duration_s": 35}
    assert (data["status"], data["provider_status"], data["timestamp"]) == ("unknown", None, None)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        *(
            (t, "2026-11-23T08:00:00Z")
            for t in (
                "Mon, 23 Nov 2026 08:00:00 +0000",
                "Mon, 23 Nov 2026 03:00:00 -0500",
                "Mon, 23 Nov 2026 08:00:00 -0000",
                "23 Nov 2026 08:00:00 GMT",
            )
        ),
        *(
            (t, None)
            for t in (
                "2026-11-23T08:00:00Z",
                "Mon, 31 Feb 2026 08:00:00 +0000",
                "Mon, 23 Nov 2026 08:00:00 +9999",
                "",
                "x" * 500,
            )
        ),
    ],
)
def test_call_status_timestamp(sent: str, expected: str | None) -> None:
    """Twilio's RFC 2822 Timestamp becomes RFC 3339 UTC; anything unparseable becomes null."""
    assert build("call.status", call_status(Timestamp=sent)).data["timestamp"] == expected


@pytest.mark.parametrize("junk", ["abc", "-1", "1.5", " 2", "+3", "", "١٢", "²", "²" * 30])
def test_junk_integers_become_null(junk: str) -> None:
    """Integers that do not parse become null and stay verbatim in raw; nothing raises."""
    message = build("message.incoming", form(MessageSid=SM, NumSegments=junk, NumMedia=junk)).data
    call = build(
        "call.status",
        call_status(
            CallDuration=junk, SequenceNumber=junk, RecordingSid=RE, RecordingDuration=junk
        ),
    ).data
    assert message["segments"] is None and message["num_media"] is None
    assert call["duration_s"] is None and call["sequence_number"] is None
    assert call["recording"]["duration_s"] is None
    assert message["raw"]["NumSegments"] == junk and call["raw"]["CallDuration"] == junk


def test_repeated_keys_stay_lists_in_raw() -> None:
    """Repeated parameters appear as lists in raw; normalized fields use the first value."""
    data = build("message.status", sms_status(To=["+15558675310", "+15558675311"])).data
    assert data["to"] == "+15558675310"
    assert (data["raw"]["To"], data["raw"]["From"]) == (
        ["+15558675310", "+15558675311"],
        "+15017122661",
    )


def test_ids_are_deterministic() -> None:
    """The same callback gives the same id at any receipt time; another fact another id."""

    def ident(kind: str, params: Params, now: datetime = NOW) -> str:
        return build(kind, params, now).id

    later = NOW + timedelta(hours=5)
    sent = ident("message.status", sms_status("sent"))
    assert sent == ident("message.status", sms_status("sent"), later)
    # Twilio's case is not part of the fact (the mapping is case-insensitive too).
    assert sent == ident("message.status", sms_status("SENT"))
    # An incoming message or call is one fact per SID, whatever else the request carries.
    assert ident("call.incoming", form(CallSid=CA, CallStatus="ringing")) == ident(
        "call.incoming", form(CallSid=CA, CallStatus="in-progress"), later
    )
    ids = {
        sent,
        ident("message.status", sms_status("sending")),
        ident("message.status", sms_status("undelivered", ErrorCode="30003")),
        ident("message.status", sms_status("undelivered", ErrorCode="30005")),
        ident("call.status", call_status("in-progress", SequenceNumber="1")),
        ident("call.status", call_status("in-progress", SequenceNumber="2")),
        ident("call.status", call_status("completed", SequenceNumber="2")),
        ident("call.status", form(CallSid=CA, RecordingSid=RE, RecordingStatus="in-progress")),
        ident("call.status", form(CallSid=CA, RecordingSid=RE, RecordingStatus="completed")),
        ident("message.incoming", form(MessageSid=SM)),
        ident("call.incoming", form(CallSid=CA)),
    }
    assert len(ids) == 11


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("sid", "account", "match"),
    [
        (None, ACCOUNT, r"{kind} callback is missing the {name}"),
        ("", ACCOUNT, "{name}"),
        ("SM 123\n", ACCOUNT, "{kind} callback: {name} is not a Twilio SID"),
        (SM, None, "{kind} callback is missing the AccountSid"),
    ],
)
def test_missing_sid_is_malformed(
    kind: str, sid: str | None, account: str | None, match: str
) -> None:
    """A callback without its SID (or with an empty or non-SID one) is MalformedPayload."""
    fields = ((SID_PARAM[kind], sid), ("AccountSid", account), ("From", "+15017122661"))
    params = {name: [value] for name, value in fields if value is not None}
    with pytest.raises(MalformedPayload, match=match.format(kind=kind, name=SID_PARAM[kind])):
        normalize(kind, TENANT, params, NOW)


def test_caller_errors_are_value_errors() -> None:
    """An unknown kind or a naive receipt time is a programming error: ValueError."""
    with pytest.raises(ValueError, match=r"call\.flow"):
        normalize("call.flow", TENANT, form(CallSid=CA), NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        normalize("call.status", TENANT, form(CallSid=CA), datetime(2026, 11, 23))


@pytest.mark.parametrize(
    ("kind", "name", "maximum"),
    [
        ("message.incoming", "NumSegments", 1_000),
        ("message.status", "NumSegments", 1_000),
        ("message.incoming", "NumMedia", 100),
        ("call.status", "CallDuration", 7 * 86_400),
        ("call.status", "SequenceNumber", 2**31 - 1),
        ("call.status", "RecordingDuration", 7 * 86_400),
    ],
)
def test_numbers_beyond_their_bound_are_refused(kind: str, name: str, maximum: int) -> None:
    """A number over its documented bound is FieldOutOfRange (400) naming the field; the bound
    itself is accepted. NumSegments=9999999999999 used to be published, then never metered."""
    base = form(**{SID_PARAM[kind]: SM if kind.startswith("message") else CA, "RecordingSid": RE})
    assert build(kind, {**base, name: [str(maximum)]}).to_json()
    for beyond in (str(maximum + 1), "9999999999999", "9" * 30):
        with pytest.raises(FieldOutOfRange, match=f"^{name} must be at most {maximum}"):
            normalize(kind, TENANT, {**base, name: [beyond]}, NOW)


# Names normalize() reads, so the property reaches every parser, plus arbitrary ones.
NAMES = st.sampled_from(
    [
        "AccountSid",
        "MessageSid",
        "SmsSid",
        "CallSid",
        "MessageStatus",
        "SmsStatus",
        "CallStatus",
        "From",
        "To",
        "Body",
        "NumMedia",
        "NumSegments",
        "MediaUrl0",
        "MediaUrl1",
        "MediaUrl01",
        "MediaContentType0",
        "ErrorCode",
        "ChannelPrefix",
        "CallDuration",
        "SequenceNumber",
        "Timestamp",
        "RecordingSid",
        "RecordingStatus",
        "RecordingDuration",
        "CallerName",
    ]
) | st.text(max_size=12)
VALUES = (
    st.text(max_size=40)
    | st.integers().map(str)
    | st.sampled_from(
        ["Mon, 23 Nov 2026 08:00:00 +0000", "whatsapp:+14155238886", "delivered", "IN-PROGRESS"]
    )
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    extra=st.dictionaries(NAMES, st.lists(VALUES, min_size=1, max_size=3), max_size=12),
    keep_sid=st.booleans(),
)
def test_property_valid_event_or_malformed(kind: str, extra: Params, keep_sid: bool) -> None:
    """For arbitrary params, normalize() yields a schema-valid event or MalformedPayload."""
    params: Params = dict(extra)
    if keep_sid:
        params.update(AccountSid=[ACCOUNT], **{SID_PARAM[kind]: [SM]})
    try:
        event = normalize(kind, TENANT, params, NOW)
    except FieldOutOfRange:
        return  # a numeric field over its bound: refused whatever the SIDs
    except MalformedPayload:
        assert not keep_sid, "a callback with valid SIDs must normalize"
        return
    assert_valid_event(event.to_dict())
    assert event.to_json()
    assert event.id == normalize(kind, TENANT, params, NOW + timedelta(days=1)).id
