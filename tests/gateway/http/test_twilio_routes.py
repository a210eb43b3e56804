"""The four Twilio routes over real ASGI HTTP: verified callbacks become events, answered right."""

from __future__ import annotations

from collections.abc import Callable
from xml.etree import ElementTree

import pytest

from gateway.tenants import DEFAULT_FALLBACK_VOICE_TWIML, StaticTenantRegistry
from tests.support.gateway import ACME_SID, GLOBEX_SID, GLOBEX_TOKEN, gateway_client
from tests.support.logs import CapturedLogs
from tests.support.samples import ROUTES, call_incoming, message_status
from tests.support.schema_check import assert_valid_event
from tests.support.twilio_signing import twilio_tenant

Sample = Callable[..., dict[str, str]]


@pytest.mark.parametrize(("path", "kind", "sample"), ROUTES, ids=[r[1] for r in ROUTES])
async def test_each_route_publishes_one_schema_valid_event(
    path: str, kind: str, sample: Sample
) -> None:
    """A signed callback on each route yields one event of its kind on its tenant's queue only."""
    async with gateway_client() as gw:
        response = await gw.post_signed(path, sample(ACME_SID))
        assert response.status_code in (200, 204), response.text
        events = gw.tenant_events("acme")
        assert [event.kind for event in events] == [kind]
        assert events[0].routing_key == f"acme.twilio.{kind}"
        assert_valid_event(events[0].to_dict())
        assert gw.tenant_events("globex") == []


async def test_status_callbacks_answer_204_empty() -> None:
    """Status callbacks get an empty 204 (Twilio ignores the body)."""
    async with gateway_client() as gw:
        response = await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID))
        assert (response.status_code, response.content) == (204, b"")


async def test_incoming_call_gets_fallback_twiml() -> None:
    """An incoming call is answered with the tenant's fallback TwiML as text/xml."""
    custom = "<Response><Say>Acme is closed.</Say></Response>"
    acme = twilio_tenant("acme", ACME_SID, "acme-token-0123456789abcdef")
    tenants = [
        type(acme)(id=acme.id, name=acme.name, twilio=acme.twilio, fallback_voice_twiml=custom)
    ]
    async with gateway_client(tenants) as gw:
        response = await gw.post_signed("/twilio/voice", call_incoming(ACME_SID))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text == custom


async def test_default_fallback_twiml_is_polite_valid_xml() -> None:
    """Without a configured fallback the caller hears a polite message, then a hangup."""
    async with gateway_client() as gw:
        response = await gw.post_signed("/twilio/voice", call_incoming(ACME_SID))
    assert response.text == DEFAULT_FALLBACK_VOICE_TWIML
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Response" and [child.tag for child in root] == ["Say", "Hangup"]


async def test_incoming_message_gets_empty_response() -> None:
    """An incoming message is answered with an empty <Response/> (no reply yet)."""
    async with gateway_client() as gw:
        response = await gw.post_signed(
            "/twilio/messaging",
            {
                "AccountSid": ACME_SID,
                "MessageSid": "SM" + "0" * 32,
                "Body": "hi",
                "From": "+14158675309",
                "To": "+18005551212",
            },
        )
    assert response.status_code == 200
    assert ElementTree.fromstring(response.content).tag == "Response"
    assert len(ElementTree.fromstring(response.content)) == 0


async def test_tenants_are_told_apart_by_account_sid() -> None:
    """Each subaccount's callback, signed with its own token, lands on its own tenant queue."""
    async with gateway_client() as gw:
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        await gw.post_signed(
            "/twilio/messaging/status", message_status(GLOBEX_SID, 2), token=GLOBEX_TOKEN
        )
        acme, globex = gw.tenant_events("acme"), gw.tenant_events("globex")
    assert [e.subject for e in acme] == ["SM" + f"{1:032x}"]
    assert [e.subject for e in globex] == ["SM" + f"{2:032x}"]
    assert {e.tenant for e in acme} == {"acme"} and {e.tenant for e in globex} == {"globex"}


async def test_status_events_also_reach_the_usage_queue() -> None:
    """A status event is routed to hookline.usage as well as to the tenant."""
    async with gateway_client() as gw:
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID))
        assert gw.broker.queue_length("hookline.usage") == 1


async def test_query_string_is_part_of_the_signed_url() -> None:
    """A webhook URL with its own query string verifies when signed over it, as Twilio does."""
    async with gateway_client() as gw:
        response = await gw.post_signed(
            "/twilio/messaging/status", message_status(ACME_SID), query="region=eu&x=%20y"
        )
        assert response.status_code == 204


async def test_accepted_callback_logs_one_line(captured_logs: CapturedLogs) -> None:
    """An accepted callback writes exactly one callback_accepted line with its context."""
    async with gateway_client() as gw:
        await gw.post_signed(
            "/twilio/messaging/status", message_status(ACME_SID), headers={"X-Request-Id": "req-42"}
        )
        event = gw.tenant_events("acme")[0]
    lines = [line for line in captured_logs.lines() if line["event"].startswith("callback_")]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "callback_accepted" and line["level"] == "info"
    assert (line["tenant"], line["provider"], line["kind"]) == ("acme", "twilio", "message.status")
    assert (line["event_id"], line["sid"], line["request_id"]) == (
        event.id,
        event.subject,
        "req-42",
    )
    assert line["outcome"] == "published" and line["status"] == 204
    assert isinstance(line["latency_ms"], float) and line["timestamp"].endswith("Z")


async def test_request_id_is_returned() -> None:
    """Every answer carries X-Request-Id, the caller's when it is sane, else a fresh one."""
    async with gateway_client() as gw:
        given = await gw.http.get("/healthz", headers={"X-Request-Id": "abc-123"})
        fresh = await gw.http.get("/healthz", headers={"X-Request-Id": "bad id\twith junk"})
    assert given.headers["x-request-id"] == "abc-123"
    assert len(fresh.headers["x-request-id"]) == 32


async def test_zero_tenants_still_serves_probes() -> None:
    """A gateway with no tenants starts, answers probes and refuses callbacks with 403."""
    async with gateway_client([]) as gw:
        assert (await gw.http.get("/healthz")).status_code == 200
        response = await gw.post_signed("/twilio/voice", call_incoming(ACME_SID))
        assert response.status_code == 403
    assert len(StaticTenantRegistry([])) == 0
