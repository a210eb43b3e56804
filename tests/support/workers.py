"""Drive the worker runtime in tests on either broker: publish, read queues, run a Runner."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson

from gateway.broker.memory import MemoryBroker, MemoryMessage
from gateway.errors import ConsumerError
from schemas.topology import build_topology
from tests.support.rabbit import RabbitClient
from workers.handler import Delivery, Result
from workers.runner import Runner
from workers.transport import MemoryTransport, Transport


@dataclass(frozen=True, slots=True)
class Seen:
    """A message read back from a queue: body decoded as JSON, headers as plain values."""

    body: Any
    headers: dict[str, Any]
    message_id: str | None
    routing_key: str | None


class Broker(ABC):
    """One broker under test: the embedded one or a RabbitMQ vhost."""

    name: str

    @abstractmethod
    async def publish(self, queue: str, body: Any, **props: Any) -> None: ...

    @abstractmethod
    async def read_all(self, queue: str) -> list[Seen]: ...

    @abstractmethod
    async def queue_length(self, queue: str) -> int: ...

    @abstractmethod
    async def purge(self, *queues: str) -> None: ...

    @abstractmethod
    def transport(self, worker: str) -> Transport: ...

    @abstractmethod
    async def close(self) -> None: ...


class MemoryHarness(Broker):
    name = "memory"

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.broker.declare(build_topology(()))

    async def publish(self, queue: str, body: Any, **props: Any) -> None:
        self.broker.publish(
            MemoryMessage(
                exchange="",
                routing_key=queue,
                body=orjson.dumps(body),
                message_id=props.pop("message_id", ""),
                type="test",
                **props,
            )
        )

    async def read_all(self, queue: str) -> list[Seen]:
        return [
            Seen(orjson.loads(m.body), dict(m.headers), m.message_id or None, m.routing_key)
            for m in self.broker.drain_messages(queue)
        ]

    async def queue_length(self, queue: str) -> int:
        return self.broker.queue_length(queue)

    async def purge(self, *queues: str) -> None:
        for queue in queues:
            self.broker.purge(queue)

    def transport(self, worker: str) -> Transport:
        return MemoryTransport(self.broker)

    async def close(self) -> None:
        return None


class RabbitHarness(Broker):
    name = "rabbitmq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = RabbitClient(url)
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> RabbitHarness:
        from gateway.broker.declare import declare_topology

        await self.client.connect()
        self._connection = await aio_pika.connect(self.url)
        channel = await self._connection.channel()
        await declare_topology(channel, build_topology(()))
        await channel.close()
        return self

    async def publish(self, queue: str, body: Any, **props: Any) -> None:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=True)
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    orjson.dumps(body), delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props
                ),
                routing_key=queue,
                mandatory=True,
            )
        finally:
            await channel.close()

    async def read_all(self, queue: str) -> list[Seen]:
        return [
            Seen(body, dict(props.headers), props.message_id, props.routing_key)
            for props, body in await self.client.read_all(queue)
        ]

    async def queue_length(self, queue: str) -> int:
        return await self.client.queue_length(queue)

    async def purge(self, *queues: str) -> None:
        for queue in queues:
            with contextlib.suppress(Exception):
                await self.client.purge(queue)

    def transport(self, worker: str) -> Transport:
        from workers.amqp_transport import AmqpTransport

        return AmqpTransport(self.url, worker)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        await self.client.close()


Behaviour = Callable[[Delivery], Result]


@dataclass
class RecordingHandler:
    """A handler whose answer per delivery comes from ``behave``; it records every batch."""

    queue: str
    behave: Behaviour = lambda _delivery: None
    name: str = "test"
    batch_size: int = 1
    batch_wait_s: float = 0.0
    concurrency: int = 1
    delay_s: float = 0.0
    batches: list[list[Delivery]] = field(default_factory=list)
    started: int = 0
    closed: int = 0
    raise_error: BaseException | None = None

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        self.batches.append(list(batch))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.raise_error is not None:
            raise self.raise_error
        return [self.behave(delivery) for delivery in batch]

    @property
    def deliveries(self) -> list[Delivery]:
        return [delivery for batch in self.batches for delivery in batch]


@contextlib.asynccontextmanager
async def running(runner: Runner) -> AsyncIterator[asyncio.Event]:
    """Run ``runner`` in a task until the block ends (then stop it and wait for it)."""
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    ready = asyncio.create_task(runner.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the start-up error
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 35)


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Await until ``check()`` (sync or async) returns truthy; fail after ``within`` s."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


def consumer_error(error: ConsumerError) -> Behaviour:
    return lambda _delivery: error
