"""hookline's services under the least-privilege users of docs/broker-users.md, on the real
broker: the documented regexes are what the gateway, the RPC client and the worker runtime
need, proven by running them with exactly those permissions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
import pytest

from gateway.broker.dead import DeadLetters
from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker_users import service_users
from gateway.errors import PoisonMessage, TransientError
from gateway.tenants import StaticTenantRegistry
from schemas.events import Event
from schemas.topology import (
    BOT_COMMANDS_QUEUE,
    COMMANDS_EXCHANGE,
    DEAD_QUEUE,
    TWIML_QUEUE,
    USAGE_QUEUE,
    tenant_queue,
)
from tests.support.broker_users import broker_settings, credentials, delete_users, outcome
from tests.support.logs import CapturedLogs
from tests.support.rabbit import RabbitClient
from tests.support.routing import ACME_SID, ACME_TOKEN, OFFICE_NUMBER, routed_tenant
from tests.support.samples import call_incoming, message_status
from tests.support.twiml_stack import twiml_stack
from workers.amqp_transport import AmqpTransport
from workers.handler import Delivery, Result
from workers.runner import Runner
from workers.twiml_worker import TwimlHandler

pytestmark = pytest.mark.broker


@pytest.fixture
async def logins(amqp_url: str, rabbitmq_api_url: str) -> AsyncIterator[dict[str, str]]:
    """`topology declare --users`: one AMQP URL per service user, deleted afterwards."""
    settings = broker_settings(amqp_url, rabbitmq_api_url, [])
    out = io.StringIO()
    await service_users(settings, out)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    try:
        yield {line["service"]: line["amqp_url"] for line in lines}
    finally:
        await delete_users(settings, [line["username"] for line in lines])


@dataclass
class Recorder:
    """A handler on ``queue``: fails the first delivery of each message once (a retry through
    the holding queues), dead-letters bodies that are not JSON, acks the rest."""

    name: str
    queue: str
    retry_delays_s: tuple[int, ...] = (1,)
    batch_size: int = 1
    batch_wait_s: float = 0.0
    concurrency: int = 8
    seen: list[Delivery] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        results: list[Result] = []
        for delivery in batch:
            self.seen.append(delivery)
            if not delivery.body.startswith(b"{"):
                results.append(PoisonMessage("not JSON"))
            elif delivery.attempt == 1:
                results.append(TransientError("first attempt"))
            else:
                self.done.set()
                results.append(None)
        return results


@contextlib.asynccontextmanager
async def running(handler: Any, url: str) -> AsyncIterator[Runner]:
    runner = Runner(handler, AmqpTransport(url, handler.name))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(runner.ready.wait(), 10)
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def event(tenant: str, kind: str) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC0123",
        subject="CA1",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        data={},
    )


async def test_gateway_and_twiml_worker_answer_a_call_with_their_own_users(
    logins: dict[str, str], rabbit: RabbitClient, captured_logs: CapturedLogs
) -> None:
    """The gateway (publisher + RPC client) and the TwiML worker, each as its service user:
    the call's event is published and the worker's TwiML comes back over RPC."""
    acme = routed_tenant(answer_timeout_ms=3000)
    if await rabbit.queue_exists(tenant_queue("acme")):
        await rabbit.purge(tenant_queue("acme"))
    async with (
        twiml_stack([acme], logins["gateway"]) as stack,
        running(TwimlHandler(StaticTenantRegistry([acme])), logins["twiml"]),
    ):
        params = call_incoming(ACME_SID, 1) | {"To": OFFICE_NUMBER}
        for _ in range(100):  # the RPC client learns of the consumer by polling
            if getattr(stack.rpc, "consumers", 0):
                break
            await asyncio.sleep(0.05)
        response = await stack.post_signed("/twilio/voice", params, ACME_TOKEN)
        status = await stack.post_signed(
            "/twilio/messaging/status", message_status(ACME_SID), ACME_TOKEN
        )
    assert response.status_code == 200 and "<Response>" in response.text
    accepted = {line["path"]: line for line in captured_logs.events("callback_accepted")}
    assert accepted["/twilio/voice"]["twiml"] == "worker"
    assert accepted["/twilio/voice"]["outcome"] == "published"
    assert status.status_code == 204
    kinds = [body["type"] for _, body in await rabbit.read_all(tenant_queue("acme"))]
    assert "io.hookline.message.status" in kinds


async def test_usage_worker_consumes_retries_and_dead_letters_with_its_user(
    logins: dict[str, str], rabbit: RabbitClient
) -> None:
    """An event the gateway user publishes reaches the runtime running as the usage user,
    which retries it through a holding queue and dead-letters a poison message; the operator
    user lists the dead letter."""
    tenant = f"svc-{uuid.uuid4().hex[:6]}"
    publisher = FastAmqpPublisher(logins["gateway"], [tenant])
    await publisher.start()
    await rabbit.purge(USAGE_QUEUE)
    handler = Recorder("usage", USAGE_QUEUE)
    try:
        async with running(handler, logins["usage"]):
            status = event(tenant, "call.status")
            await publisher.publish(status)
            poison_id = str(uuid.uuid4())
            connection = await aio_pika.connect(logins["operator"])
            async with connection:
                channel = await connection.channel()
                await channel.default_exchange.publish(
                    aio_pika.Message(b"garbage", message_id=poison_id), routing_key=USAGE_QUEUE
                )
            await asyncio.wait_for(handler.done.wait(), 15)
            for _ in range(100):
                if any(d.message_id == poison_id for d in handler.seen):
                    break
                await asyncio.sleep(0.05)
    finally:
        await publisher.close()
    assert [d.attempt for d in handler.seen if d.message_id == status.id] == [1, 2]
    dead = await DeadLetters(logins["operator"]).inspect()
    assert poison_id in [message.message_id for message in dead]
    replayed, _ = await DeadLetters(logins["operator"]).replay(message_id=poison_id)
    assert [message.message_id for message in replayed] == [poison_id]


async def test_flows_worker_takes_a_tenants_command_and_publishes_its_result(
    logins: dict[str, str], amqp_url: str, rabbitmq_api_url: str, rabbit: RabbitClient
) -> None:
    """A command published with the tenant's own login reaches the runtime running as the
    flows user, whose publisher may publish the result event to the tenant's queue."""
    tenant = f"svc-{uuid.uuid4().hex[:6]}"
    settings = broker_settings(amqp_url, rabbitmq_api_url, [tenant])
    publisher = FastAmqpPublisher(logins["flows"], [tenant])
    await publisher.start()
    login = await credentials(settings, tenant)
    await rabbit.purge(BOT_COMMANDS_QUEUE)
    handler = Recorder("flows", BOT_COMMANDS_QUEUE)
    try:
        async with running(handler, logins["flows"]):
            async with await aio_pika.connect(login["amqp_url"]) as connection:
                channel = await connection.channel(publisher_confirms=True)
                commands = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
                await commands.publish(
                    aio_pika.Message(b"{}", message_id="cmd-1"),
                    routing_key=f"{tenant}.call.bot",
                    mandatory=True,
                )
            await asyncio.wait_for(handler.done.wait(), 15)
        result = event(tenant, "call.bot.result")
        await publisher.publish(result)
    finally:
        await publisher.close()
        await delete_users(settings, [login["username"]])
    assert [d.routing_key for d in handler.seen] == [f"{tenant}.call.bot"] * 2
    assert [body["id"] for _, body in await rabbit.read_all(tenant_queue(tenant))] == [result.id]


