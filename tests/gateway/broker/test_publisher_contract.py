"""One publisher contract, checked on the embedded broker AND on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from gateway.broker.base import Publisher
from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.errors import PublishError, UnroutableEvent
from gateway.replay import Replayer
from gateway.spool import Spool
from schemas.events import CONTENT_TYPE, Event
from schemas.topology import EVENTS_EXCHANGE, USAGE_QUEUE, Queue, tenant_queue
from tests.support.rabbit import Properties, RabbitClient, TcpProxy, wait_until


def make_event(tenant: str, kind: str = "call.incoming", n: int = 0) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC0123",
        subject=f"SM{n:032d}",
        time=datetime(2026, 11, 23, 8, 0, n % 60, tzinfo=UTC),
        data={"n": n},
    )


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


# What a queue holds, whichever broker: (AMQP properties, decoded envelope) pairs.
Delivered = tuple[Properties, dict[str, Any]]


class MemoryHarness:
    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def publisher(self, tenants: Sequence[str]) -> Publisher:
        return MemoryPublisher(self.broker, tenants)

    async def read(self, queue: str) -> list[Delivered]:
        return [
            (
                Properties(
                    m.message_id,
                    m.content_type,
                    2 if m.persistent else 1,
                    m.routing_key,
                    m.exchange,
                    m.type,
                    m.app_id,
                    m.timestamp,
                    m.headers,
                ),
                m.event().to_dict(),
            )
            for m in self.broker.drain_messages(queue)
        ]

    async def add_queue(self, name: str, pattern: str, arguments: dict[str, str | int]) -> None:
        self.broker.declare_queue(Queue(name, ((EVENTS_EXCHANGE, pattern),), arguments))


class AmqpHarness:
    def __init__(self, url: str, rabbit: RabbitClient) -> None:
        self.url, self.rabbit = url, rabbit

    def publisher(self, tenants: Sequence[str]) -> Publisher:
        return FastAmqpPublisher(self.url, tenants, confirm_timeout=5.0)

    async def read(self, queue: str) -> list[Delivered]:
        return await self.rabbit.read_all(queue)

    async def add_queue(self, name: str, pattern: str, arguments: dict[str, str | int]) -> None:
        await self.rabbit.declare_queue(name, [(EVENTS_EXCHANGE, pattern)], dict(arguments))


Harness = MemoryHarness | AmqpHarness


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.broker)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    # amqp_url is requested lazily so the memory half runs without a broker.
    url = request.getfixturevalue("amqp_url")
    client = await RabbitClient(url).connect()
    try:
        yield AmqpHarness(url, client)
    finally:
        await client.close()


@pytest.fixture
async def started(harness: Harness) -> AsyncIterator[Any]:
    """Factory of started publishers, all closed at teardown."""
    publishers: list[Publisher] = []

    async def start(tenants: Sequence[str]) -> Publisher:
        publisher = harness.publisher(tenants)
        await publisher.start()
        publishers.append(publisher)
        return publisher

    yield start
    for publisher in publishers:
        await publisher.close()


async def test_event_lands_on_its_tenant_queue_only(harness: Harness, started: Any) -> None:
    """An event reaches hookline.tenant.<id> intact and no other tenant's queue."""
    acme, other = tenant(), tenant()
    publisher = await started([acme, other])
    event = make_event(acme)
    await publisher.publish(event)
    [(_, body)] = await harness.read(tenant_queue(acme))
    assert body == event.to_dict()
    assert await harness.read(tenant_queue(other)) == []


async def test_metered_events_also_reach_usage(harness: Harness, started: Any) -> None:
    """Status events and incoming messages (billed per segment) are copied to hookline.usage;
    incoming calls are not (their call.status events meter them)."""
    acme = tenant()
    publisher = await started([acme])
    events = [
        make_event(acme, kind)
        for kind in ("message.status", "call.status", "message.incoming", "call.incoming")
    ]
    for event in events:
        await publisher.publish(event)
    usage = [b["id"] for _, b in await harness.read(USAGE_QUEUE) if b["tenant"] == acme]
    assert usage == [events[0].id, events[1].id, events[2].id]
    assert [b["id"] for _, b in await harness.read(tenant_queue(acme))] == [e.id for e in events]


