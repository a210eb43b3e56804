"""The worker runtime on RabbitMQ: ``AmqpTransport``, the Transport of ``workers.runner``.

One robust aio-pika connection per runner, a consuming channel with the runner's prefetch, a
confirming channel for retries and dead letters (the copy must be safe before the original is
acked) and a plain channel for RPC replies. The only worker module that imports aio-pika.
https://www.rabbitmq.com/docs/confirms#consumer-acknowledgements

Stopping never waits on the broker without a bound: while the connection is down, aio-pika's
robust connection keeps reconnecting and a consumer cancel or a close waits for it, so a worker
told to stop (SIGTERM) during an outage would otherwise run until it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from gateway.broker.dead import persistent_copy
from gateway.broker.declare import declare_topology
from gateway.broker.failures import connect_failure
from gateway.errors import ConfigError, ConsumerError
from schemas.topology import (
    ATTEMPT_HEADER,
    DEAD_LETTER_EXCHANGE,
    RETRY_DELAYS_S,
    ROUTING_KEY_HEADER,
    Topology,
    build_topology,
    retry_queues,
)
from workers.handler import Delivery, RpcReply
from workers.transport import (
    BrokerUnavailable,
    DeadLetter,
    Deliver,
    Inbound,
    attempt_of,
    original_routing_key,
)

#: How long cancelling the consumer and closing the connection may wait for the broker.
STOP_TIMEOUT_S: Final = 2.0
CLOSE_TIMEOUT_S: Final = 5.0


class AmqpTransport:
    """The runtime on RabbitMQ: one robust connection, a consuming channel with prefetch, a
    confirming channel for retries and dead letters (the copy must be safe before the original
    is acked) and a plain channel for RPC replies (a lost reply only means the fallback)."""

    def __init__(self, url: str, worker: str, *, connect_timeout: float = 5.0) -> None:
        self._url, self._worker, self._connect_timeout = url, worker, connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._confirming: AbstractChannel | None = None
        self._replies: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._holding: set[int] = set()  # delays whose holding queue is declared

    async def open(self, queue: str, prefetch: int, deliver: Deliver) -> None:
        try:
            self._connection = await aio_pika.connect_robust(
                self._url,
                timeout=self._connect_timeout,
                client_properties={"connection_name": f"hookline-worker-{self._worker}"},
            )
        except Exception as exc:
            raise BrokerUnavailable(
                f"worker {self._worker}: {connect_failure(exc, self._url, self._connect_timeout)}"
            ) from None
        consuming = await self._connection.channel()
        await consuming.set_qos(prefetch_count=prefetch)
        self._confirming = await self._connection.channel(publisher_confirms=True)
        self._replies = await self._connection.channel(publisher_confirms=False)
        await declare_topology(self._confirming, self._topology(queue))
        self._holding.update(RETRY_DELAYS_S if _has_holding(queue) else ())
        self._queue = await consuming.declare_queue(queue, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            deliver(Inbound(_amqp_delivery(message), message))

        self._tag = await self._queue.consume(on_message)

    @staticmethod
    def _topology(queue: str) -> Topology:
        # The work queues of the topology with their arguments, the dead-letter queue, and
        # nothing per tenant (that is the gateway's and `topology declare`'s business).
        base = build_topology(())
        if any(declared.name == queue for declared in base.queues):
            return base
        raise ConfigError(
            f"queue {queue!r} is not part of the hookline topology "
            f"({', '.join(declared.name for declared in base.queues)})"
        )

    async def stop_consuming(self) -> None:
        if self._queue is not None and self._tag is not None:
            # A closed channel has no consumer left; a broker that is away gets STOP_TIMEOUT_S.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._queue.cancel(self._tag)
            self._tag = None

    async def ack(self, inbound: Inbound) -> None:
        await _incoming(inbound).ack()

    async def retry(self, inbound: Inbound, delay_s: int, next_attempt: int) -> None:
        queue = self._queue
        if queue is None or self._confirming is None:
            raise ConsumerError("transport not open")
        if delay_s not in self._holding:
            await declare_topology(
                self._confirming, Topology((), retry_queues(queue.name, (delay_s,)))
            )
            self._holding.add(delay_s)
        message = _incoming(inbound)
        headers = {
            **(message.headers or {}),
            ATTEMPT_HEADER: next_attempt,
            ROUTING_KEY_HEADER: inbound.delivery.routing_key,
        }
        await self._confirming.default_exchange.publish(
            persistent_copy(message, headers),
            routing_key=f"{queue.name}.retry.{delay_s}s",
            mandatory=True,
        )
        await message.ack()

    async def dead_letter(self, inbound: Inbound, dead: DeadLetter) -> None:
        if self._confirming is None:
            raise ConsumerError("transport not open")
        message = _incoming(inbound)
        headers = {
            **(message.headers or {}),
            **dead.headers(),
            ROUTING_KEY_HEADER: inbound.delivery.routing_key,
        }
        exchange = await self._confirming.get_exchange(DEAD_LETTER_EXCHANGE, ensure=False)
        await exchange.publish(
            persistent_copy(message, headers),
            routing_key=inbound.delivery.routing_key or dead.queue,
            mandatory=True,
        )
        await message.ack()

    async def reply(self, inbound: Inbound, reply: RpcReply) -> None:
        delivery = inbound.delivery
        if self._replies is None or not delivery.reply_to:
            return
        await self._replies.default_exchange.publish(
            aio_pika.Message(
                body=reply.body,
                content_type=reply.content_type,
                correlation_id=delivery.correlation_id,
                headers=dict(reply.headers),
                delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            ),
            routing_key=delivery.reply_to,
        )

    async def close(self) -> None:
        await self.stop_consuming()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # leaving: nothing to save, only to bound
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await connection.close()


def _has_holding(queue: str) -> bool:
    return any(
        declared.name.startswith(queue + ".retry.") for declared in build_topology(()).queues
    )


def _incoming(inbound: Inbound) -> AbstractIncomingMessage:
    if not isinstance(inbound.handle, AbstractIncomingMessage):
        raise TypeError(f"not an AMQP delivery: {type(inbound.handle).__name__}")
    return inbound.handle


def _amqp_delivery(message: AbstractIncomingMessage) -> Delivery:
    headers: dict[str, object] = dict(message.headers or {})
    return Delivery(
        body=message.body,
        routing_key=original_routing_key(message.routing_key or "", headers, message.exchange),
        message_id=message.message_id,
        content_type=message.content_type,
        headers=headers,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        redelivered=bool(message.redelivered),
        attempt=attempt_of(headers),
    )
