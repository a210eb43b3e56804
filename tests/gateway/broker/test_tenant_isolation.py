"""What one tenant's own broker login can and cannot do (docs/broker-users.md), on the real broker.

The attacker holds tenant A's credentials from `hookline tenant credentials`: everything of
tenant B, the usage and dead-letter queues, forged events and B's commands stay out of reach.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.management import amqp_vhost
from gateway.settings import Settings
from schemas.topology import (
    BOT_COMMANDS_QUEUE,
    COMMANDS_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    USAGE_QUEUE,
    tenant_queue,
)
from tests.support.broker_users import (
    broker_settings,
    credentials,
    delete_users,
    login_refused,
    outcome,
    tenant_id,
)
from tests.support.rabbit import RabbitClient

pytestmark = pytest.mark.broker


@dataclass(frozen=True)
class Pair:
    settings: Settings
    a: dict[str, Any]
    b: dict[str, Any]


@pytest.fixture
async def pair(amqp_url: str, rabbitmq_api_url: str) -> AsyncIterator[Pair]:
    """Tenants A and B (B's id starts with A's: ``acme`` must not reach ``acme-2``), their
    topology declared, and a broker login each; the users are deleted afterwards."""
    a = tenant_id("acme")
    b = f"{a}-2"
    settings = broker_settings(amqp_url, rabbitmq_api_url, [a, b])
    publisher = FastAmqpPublisher(amqp_url, [a, b])
    await publisher.start()
    await publisher.close()
    made: list[str] = []
    try:
        login_a = await credentials(settings, a)
        made.append(login_a["username"])
        login_b = await credentials(settings, b)
        made.append(login_b["username"])
        yield Pair(settings, login_a, login_b)
    finally:
        await delete_users(settings, made)


async def ignore(_message: AbstractIncomingMessage) -> None:
    """A consumer that drops what it gets (only whether it may consume matters here)."""


def consume(queue: str) -> Any:
    async def action(channel: AbstractChannel) -> None:
        declared = await channel.get_queue(queue, ensure=False)
        await declared.consume(ignore)

    return action


def publish(exchange: str, routing_key: str, *, mandatory: bool = False) -> Any:
    async def action(channel: AbstractChannel) -> None:
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        await target.publish(
            aio_pika.Message(b"{}", message_id=str(uuid.uuid4())),
            routing_key=routing_key,
            mandatory=mandatory,
        )

    return action


def bind(binding_key: str) -> Any:
    async def action(channel: AbstractChannel) -> None:
        queue = await channel.declare_queue("", exclusive=True)
        await queue.bind(EVENTS_EXCHANGE, routing_key=binding_key)

    return action


def test_the_printed_object_is_the_contract(pair: Pair) -> None:
    """The command prints tenant, username, password, vhost, queue and amqp_url, and the URL
    carries the tenant's own user and password on the hookline vhost."""
    login = pair.a
    assert set(login) == {"tenant", "username", "password", "vhost", "queue", "amqp_url"}
    assert login["queue"] == tenant_queue(login["tenant"])
    url = urlsplit(login["amqp_url"])
    assert unquote(url.username or "") == login["username"]
    assert unquote(url.password or "") == login["password"]
    assert unquote(url.path[1:]) == login["vhost"] == amqp_vhost(pair.settings.amqp_url)
    assert len(login["password"]) >= 40


async def test_a_consumes_its_own_queue(pair: Pair) -> None:
    """Tenant A's login may consume hookline.tenant.A."""
    assert await outcome(pair.a["amqp_url"], consume(pair.a["queue"])) == "ok"


@pytest.mark.parametrize("queue", ["B", USAGE_QUEUE, DEAD_QUEUE, BOT_COMMANDS_QUEUE])
async def test_a_cannot_consume_other_queues(pair: Pair, queue: str) -> None:
    """B's queue, hookline.usage, hookline.dead and the bot-command queue: ACCESS_REFUSED."""
    name = pair.b["queue"] if queue == "B" else queue
    assert await outcome(pair.a["amqp_url"], consume(name)) == "refused"


@pytest.mark.parametrize("confirms", [True, False])
async def test_a_cannot_publish_events(pair: Pair, confirms: bool) -> None:
    """A forged event for A itself, on hookline.events: refused, with or without confirms."""
    key = f"{pair.a['tenant']}.twilio.message.status"
    result = await outcome(pair.a["amqp_url"], publish(EVENTS_EXCHANGE, key), confirms=confirms)
    assert result == "refused"