async def test_message_properties(harness: Harness, started: Any) -> None:
    """Messages are persistent CloudEvents with message_id, type, routing key and tenant header."""
    acme = tenant()
    publisher = await started([acme])
    event = make_event(acme, "call.status")
    await publisher.publish(event)
    [(props, _)] = await harness.read(tenant_queue(acme))
    assert props.delivery_mode == 2  # persistent
    assert props.message_id == event.id
    assert props.content_type == CONTENT_TYPE == "application/cloudevents+json"
    assert (props.exchange, props.routing_key) == ("hookline.events", f"{acme}.twilio.call.status")
    assert props.type == "io.hookline.call.status"
    assert props.app_id == "hookline"
    assert props.timestamp is not None
    assert props.headers["tenant"] == acme  # quorum queues add x-delivery-count


async def test_unroutable_event_raises_and_is_not_delivered(harness: Harness, started: Any) -> None:
    """An event no binding matches raises PublishError naming it, and lands nowhere."""
    acme, ghost = tenant(), tenant()
    publisher = await started([acme])
    event = make_event(ghost, "call.incoming")
    with pytest.raises(UnroutableEvent) as caught:
        await publisher.publish(event)
    assert event.id in str(caught.value)
    assert event.routing_key in str(caught.value)
    assert "unroutable" in str(caught.value)
    assert await harness.read(tenant_queue(acme)) == []
    assert [b for _, b in await harness.read(USAGE_QUEUE) if b["tenant"] == ghost] == []


async def test_same_id_unroutable_twice_at_once_both_raise(harness: Harness, started: Any) -> None:
    """Two concurrent publishes of one unroutable event id both fail (none reported confirmed)."""
    publisher = await started([tenant()])
    event = make_event(tenant())
    results = await asyncio.gather(
        publisher.publish(event), publisher.publish(event), return_exceptions=True
    )
    assert [type(r) for r in results] == [UnroutableEvent, UnroutableEvent]


async def test_full_queue_rejects_the_publish(harness: Harness, started: Any) -> None:
    """A bound queue at its length limit (reject-publish) makes the publish raise, not drop."""
    acme = tenant()
    publisher = await started([acme])
    await harness.add_queue(
        f"full-{acme}",
        f"{acme}.#",
        {"x-queue-type": "classic", "x-max-length": 0, "x-overflow": "reject-publish"},
    )
    event = make_event(acme)
    with pytest.raises(PublishError, match="nack") as caught:
        await publisher.publish(event)
    assert not isinstance(caught.value, UnroutableEvent)  # the queue exists: not a routing fault
    assert event.id in str(caught.value)
    assert await harness.read(f"full-{acme}") == []


async def test_replay_sets_an_unroutable_tenant_aside_and_goes_on(
    harness: Harness, started: Any, tmp_path: Path
) -> None:
    """Spooled events of a tenant without a queue stay spooled and set aside while every other
    event is replayed past them; once the queue exists they follow."""
    acme, ghost = tenant(), tenant()
    publisher = await started([acme])
    # Ghost's first: a whole batch of them at the head of the spool, then acme's.
    events = [make_event(ghost, n=n) for n in range(12)] + [
        make_event(acme, n=n) for n in range(30)
    ]
    spool = await Spool.open(tmp_path)
    try:
        for event in events:
            await spool.put(event)
        replayer = Replayer(
            spool, publisher, batch=10, concurrency=4, unroutable_retry_s=(0.3, 0.3)
        )
        with capture_logs() as logs:
            assert await replayer.drain() == 30
            assert await replayer.drain() == 0  # set aside: not retried before their delay
        assert sorted(b["id"] for _, b in await harness.read(tenant_queue(acme))) == sorted(
            e.id for e in events[12:]
        )
        assert (spool.count(), replayer.parked, replayer.last_error) == (12, 12, None)
        parked = [line for line in logs if line["event"] == "spool_event_unroutable"]
        assert sorted(line["event_id"] for line in parked) == sorted(e.id for e in events[:12])
        assert all(line["routing_key"].startswith(f"{ghost}.") for line in parked)
        await harness.add_queue(tenant_queue(ghost), f"{ghost}.#", {})
        await asyncio.sleep(0.35)
        assert await replayer.drain() == 12
        assert (spool.count(), replayer.parked) == (0, 0)
        assert sorted(b["id"] for _, b in await harness.read(tenant_queue(ghost))) == sorted(
            e.id for e in events[:12]
        )
    finally:
        await spool.close()


async def test_declaring_the_topology_twice_keeps_messages(harness: Harness, started: Any) -> None:
    """A second start re-declares the topology idempotently; queued events survive it."""
    acme = tenant()
    first = await started([acme])
    before = make_event(acme)
    await first.publish(before)
    second = await started([acme])  # declares the same exchanges, queues and bindings again
    after = make_event(acme)
    await second.publish(after)
    assert [b["id"] for _, b in await harness.read(tenant_queue(acme))] == [before.id, after.id]


