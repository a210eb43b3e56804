"""The embedded in-process broker (``HOOKLINE_AMQP_URL=memory://``) and the test publishers.

``MemoryBroker`` keeps RabbitMQ's semantics where hookline depends on them, so that code tested
against it behaves the same on the real broker (the contract tests run on both):

* topic routing with ``*`` and ``#`` (``schemas.topology.topic_matches``);
* a message no queue is bound for is refused, like a ``mandatory`` publish that comes back as
  ``basic.return`` (https://www.rabbitmq.com/docs/publishers#unroutable);
* queues are bounded and refuse publishes when full, like ``x-overflow: reject-publish`` with
  publisher confirms (a ``basic.nack``): nothing is ever dropped silently.
  https://www.rabbitmq.com/docs/maxlength#overflow-behaviour

Unlike RabbitMQ a refused publish is all-or-nothing: when one matched queue is full the message
is stored in none of them, so a retry never duplicates it into the others.

Everything runs on the caller's event loop thread; no lock is needed because no method awaits
between reading and changing a queue. This module must not import aio-pika.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from gateway.errors import PublishError, UnroutableEvent
from schemas.events import CONTENT_TYPE, Event
from schemas.topology import EVENTS_EXCHANGE, Queue, Topology, build_topology, topic_matches

DEFAULT_MAX_LENGTH: Final = 100_000
APP_ID: Final = "hookline"


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """One stored message with the AMQP properties hookline sets on the real broker."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    type: str
    content_type: str = CONTENT_TYPE
    persistent: bool = True
    app_id: str = APP_ID
    headers: dict[str, object] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    reply_to: str | None = None
    correlation_id: str | None = None

    @classmethod
    def from_event(cls, event: Event, exchange: str = EVENTS_EXCHANGE) -> MemoryMessage:
        return cls(
            exchange=exchange,
            routing_key=event.routing_key,
            body=event.to_json(),
            message_id=event.id,
            type=event.type,
            headers={"tenant": event.tenant},
        )

    def event(self) -> Event:
        """Parse the body back: the embedded broker stores bytes, as the wire would."""
        return Event.from_json(self.body)


@dataclass(slots=True)
class _Queue:
    name: str
    max_length: int
    arguments: dict[str, str | int]
    messages: deque[MemoryMessage] = field(default_factory=deque)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)
    consumers: int = 0

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()


