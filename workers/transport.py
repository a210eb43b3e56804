"""What the consumer runtime needs from a broker, and its embedded (``memory://``) version.

``workers.runner`` drives a ``Transport``: it is handed deliveries, then settles each one
exactly once (ack, retry later, dead-letter) and may publish an RPC reply first. The RabbitMQ
transport lives in ``workers.runner`` (the one worker module allowed to import aio-pika); the
memory transport here runs the same runtime inside ``hookline run`` with nothing installed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Protocol

from gateway.broker.memory import MemoryBroker, MemoryMessage
from gateway.errors import HooklineError, PublishError
from schemas.topology import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    WORKER_HEADER,
)
from workers.handler import Delivery, RpcReply
from workers.numbers import ascii_int

#: Error texts in headers are cut here: a header is for a person reading ``dead list``.
MAX_ERROR_CHARS: Final = 500


class BrokerUnavailable(HooklineError):
    """A worker cannot reach its broker (yet): the runtime retries with back-off."""

    reason = "broker_unavailable"


@dataclass(frozen=True, slots=True)
class Inbound:
    """A delivery plus the transport's own handle to settle it (an aio-pika message, ...)."""

    delivery: Delivery
    handle: object = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message is given up: written into its headers in ``hookline.dead``."""

    reason: str
    error: str
    queue: str
    worker: str
    attempts: int

    def headers(self) -> dict[str, object]:
        return {
            REASON_HEADER: self.reason,
            ERROR_HEADER: self.error[:MAX_ERROR_CHARS],
            QUEUE_HEADER: self.queue,
            WORKER_HEADER: self.worker,
            ATTEMPT_HEADER: self.attempts,
            DEAD_AT_HEADER: datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }


Deliver = Callable[[Inbound], None]


class Transport(Protocol):
    """A broker seen by one runner: one queue consumed, messages settled one by one."""

    async def open(self, queue: str, prefetch: int, deliver: Deliver) -> None:
        """Connect, declare what the queue needs, start consuming into ``deliver``."""

    async def stop_consuming(self) -> None:
        """No new deliveries from now on; delivered ones can still be settled."""

    async def ack(self, inbound: Inbound) -> None: ...

    async def retry(self, inbound: Inbound, delay_s: int, next_attempt: int) -> None:
        """Have the message delivered again after ``delay_s`` as attempt ``next_attempt``,
        then ack this delivery (the copy is safe before the original goes)."""

    async def dead_letter(self, inbound: Inbound, dead: DeadLetter) -> None:
        """Publish the message to ``hookline.dlx`` with ``dead.headers()``, then ack it."""

    async def reply(self, inbound: Inbound, reply: RpcReply) -> None:
        """Publish ``reply`` to the delivery's ``reply_to`` with its ``correlation_id``."""

    async def close(self) -> None:
        """Close; deliveries not settled go back to the queue (RabbitMQ) or are dropped."""


def attempt_of(headers: Mapping[str, object]) -> int:
    """The attempt number the runtime wrote, 1 when absent or not a positive integer."""
    attempt = ascii_int(headers.get(ATTEMPT_HEADER), default=1)
    return attempt if attempt >= 1 else 1


def original_routing_key(
    routing_key: str, headers: Mapping[str, object], exchange: str | None
) -> str:
    """The routing key the message was first published with (retries travel by queue name).

    The header is believed only on a message that came through the default exchange (``""``):
    the runtime's retries and ``dead replay`` come that way, and no tenant may publish there.
    A tenant publishing to ``hookline.commands`` sets any header it likes: there the real
    routing key, which broker permissions restrict to the tenant's own prefix, wins.
    """
    if exchange:  # a named exchange: a publisher's own routing key
        return routing_key
    value = headers.get(ROUTING_KEY_HEADER)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else routing_key


class MemoryTransport:
    """The runtime on the embedded broker: same settlement, in-process.

    Retries wait on the event loop (``call_later``) instead of a holding queue; like everything
    on ``memory://`` they live only as long as the process.
    """

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._queue = ""
        self._task: asyncio.Task[None] | None = None
        self._credit: asyncio.Semaphore | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def open(self, queue: str, prefetch: int, deliver: Deliver) -> None:
        from schemas.topology import build_topology

        # The work queues and the dead-letter queue exist whatever the tenants are.
        self._broker.declare(build_topology(()))
        self._queue = queue
        self._broker.declare_private(queue)  # a no-op for the queues of the topology
        self._credit = asyncio.Semaphore(prefetch)
        self._task = asyncio.create_task(self._consume(deliver), name=f"consume-{queue}")

    async def _consume(self, deliver: Deliver) -> None:
        credit = self._credit
        if credit is None:
            raise RuntimeError("MemoryTransport.open() was not called")
        stream = self._broker.consume_messages(self._queue)
        async with contextlib.aclosing(stream):
            while True:
                await credit.acquire()  # prefetch: at most that many unsettled
                message = await anext(stream)
                deliver(Inbound(_delivery(message), message))

    async def stop_consuming(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _settled(self) -> None:
        if self._credit is not None:
            self._credit.release()

    async def ack(self, inbound: Inbound) -> None:
        self._settled()

    async def retry(self, inbound: Inbound, delay_s: int, next_attempt: int) -> None:
        message = _message(inbound)
        headers = {
            **message.headers,
            ATTEMPT_HEADER: next_attempt,
            ROUTING_KEY_HEADER: inbound.delivery.routing_key,
        }
        copy = replace(message, exchange="", routing_key=self._queue, headers=headers)

        def publish() -> None:
            self._timers.discard(timer)
            with contextlib.suppress(PublishError, KeyError):
                self._broker.publish(copy)

        timer = asyncio.get_running_loop().call_later(delay_s, publish)
        self._timers.add(timer)
        self._settled()

    async def dead_letter(self, inbound: Inbound, dead: DeadLetter) -> None:
        from schemas.topology import DEAD_LETTER_EXCHANGE

        message = _message(inbound)
        headers = {
            **message.headers,
            **dead.headers(),
            ROUTING_KEY_HEADER: inbound.delivery.routing_key,
        }
        self._broker.publish(
            replace(
                message,
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=inbound.delivery.routing_key,
                headers=headers,
                reply_to=None,
            )
        )
        self._settled()

    async def reply(self, inbound: Inbound, reply: RpcReply) -> None:
        delivery = inbound.delivery
        if not delivery.reply_to:
            return
        message = MemoryMessage(
            exchange="",
            routing_key=delivery.reply_to,
            body=reply.body,
            message_id=delivery.correlation_id or "",
            type="reply",
            content_type=reply.content_type,
            persistent=False,
            headers=dict(reply.headers),
            correlation_id=delivery.correlation_id,
        )
        # The requester may be gone (its reply queue deleted): a reply nobody waits for.
        with contextlib.suppress(PublishError):
            self._broker.publish(message)

    async def close(self) -> None:
        await self.stop_consuming()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()


def _message(inbound: Inbound) -> MemoryMessage:
    if not isinstance(inbound.handle, MemoryMessage):
        raise TypeError(f"not a memory delivery: {type(inbound.handle).__name__}")
    return inbound.handle


def _delivery(message: MemoryMessage) -> Delivery:
    headers = dict(message.headers)
    return Delivery(
        body=message.body,
        routing_key=original_routing_key(message.routing_key, headers, message.exchange),
        message_id=message.message_id or None,
        content_type=message.content_type,
        headers=headers,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        attempt=attempt_of(headers),
    )
