"""End to end: signed callbacks over a real uvicorn socket reach the tenant's queue.

The same suite runs on the embedded broker (memory://) and on the real RabbitMQ.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.broker.memory import MemoryPublisher
from gateway.http.app import create_app
from gateway.secrets import Secret
from gateway.settings import Settings
from gateway.tenants import KaleyraAccount, StaticTenantRegistry, Tenant
from schemas.topology import USAGE_QUEUE, tenant_queue
from tests.support.kaleyra_samples import bearer, dlr, incoming
from tests.support.logs import CapturedLogs
from tests.support.rabbit import RabbitClient
from tests.support.samples import CALLED, CALLER, ROUTES, message_incoming, message_status
from tests.support.schema_check import assert_valid_event
from tests.support.server import serving
from tests.support.twilio_signing import signed_form_request, twilio_tenant

BODY_TEXT = "My date of birth is 1970-01-01, refill please"
KALEYRA_SECRET_A = secrets.token_hex(24)
KALEYRA_SECRET_B = secrets.token_hex(24)


@dataclass
class Tenants:
    a: Tenant
    b: Tenant
    token_a: str
    token_b: str


@pytest.fixture
def tenants() -> Tenants:
    suffix = secrets.token_hex(3)
    token_a, token_b = secrets.token_hex(16), secrets.token_hex(16)
    a = twilio_tenant(f"e2e-a-{suffix}", "AC" + secrets.token_hex(16), token_a)
    b = twilio_tenant(f"e2e-b-{suffix}", "AC" + secrets.token_hex(16), token_b)
    return Tenants(
        a=replace(a, kaleyra=KaleyraAccount("HXE2EA00001IN", Secret(KALEYRA_SECRET_A))),
        b=replace(b, kaleyra=KaleyraAccount("HXE2EB00002IN", Secret(KALEYRA_SECRET_B))),
        token_a=token_a,
        token_b=token_b,
    )


class Inbox:
    """Reads what landed on queues, from whichever broker the gateway used."""

    def __init__(self, read: Callable[[str], Any]) -> None:
        self.read = read

    async def events(self, queue: str) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = await self.read(queue)
        return docs


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
async def gateway(
    request: pytest.FixtureRequest, tenants: Tenants, tmp_path: Path
) -> AsyncIterator[tuple[str, Inbox]]:
    """A gateway on a real socket, backed by the embedded broker or the real RabbitMQ."""
    registry = StaticTenantRegistry([tenants.a, tenants.b])
    if request.param == "memory":
        app = create_app(Settings(tenants=registry, amqp_url="memory://", data_dir=tmp_path))
        publisher = app.state.ingress.publisher
        assert isinstance(publisher, MemoryPublisher)

        async def read(queue: str) -> list[dict[str, Any]]:
            return [event.to_dict() for event in publisher.broker.drain(queue)]

        async with serving(app) as base_url:
            yield base_url, Inbox(read)
        return
    amqp_url: str = request.getfixturevalue("amqp_url")
    app = create_app(Settings(tenants=registry, amqp_url=amqp_url, data_dir=tmp_path))
    client = await RabbitClient(amqp_url).connect()

    async def read_rabbit(queue: str) -> list[dict[str, Any]]:
        return [doc for _props, doc in await client.read_all(queue)]

    try:
        async with serving(app) as base_url:
            yield base_url, Inbox(read_rabbit)
    finally:
        await client.close()


async def post(base_url: str, path: str, params: dict[str, str], token: str) -> httpx.Response:
    body, headers = signed_form_request(f"{base_url}{path}", params, token)
    async with httpx.AsyncClient() as http:
        return await http.post(f"{base_url}{path}", content=body, headers=headers)


async def test_each_kind_reaches_only_its_tenant(
    gateway: tuple[str, Inbox], tenants: Tenants
) -> None:
    """One callback per route becomes one schema-valid event on tenant A's queue, none on B's."""
    base_url, inbox = gateway
    sid_a = tenants.a.twilio.account_sid if tenants.a.twilio else ""
    for n, (path, _kind, sample) in enumerate(ROUTES, start=1):
        response = await post(base_url, path, sample(sid_a, n), tenants.token_a)
        assert response.status_code in (200, 204), response.text
    events = await inbox.events(tenant_queue(tenants.a.id))
    assert sorted(doc["type"] for doc in events) == sorted(f"io.hookline.{k}" for _, k, _ in ROUTES)
    for doc in events:
        assert_valid_event(doc)
        assert doc["tenant"] == tenants.a.id and doc["source"] == f"twilio/{sid_a}"
    assert await inbox.events(tenant_queue(tenants.b.id)) == []
    usage = [doc for doc in await inbox.events(USAGE_QUEUE) if doc["tenant"] == tenants.a.id]
    assert sorted(doc["type"] for doc in usage) == [
        "io.hookline.call.status",
        "io.hookline.message.incoming",
        "io.hookline.message.status",
    ]


async def test_cross_tenant_signature_publishes_nothing(
    gateway: tuple[str, Inbox], tenants: Tenants
) -> None:
    """Tenant A's AccountSid signed with tenant B's token is 403 and reaches no queue."""
    base_url, inbox = gateway
    sid_a = tenants.a.twilio.account_sid if tenants.a.twilio else ""
    response = await post(
        base_url, "/twilio/messaging/status", message_status(sid_a), tenants.token_b
    )
    assert response.status_code == 403
    assert await inbox.events(tenant_queue(tenants.a.id)) == []
    assert await inbox.events(tenant_queue(tenants.b.id)) == []


async def test_logs_of_a_full_run_hold_no_secret_or_phone_number(
    gateway: tuple[str, Inbox], tenants: Tenants, captured_logs: CapturedLogs
) -> None:
    """Accepted and rejected callbacks log JSON lines with no token, body or full number."""
    base_url, _inbox = gateway
    sid_a = tenants.a.twilio.account_sid if tenants.a.twilio else ""
    await post(
        base_url, "/twilio/messaging", message_incoming(sid_a, body=BODY_TEXT), tenants.token_a
    )
    await post(base_url, "/twilio/messaging/status", message_status(sid_a), tenants.token_b)
    await post(
        base_url, "/twilio/voice/status", {"AccountSid": sid_a, "From": CALLER}, tenants.token_a
    )
    lines = captured_logs.lines()
    assert {line["event"] for line in lines} >= {"callback_accepted", "callback_rejected"}
    text = captured_logs.text
    for needle in (
        tenants.token_a,
        tenants.token_b,
        BODY_TEXT,
        CALLER,
        CALLED,
        CALLER.lstrip("+"),
        CALLED.lstrip("+"),
    ):
        leaked = [line for line in text.splitlines() if needle in line]
        assert not leaked, f"{needle!r} leaked into the logs: {leaked[0][:600]}"


async def test_kaleyra_reports_reach_only_their_tenant(
    gateway: tuple[str, Inbox], tenants: Tenants
) -> None:
    """A Kaleyra DLR and incoming SMS for tenant A land on A's queue as schema-valid events
    (and on hookline.usage, which meters both); tenant B gets nothing."""
    base_url, inbox = gateway
    async with httpx.AsyncClient() as http:
        status = await http.post(
            f"{base_url}/kaleyra/{tenants.a.id}/sms/status",
            json=dlr(),
            headers=bearer(KALEYRA_SECRET_A),
        )
        received = await http.post(
            f"{base_url}/kaleyra/{tenants.a.id}/sms/incoming",
            json=incoming(),
            headers=bearer(KALEYRA_SECRET_A),
        )
        refused = await http.post(
            f"{base_url}/kaleyra/{tenants.b.id}/sms/status",
            json=dlr(),
            headers=bearer(KALEYRA_SECRET_A),
        )
    assert (status.status_code, received.status_code, refused.status_code) == (204, 204, 403)
    events = await inbox.events(tenant_queue(tenants.a.id))
    assert sorted(doc["type"] for doc in events) == [
        "io.hookline.message.incoming",
        "io.hookline.message.status",
    ]
    for doc in events:
        assert_valid_event(doc)
        assert doc["provider"] == "kaleyra" and doc["tenant"] == tenants.a.id
    assert await inbox.events(tenant_queue(tenants.b.id)) == []
    usage = [doc for doc in await inbox.events(USAGE_QUEUE) if doc["tenant"] == tenants.a.id]
    assert sorted(doc["type"] for doc in usage) == [
        "io.hookline.message.incoming",
        "io.hookline.message.status",
    ]
