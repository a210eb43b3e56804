"""``hookline tail --tenant ID``: follow one tenant's events live without consuming them.

The tail gets its own exclusive, auto-delete, server-named queue bound ``<tenant>.#`` on
``hookline.events``, so every event is copied to it *in addition* to the tenant's own queue:
tailing never steals a message from ``hookline.tenant.<id>``, and the queue disappears with the
connection. https://www.rabbitmq.com/docs/queues#exclusive-queues

A tenant tails itself with its own broker user (``hookline tenant credentials``): that user may
declare server-named queues, bind them ``<tenant>.#`` and read ``hookline.events`` as a binding
source, but configure no exchange, so ``hookline.events`` is only checked (a passive declare).
https://www.rabbitmq.com/docs/access-control#authorisation
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage

from gateway.broker.failures import connect_failure
from gateway.errors import HooklineError
from gateway.log import mask_url_password
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
    # no_ack: the queue is private and throw-away, a lost line on a crash is acceptable.
    # A consumer callback feeding a local queue rather than aio-pika's QueueIterator, whose
    # close on cancellation waits for the broker without a bound
    # (https://github.com/mosquito/aio-pika/issues/623): Ctrl-C must end a tail at once.
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue(PREFETCH)

    async def on_message(message: AbstractIncomingMessage) -> None:
        await inbox.put(message)

    masked = mask_url_password(amqp_url)
    user = unquote(urlsplit(amqp_url).username or "guest")
    try:
        connection = await aio_pika.connect(
            amqp_url, client_properties={"connection_name": f"hookline-tail-{tenant_id}"}
        )
    except aiormq.exceptions.ProbableAuthenticationError as exc:
        raise HooklineError(
            f"{connect_failure(exc, amqp_url)}; `hookline tenant credentials --rotate` gives "
            "a tenant's user a new password"
        ) from None
    except Exception as exc:
        raise HooklineError(connect_failure(exc, amqp_url)) from None
    try:
        step = f"find or declare the exchange {EVENTS_EXCHANGE}"
        try:
            await _ensure_events_exchange(connection)
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            step = "declare a server-named queue"
            queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
            step = f"bind a queue to {EVENTS_EXCHANGE} with {tenant_id}.#"
            await queue.bind(EVENTS_EXCHANGE, routing_key=f"{tenant_id}.#")
            step = f"consume its queue {queue.name}"
            await queue.consume(on_message, no_ack=True)
        except aiormq.exceptions.ChannelAccessRefused as exc:
            raise HooklineError(
                f"user {user!r} may not {step} on {masked} (ACCESS_REFUSED): tail tenant "
                f"{tenant_id!r} with that tenant's own credentials (`hookline tenant "
                f"credentials --tenant {tenant_id}`) or a user with the operator permissions "
                "of docs/broker-users.md"
            ) from exc
        log.info("tail_started", tenant=tenant_id, url=masked, queue=queue.name)
        if on_ready is not None:
            on_ready()
        while True:
            message = await inbox.get()
            try:
                envelope = orjson.loads(message.body)
            except orjson.JSONDecodeError:
                log.warning(
                    "tail_message_undecodable", tenant=tenant_id, message_id=message.message_id
                )
                continue
            if isinstance(envelope, dict):
                yield envelope
            else:
                log.warning(
                    "tail_message_not_an_object", tenant=tenant_id, message_id=message.message_id
                )
    finally:
        # Bounded: the queue is exclusive, the broker deletes it with the connection anyway.
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await connection.close()
        except Exception as exc:  # a timeout or a broken link: leaving, nothing to save
            log.warning("tail_close_failed", tenant=tenant_id, error=repr(exc))
        log.info("tail_stopped", tenant=tenant_id)


async def _ensure_events_exchange(connection: aio_pika.abc.AbstractConnection) -> None:
    """Check that hookline.events exists (passive: no configure permission needed); when it
    does not, declare it as the topology does, which works for an operator before the gateway
    first started and is refused (ACCESS_REFUSED, reported by the caller) for a tenant."""
    channel = await connection.channel()
    try:
        await channel.declare_exchange(EVENTS_EXCHANGE, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        # The failed passive declare closed that channel; a fresh one declares.
        channel = await connection.channel()
        await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.close()