async def test_500_concurrent_publishes_all_confirmed(harness: Harness, started: Any) -> None:
    """500 publishes in flight at once on one channel are all confirmed and all delivered."""
    acme = tenant()
    publisher = await started([acme])
    events = [make_event(acme, n=n) for n in range(500)]
    results = await asyncio.gather(*(publisher.publish(e) for e in events))
    assert results == [None] * 500
    delivered = await harness.read(tenant_queue(acme))
    assert sorted(b["id"] for _, b in delivered) == sorted(e.id for e in events)


async def test_close_lets_in_flight_publishes_finish(harness: Harness, started: Any) -> None:
    """close() waits for publishes in flight: all confirmed and delivered, none cancelled."""
    acme = tenant()
    publisher = await started([acme])
    events = [make_event(acme, n=n) for n in range(200)]
    tasks = [asyncio.create_task(publisher.publish(event)) for event in events]
    await asyncio.sleep(0)  # every task is now in flight
    await publisher.close()
    assert await asyncio.gather(*tasks, return_exceptions=True) == [None] * 200
    delivered = await harness.read(tenant_queue(acme))
    assert sorted(b["id"] for _, b in delivered) == sorted(e.id for e in events)


async def test_ready_and_publish_through_the_lifecycle(harness: Harness) -> None:
    """ready is False before start, True after, False after close; closed publishers refuse."""
    acme = tenant()
    publisher = harness.publisher([acme])
    states = [publisher.ready]
    with pytest.raises(PublishError, match="not started"):
        await publisher.publish(make_event(acme))
    await publisher.start()
    states.append(publisher.ready)
    await publisher.close()
    await publisher.close()  # idempotent
    states.append(publisher.ready)
    assert states == [False, True, False]
    event = make_event(acme)
    with pytest.raises(PublishError, match="closed") as caught:
        await publisher.publish(event)
    assert event.id in str(caught.value)
    assert await harness.read(tenant_queue(acme)) == []


# -- AMQP only: outages, through a TCP proxy the test can pause or cut ------------------------


@pytest.mark.broker
async def test_amqp_hung_broker_times_out(broker_proxy: TcpProxy) -> None:
    """A broker that stops answering makes publish raise PublishError after confirm_timeout."""
    acme = tenant()
    publisher = FastAmqpPublisher(broker_proxy.url, [acme], confirm_timeout=0.3)
    await publisher.start()
    loop = asyncio.get_running_loop()
    try:
        broker_proxy.pause()
        event = make_event(acme)
        began = loop.time()
        with pytest.raises(PublishError, match=r"no confirm within 0\.3 s") as caught:
            await publisher.publish(event)
        assert loop.time() - began < 1.0
        assert event.id in str(caught.value)
    finally:
        broker_proxy.resume()
        await publisher.close()


@pytest.mark.broker
async def test_amqp_connection_loss_fails_fast_then_recovers(
    broker_proxy: TcpProxy, rabbit: RabbitClient, amqp_url: str
) -> None:
    """On connection loss ready drops and publish fails at once; after reconnection both recover."""
    acme = tenant()
    publisher = FastAmqpPublisher(broker_proxy.url, [acme], reconnect_interval=0.1)
    with capture_logs() as logs:
        await publisher.start()
        broker_proxy.accepting = False
        broker_proxy.sever()
        await wait_until(lambda: not publisher.ready)
        began = asyncio.get_running_loop().time()
        with pytest.raises(PublishError, match="broker connection down"):
            await publisher.publish(make_event(acme))
        assert asyncio.get_running_loop().time() - began < 0.1
        broker_proxy.accepting = True
        await wait_until(lambda: publisher.ready)
        later = make_event(acme)
        await publisher.publish(later)
        await publisher.close()
    assert [p.message_id for p, _ in await rabbit.read_all(tenant_queue(acme))] == [later.id]
    events = [entry["event"] for entry in logs]
    assert {"broker_connected", "broker_connection_lost", "broker_reconnected"} <= set(events)
    password = urlsplit(amqp_url).password
    assert password is None or f":{password}@" not in repr(logs)


async def test_amqp_start_unreachable_raises_without_password() -> None:
    """start() against no broker raises PublishError with the masked URL, never the password."""
    publisher = FastAmqpPublisher(
        "amqp://hook:s3cr3t-pw@127.0.0.1:9/", ["acme"], connect_timeout=1.0
    )
    with pytest.raises(PublishError) as caught:
        await publisher.start()
    assert "amqp://hook:***@127.0.0.1:9/" in str(caught.value)
    assert "s3cr3t-pw" not in str(caught.value)
    assert publisher.ready is False
