"""``hookline tail --tenant ID``: follow one tenant's events live without consuming them.

The tail gets its own exclusive, auto-delete, server-named queue bound ``<tenant>.#`` on
``hookline.events``, so every event is copied to it *in addition* to the tenant's own queue:
tailing never steals a message from ``hookline.tenant.<id>``, and the queue disappears with the
connection. https://www.rabbitmq.com/docs/queues#exclusive-queues
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage

from gateway.broker.factory import mask_url
from gateway.errors import HooklineError
from schemas.topology import EVENTS_EXCHANGE

log = structlog.get_logger("hookline.broker")

# Enough in flight to keep up with a busy tenant without buffering unboundedly in the client.
# https://www.rabbitmq.com/docs/confirms#channel-qos-prefetch
PREFETCH: int = 200
# How long leaving waits for the broker to confirm the close.
CLOSE_TIMEOUT_S: float = 2.0


async def tail_events(
    amqp_url: str,
    tenant_id: str,
    *,
    on_ready: Callable[[], None] | None = None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yield each event envelope of ``tenant_id`` as a dict, from now on, until closed.

    ``on_ready`` is called once the tail queue is bound: events published after it are seen.
    Close the generator (``contextlib.aclosing``) to drop the connection and the queue.
    """
    masked = mask_url(amqp_url)
    try:
        connection = await aio_pika.connect(
            amqp_url, client_properties={"connection_name": f"hookline-tail-{tenant_id}"}
        )
    except Exception as exc:
        raise HooklineError(
            f"cannot reach the broker at {masked}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        # Same properties as the topology declares, so this is a no-op when it exists and
        # tail also works before the gateway first started.
        exchange = await channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=f"{tenant_id}.#")
        log.info("tail_started", tenant=tenant_id, url=masked, queue=queue.name)
        if on_ready is not None:
            on_ready()
        # no_ack: the queue is private and throw-away, a lost line on a crash is acceptable.
        # A consumer callback feeding a local queue rather than aio-pika's QueueIterator, whose
        # close on cancellation waits for the broker without a bound
        # (https://github.com/mosquito/aio-pika/issues/623): Ctrl-C must end a tail at once.
        inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue(PREFETCH)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await inbox.put(message)

        await queue.consume(on_message, no_ack=True)
        while True:
            message = await inbox.get()
            try:
                envelope = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                log.warning("tail_message_undecodable", tenant=tenant_id,
                            message_id=message.message_id)
                continue
            if isinstance(envelope, dict):
                yield envelope
            else:
                log.warning("tail_message_not_an_object", tenant=tenant_id,
                            message_id=message.message_id)
    finally:
        # Bounded: the queue is exclusive, the broker deletes it with the connection anyway.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await connection.close()
        except Exception as exc:  # a timeout or a broken link: leaving, nothing to save
            log.warning("tail_close_failed", tenant=tenant_id, error=repr(exc))
        log.info("tail_stopped", tenant=tenant_id)