@pytest.mark.parametrize(
    ("service", "queue"),
    [
        ("gateway", DEAD_QUEUE),
        ("gateway", TWIML_QUEUE),
        ("twiml", "tenant"),
        ("twiml", DEAD_QUEUE),
        ("usage", DEAD_QUEUE),
        ("flows", TWIML_QUEUE),
    ],
)
async def test_services_cannot_read_what_they_do_not_declare_or_consume(
    logins: dict[str, str], service: str, queue: str
) -> None:
    """Least privilege: a service reads only the queues it consumes or declares."""
    tenant = f"svc-{uuid.uuid4().hex[:6]}"
    publisher = FastAmqpPublisher(logins["gateway"], [tenant])
    await publisher.start()
    await publisher.close()
    name = tenant_queue(tenant) if queue == "tenant" else queue

    async def consume(channel: Any) -> None:
        declared = await channel.get_queue(name, ensure=False)
        await declared.get(fail=False)

    assert await outcome(logins[service], consume) == "refused"


async def test_the_gateway_user_cannot_publish_commands(logins: dict[str, str]) -> None:
    """The gateway publishes events, not tenants' commands."""

    async def publish(channel: Any) -> None:
        commands = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        await commands.publish(aio_pika.Message(b"{}"), routing_key="acme.call.bot")

    assert await outcome(logins["gateway"], publish) == "refused"
