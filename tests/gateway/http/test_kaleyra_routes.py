"""Kaleyra routes over real ASGI HTTP: authenticated reports become events, the rest is refused."""

from __future__ import annotations

import orjson
import pytest

from gateway.secrets import Secret
from gateway.tenants import KaleyraAccount, Tenant
from tests.support.gateway import default_tenants, gateway_client
from tests.support.kaleyra_samples import MESSAGE_ID, basic, bearer, dlr, incoming, legacy_query
from tests.support.logs import CapturedLogs
from tests.support.schema_check import assert_valid_event

ACME_SECRET = "acme-kaleyra-callback-secret-0001"
GLOBEX_SECRET = "globex-kaleyra-callback-secret-002"
STATUS = "/kaleyra/acme/sms/status"
INCOMING = "/kaleyra/acme/sms/incoming"


def tenants() -> list[Tenant]:
    acme, globex = default_tenants()
    return [
        Tenant(
            id=acme.id,
            name=acme.name,
            twilio=acme.twilio,
            kaleyra=KaleyraAccount("HXACME0000001IN", Secret(ACME_SECRET)),
        ),
        Tenant(
            id=globex.id,
            name=globex.name,
            twilio=globex.twilio,
            kaleyra=KaleyraAccount("HXGLOBEX00002IN", Secret(GLOBEX_SECRET)),
        ),
    ]


def json_headers(auth: dict[str, str]) -> dict[str, str]:
    return {"content-type": "application/json", **auth}


async def test_json_delivery_report_with_bearer_secret() -> None:
    """A callback-profile JSON DLR with the Bearer secret becomes a kaleyra message.status."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.post(
            STATUS, content=orjson.dumps(dlr()), headers=json_headers(bearer(ACME_SECRET))
        )
        events = gw.tenant_events("acme")
        assert gw.tenant_events("globex") == []
    assert response.status_code == 204
    [event] = events
    assert (event.kind, event.provider, event.subject) == ("message.status", "kaleyra", MESSAGE_ID)
    assert event.routing_key == "acme.kaleyra.message.status"
    assert event.data["status"] == "delivered"
    assert_valid_event(event.to_dict())


async def test_legacy_dlrurl_get_query() -> None:
    """A legacy dlrurl GET with X-Hookline-Secret and DELIVRD maps to delivered."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.get(
            STATUS, params=legacy_query(), headers={"x-hookline-secret": ACME_SECRET}
        )
        [event] = gw.tenant_events("acme")
    assert response.status_code == 204
    assert (event.data["status"], event.data["provider_status"]) == ("delivered", "DELIVRD")
    assert_valid_event(event.to_dict())


async def test_incoming_form_with_basic_auth() -> None:
    """An incoming SMS as a form body with Basic auth becomes message.incoming."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.post(INCOMING, data=incoming(), headers=basic(ACME_SECRET))
        [event] = gw.tenant_events("acme")
    assert response.status_code == 204
    assert event.kind == "message.incoming" and event.data["body"] == "STOP offers please"
    assert_valid_event(event.to_dict())


async def test_unknown_status_is_kept_as_unknown() -> None:
    """A status hookline does not know is published as unknown with the provider's value."""
    async with gateway_client(tenants()) as gw:
        await gw.http.post(
            STATUS,
            content=orjson.dumps(dlr(status="Teleported")),
            headers=json_headers(bearer(ACME_SECRET)),
        )
        [event] = gw.tenant_events("acme")
    assert (event.data["status"], event.data["provider_status"]) == ("unknown", "Teleported")
    assert event.data["raw"]["status"] == "Teleported"


async def test_repeated_report_is_published_once() -> None:
    """The same delivery report twice (a retry) publishes one event."""
    async with gateway_client(tenants()) as gw:
        for _ in range(2):
            response = await gw.http.post(
                STATUS, content=orjson.dumps(dlr()), headers=json_headers(bearer(ACME_SECRET))
            )
            assert response.status_code == 204
        assert len(gw.tenant_events("acme")) == 1


@pytest.mark.parametrize(
    ("path", "headers", "reason"),
    [
        (STATUS, bearer("wrong-secret"), "secret_invalid"),
        (STATUS, bearer(GLOBEX_SECRET), "secret_invalid"),
        (STATUS, {}, "secret_missing"),
        ("/kaleyra/nobody/sms/status", bearer(ACME_SECRET), "unknown_tenant"),
        ("/kaleyra/Bad_Id!/sms/status", bearer(ACME_SECRET), "unknown_tenant"),
    ],
    ids=["wrong-secret", "other-tenants-secret", "no-secret", "unknown-tenant", "junk-tenant"],
)
async def test_refused_callers_get_403(
    captured_logs: CapturedLogs, path: str, headers: dict[str, str], reason: str
) -> None:
    """Wrong, missing or other-tenant secrets and unknown tenants get the same 403."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.post(
            path, content=orjson.dumps(dlr()), headers=json_headers(headers)
        )
        assert gw.total_messages() == 0
    assert (response.status_code, response.text) == (403, "Forbidden")
    [line] = captured_logs.events("callback_rejected")
    assert line["reason"] == reason and line["provider"] == "kaleyra"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"id=\xff", "application/x-www-form-urlencoded", 400),
        (b"<xml/>", "text/xml", 415),
        (orjson.dumps({"status": "Delivered"}), "application/json", 400),
    ],
    ids=["bad-json", "json-array", "bad-utf8", "xml", "no-message-id"],
)
async def test_malformed_payloads(body: bytes, content_type: str, status: int) -> None:
    """Malformed payloads from an authenticated caller are 400/415 and publish nothing."""
    async with gateway_client(tenants()) as gw:
        response = await gw.http.post(
            STATUS, content=body, headers={"content-type": content_type, **bearer(ACME_SECRET)}
        )
        assert gw.total_messages() == 0
    assert response.status_code == status


async def test_wrong_method_is_405() -> None:
    """Incoming SMS takes POST only; delivery reports take GET and POST."""
    async with gateway_client(tenants()) as gw:
        assert (await gw.http.get(INCOMING, headers=bearer(ACME_SECRET))).status_code == 405
        assert (await gw.http.put(STATUS, headers=bearer(ACME_SECRET))).status_code == 405