async def test_a_cannot_publish_through_the_default_exchange(pair: Pair) -> None:
    """The default exchange routes by queue name: A may not use it to reach hookline.usage."""
    assert await outcome(pair.a["amqp_url"], publish("", USAGE_QUEUE)) == "refused"


@pytest.mark.parametrize("confirms", [True, False])
async def test_a_cannot_command_for_b(pair: Pair, confirms: bool) -> None:
    """Publishing B.call.bot (B's id extends A's) to hookline.commands: ACCESS_REFUSED."""
    key = f"{pair.b['tenant']}.call.bot"
    result = await outcome(pair.a["amqp_url"], publish(COMMANDS_EXCHANGE, key), confirms=confirms)
    assert result == "refused"


async def test_a_commands_for_itself_and_the_command_is_routed(
    pair: Pair, rabbit: RabbitClient
) -> None:
    """A.call.bot is accepted (confirmed, not returned) and lands in hookline.bot.commands."""
    message_id = str(uuid.uuid4())

    async def action(channel: AbstractChannel) -> None:
        exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(b"{}", message_id=message_id),
            routing_key=f"{pair.a['tenant']}.call.bot",
            mandatory=True,
        )

    assert await outcome(pair.a["amqp_url"], action) == "ok"
    found = [
        props
        for props, _ in await rabbit.read_all(BOT_COMMANDS_QUEUE)
        if props.message_id == message_id
    ]
    assert len(found) == 1 and found[0].routing_key == f"{pair.a['tenant']}.call.bot"


async def test_a_binds_its_server_named_queue_to_its_events(pair: Pair) -> None:
    """A may bind its own server-named queue to hookline.events with A.#."""
    assert await outcome(pair.a["amqp_url"], bind(f"{pair.a['tenant']}.#")) == "ok"


@pytest.mark.parametrize("binding", ["B.#", "#", "*.twilio.#", "*.*.message.status", "A"])
async def test_a_cannot_bind_to_other_events(pair: Pair, binding: str) -> None:
    """Binding keys that could match another tenant's events (B.#, #, *.twilio.#, ...) are
    refused by the topic permissions."""
    key = binding.replace("A", pair.a["tenant"]).replace("B", pair.b["tenant"])
    assert await outcome(pair.a["amqp_url"], bind(key)) == "refused"


async def test_a_cannot_bind_a_named_queue(pair: Pair) -> None:
    """Binding B's (or any named) queue is refused even with A's own binding key."""

    async def action(channel: AbstractChannel) -> None:
        queue = await channel.get_queue(pair.b["queue"], ensure=False)
        await queue.bind(EVENTS_EXCHANGE, routing_key=f"{pair.a['tenant']}.#")

    assert await outcome(pair.a["amqp_url"], action) == "refused"


@pytest.mark.parametrize("kind", ["queue", "exchange"])
async def test_a_cannot_declare_named_entities(pair: Pair, kind: str) -> None:
    """Declaring a named queue or exchange needs configure permission: refused."""
    name = f"{pair.a['tenant']}.mine"

    async def action(channel: AbstractChannel) -> None:
        if kind == "queue":
            await channel.declare_queue(name)
        else:
            await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC)

    assert await outcome(pair.a["amqp_url"], action) == "refused"


async def test_rotate_refuses_the_old_password(pair: Pair) -> None:
    """After --rotate the old password no longer logs in and the new one does, with the same
    permissions."""
    old = pair.a
    new = await credentials(pair.settings, old["tenant"], rotate=True)
    assert new["username"] == old["username"] and new["password"] != old["password"]
    assert await login_refused(old["amqp_url"]) is True
    assert await outcome(new["amqp_url"], consume(new["queue"])) == "ok"
    assert await outcome(new["amqp_url"], consume(pair.b["queue"])) == "refused"


async def test_delete_refuses_the_login_and_closes_its_connections(pair: Pair) -> None:
    """--delete removes the user: a new login is refused and an open connection is closed."""
    login = pair.b
    connection = await aio_pika.connect(login["amqp_url"])
    closed = asyncio.Event()
    connection.close_callbacks.add(lambda *_: closed.set())
    try:
        gone = await credentials(pair.settings, login["tenant"], delete=True)
        assert gone["deleted"] is True
        assert await login_refused(login["amqp_url"]) is True
        await asyncio.wait_for(closed.wait(), 10)  # RabbitMQ's CONNECTION_FORCED
    finally:
        await connection.close()
    again = await credentials(pair.settings, login["tenant"], delete=True)
    assert again["deleted"] is False