class MemoryBroker:
    """Exchanges, bounded queues and bindings held in memory."""

    def __init__(self, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self._default_max_length = max_length
        self._exchanges: dict[str, str] = {}  # name -> type
        self._queues: dict[str, _Queue] = {}
        self._bindings: dict[str, list[tuple[str, str]]] = {}  # exchange -> [(pattern, queue)]

    # -- declaration (idempotent, like queue.declare / exchange.declare) --------------------

    def declare(self, topology: Topology) -> None:
        for exchange in topology.exchanges:
            self.declare_exchange(exchange.name, exchange.type)
        for queue in topology.queues:
            self.declare_queue(queue)

    def declare_exchange(self, name: str, type: str = "topic") -> None:
        if type not in ("topic", "direct", "fanout"):
            raise ValueError(f"exchange {name!r}: unsupported type {type!r}")
        existing = self._exchanges.setdefault(name, type)
        if existing != type:
            # RabbitMQ answers PRECONDITION_FAILED for an inequivalent redeclaration.
            raise ValueError(f"exchange {name!r} exists with type {existing!r}, not {type!r}")

    def declare_queue(self, queue: Queue) -> None:
        """Declare a queue and its bindings; ``x-max-length`` in its arguments bounds it."""
        limit = queue.arguments.get("x-max-length", self._default_max_length)
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(
                f"queue {queue.name!r}: x-max-length must be an int >= 0, got {limit!r}"
            )
        existing = self._queues.get(queue.name)
        if existing is None:
            self._queues[queue.name] = _Queue(queue.name, limit, dict(queue.arguments))
        elif existing.arguments != queue.arguments:
            raise ValueError(
                f"queue {queue.name!r} exists with arguments {existing.arguments!r}, "
                f"not {queue.arguments!r}"
            )
        for exchange, pattern in queue.bindings:
            self.bind(queue.name, exchange, pattern)

    def bind(self, queue: str, exchange: str, pattern: str) -> None:
        if exchange not in self._exchanges:
            raise ValueError(f"cannot bind {queue!r}: no exchange {exchange!r}")
        self._queue(queue)
        bindings = self._bindings.setdefault(exchange, [])
        if (pattern, queue) not in bindings:
            bindings.append((pattern, queue))

    # -- publishing ------------------------------------------------------------------------

    def route(self, exchange: str, routing_key: str) -> list[str]:
        """Names of the queues a message would reach, each once, in binding order."""
        kind = self._exchanges.get(exchange)
        if kind is None:
            return []
        matched: dict[str, None] = {}
        for pattern, queue in self._bindings.get(exchange, []):
            if (
                kind == "fanout"
                or (kind == "direct" and pattern == routing_key)
                or (kind == "topic" and topic_matches(pattern, routing_key))
            ):
                matched[queue] = None
        return list(matched)

    def publish(self, message: MemoryMessage) -> None:
        """Store ``message`` in every matched queue, or in none and raise PublishError."""

        def failure(cause: str, kind: type[PublishError] = PublishError) -> PublishError:
            return kind(
                f"event {message.message_id} ({message.routing_key}) not published: {cause}"
            )

        if message.exchange == "":
            # The default exchange: every queue is bound by its own name.
            named = self._queues.get(message.routing_key)
            targets = [named] if named is not None else []
        elif message.exchange not in self._exchanges:
            raise failure(f"no exchange {message.exchange!r} (NOT_FOUND)")
        else:
            targets = [
                self._queues[name] for name in self.route(message.exchange, message.routing_key)
            ]
        if not targets:
            raise failure(
                f"unroutable, no queue bound on {message.exchange} matches it (returned)",
                UnroutableEvent,
            )
        full = [queue.name for queue in targets if len(queue.messages) >= queue.max_length]
        if full:
            raise failure(
                f"queue {', '.join(full)} full (x-max-length reached, reject-publish, nacked)"
            )
        for queue in targets:
            queue.messages.append(message)
            queue.wake()

    # -- reading -----------------------------------------------------------------------------

    def get_message(self, queue: str) -> MemoryMessage | None:
        messages = self._queue(queue).messages
        return messages.popleft() if messages else None

    def get(self, queue: str) -> Event | None:
        message = self.get_message(queue)
        return message.event() if message else None

    def drain_messages(self, queue: str) -> list[MemoryMessage]:
        messages = self._queue(queue).messages
        drained = list(messages)
        messages.clear()
        return drained

    def drain(self, queue: str) -> list[Event]:
        return [message.event() for message in self.drain_messages(queue)]

    async def consume_messages(self, queue: str) -> AsyncGenerator[MemoryMessage, None]:
        """Yield messages as they arrive, forever; competing consumers share the queue."""
        state = self._queue(queue)
        state.consumers += 1
        try:
            while True:
                while state.messages:
                    yield state.messages.popleft()
                # A fresh future per wait keeps the broker independent of any one event loop.
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                state.waiters.add(waiter)
                try:
                    await waiter
                finally:
                    state.waiters.discard(waiter)
        finally:
            state.consumers -= 1

    def consumer_count(self, queue: str) -> int:
        """Consumers iterating ``consume_messages(queue)`` now (0 for an unknown queue)."""
        state = self._queues.get(queue)
        return state.consumers if state is not None else 0

    async def consume(self, queue: str) -> AsyncGenerator[Event, None]:
        async for message in self.consume_messages(queue):
            yield message.event()

    def declare_private(self, name: str) -> None:
        """A queue reached only through the default exchange (an RPC reply queue)."""
        if name not in self._queues:
            self._queues[name] = _Queue(name, self._default_max_length, {})

    def delete_queue(self, name: str) -> None:
        """Remove a queue and its bindings; its waiting consumers see no more messages."""
        self._queues.pop(name, None)
        for bindings in self._bindings.values():
            bindings[:] = [(pattern, queue) for pattern, queue in bindings if queue != name]

    def queue_length(self, name: str) -> int:
        return len(self._queue(name).messages)

    def purge(self, name: str) -> int:
        return len(self.drain_messages(name))

    @property
    def queue_names(self) -> list[str]:
        return list(self._queues)

    @property
    def exchange_names(self) -> list[str]:
        return list(self._exchanges)

    def _queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise KeyError(f"no queue {name!r} declared on the memory broker") from None


class MemoryPublisher:
    """Publisher on a MemoryBroker, with the same contract as FastAmqpPublisher."""

    def __init__(self, broker: MemoryBroker, tenant_ids: Sequence[str]) -> None:
        self.broker = broker
        self._tenant_ids = tuple(tenant_ids)
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise PublishError("memory publisher is closed; create a new one")
        self.broker.declare(build_topology(self._tenant_ids))
        self._started = True

    async def close(self) -> None:
        self._closed = True

    @property
    def ready(self) -> bool:
        return self._started and not self._closed

    async def publish(self, event: Event) -> None:
        if not self.ready:
            state = "closed" if self._closed else "not started"
            raise PublishError(
                f"event {event.id} ({event.routing_key}) not published: publisher {state}"
            )
        self.broker.publish(MemoryMessage.from_event(event))


class FailingPublisher:
    """A publisher whose broker is always down: for tests of outage behaviour (spooling)."""

    def __init__(self, reason: str = "broker unreachable (FailingPublisher)") -> None:
        self.reason = reason
        self.attempts: list[Event] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        return False

    async def publish(self, event: Event) -> None:
        self.attempts.append(event)
        raise PublishError(f"event {event.id} ({event.routing_key}) not published: {self.reason}")
