"""``hookline tail``: a live copy of one tenant's events that steals nothing (real broker)."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.tail import CLOSE_TIMEOUT_S, tail_events
from gateway.errors import HooklineError
from schemas.events import Event
from schemas.topology import tenant_queue
from tests.support.broker_users import broker_settings, credentials, delete_users, tenant_id
from tests.support.rabbit import RabbitClient, TcpProxy

pytestmark = pytest.mark.broker


def make_event(tenant: str, kind: str = "message.incoming") -> Event:
    return Event(
        id=str(uuid.uuid4()),
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC0123",
        subject="SM1",
        time=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        data={"body_length": 5},
    )


async def follow(url: str, tenant: str, count: int, ready: asyncio.Event) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with aclosing(tail_events(url, tenant, on_ready=ready.set)) as events:
        async for envelope in events:
            seen.append(envelope)
            if len(seen) == count:
                break
    return seen


async def test_tail_sees_its_tenant_only_and_steals_nothing(
    amqp_url: str, rabbit: RabbitClient
) -> None:
    """tail yields the tenant's envelopes, not another tenant's; the tenant queue keeps its copy."""
    acme, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    publisher = FastAmqpPublisher(amqp_url, [acme, other])
    await publisher.start()
    try:
        ready = asyncio.Event()
        tail = asyncio.create_task(follow(amqp_url, acme, 2, ready))
        await asyncio.wait_for(ready.wait(), 5)
        foreign = make_event(other)
        mine = [make_event(acme), make_event(acme, "call.status")]
        # The foreign event goes first on the same channel: had tail received it, it would
        # precede ours (per-queue order), so checking the first two envelopes is enough.
        for event in (foreign, *mine):
            await publisher.publish(event)
        seen = await asyncio.wait_for(tail, 5)
    finally:
        await publisher.close()
    assert seen == [event.to_dict() for event in mine]
    assert [p.message_id for p, _ in await rabbit.read_all(tenant_queue(acme))] == [
        event.id for event in mine
    ]
    assert [body["id"] for _, body in await rabbit.read_all(tenant_queue(other))] == [foreign.id]


async def test_tail_queue_disappears_with_the_tail(amqp_url: str, rabbit: RabbitClient) -> None:
    """The tail's server-named queue exists while tailing and is deleted once it is closed."""
    acme = f"t-{uuid.uuid4().hex[:10]}"
    ready = asyncio.Event()
    with capture_logs() as logs:
        stream = tail_events(amqp_url, acme, on_ready=ready.set)
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.wait_for(ready.wait(), 5)
    [started] = [entry for entry in logs if entry["event"] == "tail_started"]
    name = started["queue"]
    assert name.startswith("amq.gen-")
    assert started["tenant"] == acme
    assert "guest:guest" not in str(started["url"])
    assert await rabbit.queue_exists(name) is True
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await stream.aclose()
    assert await rabbit.queue_exists(name) is False


async def test_tail_ends_promptly_when_the_broker_stops_answering(
    broker_proxy: TcpProxy,
) -> None:
    """Cancelled (Ctrl-C) while the broker is hung, the tail gives up the close after its
    bound instead of waiting for an answer that never comes."""
    acme = f"t-{uuid.uuid4().hex[:10]}"
    ready = asyncio.Event()
    with capture_logs() as logs:
        tail = asyncio.create_task(follow(broker_proxy.url, acme, 1, ready))
        await asyncio.wait_for(ready.wait(), 5)
        broker_proxy.pause()
        tail.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(tail, CLOSE_TIMEOUT_S + 3)
        elapsed = time.monotonic() - started
        broker_proxy.resume()
    assert CLOSE_TIMEOUT_S - 0.1 <= elapsed < CLOSE_TIMEOUT_S + 1
    assert [entry["event"] for entry in logs][-2:] == ["tail_close_failed", "tail_stopped"]


async def test_a_tenant_tails_itself_with_its_own_credentials(
    amqp_url: str, rabbitmq_api_url: str
) -> None:
    """With the login `hookline tenant credentials` made, tail needs no configure permission
    on hookline.events and sees the tenant's events."""
    acme, other = tenant_id("tail"), tenant_id("tail")
    settings = broker_settings(amqp_url, rabbitmq_api_url, [acme, other])
    publisher = FastAmqpPublisher(amqp_url, [acme, other])
    await publisher.start()
    login = await credentials(settings, acme)
    try:
        ready = asyncio.Event()
        tail = asyncio.create_task(follow(login["amqp_url"], acme, 1, ready))
        await asyncio.wait_for(ready.wait(), 5)
        mine = make_event(acme)
        for event in (make_event(other), mine):
            await publisher.publish(event)
        assert await asyncio.wait_for(tail, 5) == [mine.to_dict()]
    finally:
        await publisher.close()
        await delete_users(settings, [login["username"]])


async def test_tailing_another_tenant_is_refused_in_one_clear_line(
    amqp_url: str, rabbitmq_api_url: str
) -> None:
    """Tenant A's login tailing tenant B: an error naming the user and the refused binding."""
    acme, other = tenant_id("tail"), tenant_id("tail")
    settings = broker_settings(amqp_url, rabbitmq_api_url, [acme, other])
    login = await credentials(settings, acme)
    try:
        with pytest.raises(HooklineError) as refused:
            await follow(login["amqp_url"], other, 1, asyncio.Event())
    finally:
        await delete_users(settings, [login["username"]])
    message = str(refused.value)
    assert (
        f"user {login['username']!r} may not bind a queue to hookline.events with "
        f"{other}.#" in message
    )
    assert "ACCESS_REFUSED" in message and login["password"] not in message
