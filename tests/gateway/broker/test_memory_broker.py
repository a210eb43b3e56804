"""The embedded broker: RabbitMQ's topic routing, bounded queues, consumers; and the factory."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import aio_pika
import pytest

from gateway.broker.factory import create_publisher
from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.memory import (
    DEFAULT_MAX_LENGTH,
    FailingPublisher,
    MemoryBroker,
    MemoryMessage,
    MemoryPublisher,
)
from gateway.errors import ConfigError, PublishError
from schemas.events import Event
from schemas.topology import EVENTS_EXCHANGE, Queue, build_topology, tenant_queue


def make_event(tenant: str = "acme", kind: str = "message.status", n: int = 0) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC0123",
        subject=f"SM{n}",
        time=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        data={"n": n, "raw": {"x": "1"}},
    )


def broker_with(pattern: str, *, exchange_type: str = "topic") -> MemoryBroker:
    broker = MemoryBroker()
    broker.declare_exchange("x", exchange_type)
    broker.declare_queue(Queue("q", (("x", pattern),)))
    return broker


@pytest.mark.parametrize(
    ("pattern", "key", "routed"),
    [
        ("acme.#", "acme.twilio.message.status", True),
        ("acme.#", "acme", True),  # '#' matches zero words
        ("acme.#", "acmex.twilio", False),  # words, not prefixes
        ("*.*.message.status", "acme.twilio.message.status", True),
        ("*.*.message.status", "acme.message.status", False),  # '*' is exactly one word
        ("*", "", False),  # RabbitMQ: "" is zero words
        ("#", "", True),
        ("", "", True),
        ("*", "a.b", False),
        ("#.a", "a", True),
        ("a.#.b", "a.b", True),
        ("a.#.#.b", "a.x.y.b", True),
        ("a.*.b", "a..b", True),  # an empty word is still a word
        ("a..b", "a..b", True),
        ("a.*", "a.", True),
        ("a.*", "a", False),
    ],
)
def test_topic_routing_edge_cases(pattern: str, key: str, routed: bool) -> None:
    """Topic matching follows RabbitMQ for *, #, empty words and the empty key."""
    assert (broker_with(pattern).route("x", key) == ["q"]) is routed


@pytest.mark.broker
async def test_topic_routing_equals_rabbitmq(amqp_url: str) -> None:
    """Every pattern and key of up to 3 words routes the same on the memory broker and RabbitMQ."""

    def words(alphabet: list[str]) -> list[str]:
        return sorted(
            {".".join(words) for n in (1, 2, 3) for words in itertools.product(alphabet, repeat=n)}
        )

    patterns, keys = words(["a", "*", "#", ""]), words(["a", "b", ""])
    memory = MemoryBroker()
    memory.declare_exchange("x", "topic")
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "probe", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queues = []
        for i, pattern in enumerate(patterns):
            queue = await channel.declare_queue("", exclusive=True)
            await queue.bind(exchange, routing_key=pattern)
            queues.append(queue)
            memory.declare_queue(Queue(f"q{i}", (("x", pattern),)))
        for key in keys:
            await exchange.publish(aio_pika.Message(key.encode()), routing_key=key)
        # Publishes were confirmed, so every routed copy is already enqueued.
        for i, queue in enumerate(queues):
            expected = {key for key in keys if f"q{i}" in memory.route("x", key)}
            got = set()
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                got.add(message.body.decode())
            assert got == expected, f"pattern {patterns[i]!r}"
    finally:
        await connection.close()


def test_direct_and_fanout_exchanges() -> None:
    """Direct exchanges match the key exactly; fanout ones ignore it."""
    assert broker_with("a.*", exchange_type="direct").route("x", "a.b") == []
    assert broker_with("a.b", exchange_type="direct").route("x", "a.b") == ["q"]
    assert broker_with("ignored", exchange_type="fanout").route("x", "any.key") == ["q"]


def test_redeclaring_is_idempotent_but_not_inequivalent() -> None:
    """Declaring the same topology twice changes nothing; other arguments are refused."""
    broker = MemoryBroker()
    broker.declare(build_topology(["acme"]))
    broker.declare(build_topology(["acme"]))
    broker.publish(MemoryMessage.from_event(make_event("acme", "message.incoming")))
    assert broker.queue_length(tenant_queue("acme")) == 1  # one binding, stored once
    with pytest.raises(ValueError, match="arguments"):
        broker.declare_queue(Queue(tenant_queue("acme"), (), {"x-queue-type": "classic"}))
    with pytest.raises(ValueError, match="type"):
        broker.declare_exchange(EVENTS_EXCHANGE, "fanout")


def test_stored_event_round_trips() -> None:
    """A stored event comes back equal, through its JSON bytes as on the wire."""
    broker = broker_with("#")
    event = make_event()
    broker.publish(MemoryMessage.from_event(event, "x"))
    assert broker.queue_length("q") == 1
    assert broker.get("q") == event
    assert broker.get("q") is None


def test_default_bound_then_overflow_rejects() -> None:
    """Queues hold 100_000 messages by default; one more is rejected with PublishError."""
    broker = broker_with("#")
    message = MemoryMessage.from_event(make_event(), "x")
    for _ in range(DEFAULT_MAX_LENGTH):
        broker.publish(message)
    with pytest.raises(PublishError, match="full"):
        broker.publish(message)
    assert broker.queue_length("q") == DEFAULT_MAX_LENGTH


def test_overflow_is_all_or_nothing_and_recovers() -> None:
    """When one matched queue is full no queue gets the message; draining makes room again."""
    broker = MemoryBroker()
    broker.declare_exchange("x")
    broker.declare_queue(Queue("small", (("x", "#"),), {"x-max-length": 2}))
    broker.declare_queue(Queue("big", (("x", "#"),)))
    events = [make_event(n=n) for n in range(3)]
    for event in events[:2]:
        broker.publish(MemoryMessage.from_event(event, "x"))
    with pytest.raises(PublishError, match=f"{events[2].id}.*small full"):
        broker.publish(MemoryMessage.from_event(events[2], "x"))
    assert (broker.queue_length("small"), broker.queue_length("big")) == (2, 2)
    assert broker.drain("small") == events[:2]
    broker.publish(MemoryMessage.from_event(events[2], "x"))
    assert broker.drain("big") == events
    assert broker.purge("small") == 1


def test_unknown_queue_and_exchange_are_errors() -> None:
    """Reading an undeclared queue is a KeyError; publishing to a missing exchange raises."""
    broker = MemoryBroker()
    with pytest.raises(KeyError, match="nope"):
        broker.queue_length("nope")
    with pytest.raises(PublishError, match="NOT_FOUND"):
        broker.publish(MemoryMessage.from_event(make_event(), "missing"))


async def test_consume_yields_in_order_and_waits() -> None:
    """consume() yields queued events in order, then waits for new ones without spinning."""
    broker = broker_with("#")
    events = [make_event(n=n) for n in range(4)]
    broker.publish(MemoryMessage.from_event(events[0], "x"))
    stream = broker.consume("q")
    assert await anext(stream) == events[0]
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.01)
    assert not pending.done()  # nothing queued: the consumer is parked
    for event in events[1:]:
        broker.publish(MemoryMessage.from_event(event, "x"))
    assert await asyncio.wait_for(pending, 1) == events[1]
    assert [await anext(stream), await anext(stream)] == events[2:]
    assert broker.queue_length("q") == 0
    await stream.aclose()


async def test_competing_consumers_share_the_queue() -> None:
    """Two consumers of one queue each get distinct events, together all of them."""
    broker = broker_with("#")
    events = [make_event(n=n) for n in range(10)]

    async def take(count: int) -> list[Event]:
        stream = broker.consume("q")
        taken = [await anext(stream) for _ in range(count)]
        await stream.aclose()
        return taken

    consumers = asyncio.gather(take(5), take(5))
    await asyncio.sleep(0)
    for event in events:
        broker.publish(MemoryMessage.from_event(event, "x"))
    first, second = await asyncio.wait_for(consumers, 1)
    assert sorted(e.id for e in first + second) == sorted(e.id for e in events)
    assert not {e.id for e in first} & {e.id for e in second}


async def test_failing_publisher_always_raises() -> None:
    """FailingPublisher is never ready, raises PublishError and records each attempt."""
    publisher = FailingPublisher()
    await publisher.start()
    event = make_event()
    with pytest.raises(PublishError, match=event.id):
        await publisher.publish(event)
    assert publisher.ready is False
    assert publisher.attempts == [event]


async def test_factory_picks_the_publisher() -> None:
    """memory:// gives a MemoryPublisher on the given broker; amqp(s):// a FastAmqpPublisher."""
    broker = MemoryBroker()
    publisher = create_publisher("memory://", ["acme"], memory_broker=broker)
    assert isinstance(publisher, MemoryPublisher) and publisher.broker is broker
    await publisher.start()
    assert tenant_queue("acme") in broker.queue_names
    assert isinstance(create_publisher("amqp://u:p@h/", ["acme"]), FastAmqpPublisher)
    assert isinstance(create_publisher("AMQPS://u:p@h:5671/v", ["acme"]), FastAmqpPublisher)


@pytest.mark.parametrize("url", ["redis://u:hunter2@h/", "h:5672", "", "memry://"])
def test_factory_rejects_other_schemes(url: str) -> None:
    """Any other scheme is a ConfigError naming HOOKLINE_AMQP_URL and the scheme, not secrets."""
    with pytest.raises(ConfigError, match="HOOKLINE_AMQP_URL") as caught:
        create_publisher(url, [])
    assert "hunter2" not in str(caught.value)
    assert "got scheme" in str(caught.value)


def test_factory_refuses_a_memory_broker_with_amqp() -> None:
    """A memory broker passed with an AMQP URL is a configuration mistake, reported as such."""
    with pytest.raises(ConfigError, match="memory"):
        create_publisher("amqp://h/", [], memory_broker=MemoryBroker())


def test_memory_mode_never_imports_aio_pika() -> None:
    """Creating and using the memory publisher loads no aio-pika module (hookline run)."""
    code = (
        "import asyncio, sys; from gateway.broker.factory import create_publisher; "
        "p = create_publisher('memory://', ['acme']); asyncio.run(p.start()); "
        "print(sorted(m for m in sys.modules if m.startswith(('aio_pika', 'aiormq'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout.strip() == "[]"


def test_default_exchange_routes_by_queue_name() -> None:
    """Exchange "" reaches the queue named by the routing key, and only when it exists."""
    broker = MemoryBroker()
    broker.declare_private("replies")
    message = MemoryMessage(
        exchange="",
        routing_key="replies",
        body=b"x",
        message_id="m",
        type="reply",
        correlation_id="c1",
        reply_to=None,
    )
    broker.publish(message)
    assert broker.get_message("replies") == message
    broker.delete_queue("replies")
    with pytest.raises(PublishError, match="unroutable"):
        broker.publish(message)


async def test_consumer_count_follows_consumers() -> None:
    """consumer_count counts live consume_messages iterations (the RPC no-worker check)."""
    broker = MemoryBroker()
    broker.declare_private("q")
    assert broker.consumer_count("q") == 0 and broker.consumer_count("nowhere") == 0
    stream = broker.consume_messages("q")
    task = asyncio.create_task(anext(stream))
    await asyncio.sleep(0)
    assert broker.consumer_count("q") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert broker.consumer_count("q") == 0
