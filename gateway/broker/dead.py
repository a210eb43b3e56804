"""``hookline dead list|replay``: inspect dead letters and send them back to their queue.

Dead letters are read with ``basic.get`` without acknowledging: what is only listed (or not
selected for replay) goes back to ``hookline.dead`` when the channel closes, so listing never
removes anything. At most the number of messages the queue reported at the start is read, so
a message put back is never read twice. A replayed message is published (confirmed) to its
original queue through the default exchange with its attempt count reset, and only then
acked in ``hookline.dead``: a crash in between leaves a duplicate, never a loss.

The original queue comes from the worker runtime's ``x-hookline-queue`` header or, for a
message RabbitMQ dead-lettered itself (rejected by a tenant's application, expired), from its
``x-death`` header. https://www.rabbitmq.com/docs/dlx#effects
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from gateway.errors import HooklineError
from gateway.log import mask_url_password
from schemas.topology import (
    ATTEMPT_HEADER,
    DEAD_AT_HEADER,
    DEAD_HEADERS,
    DEAD_QUEUE,
    ERROR_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    WORKER_HEADER,
)


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """One dead letter as ``dead list`` prints it (no body: it may hold personal data)."""

    message_id: str | None
    queue: str | None
    reason: str | None
    attempts: int | None
    worker: str | None
    dead_at: str | None
    error: str | None
    routing_key: str | None
    type: str | None
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _first_death(headers: Mapping[str, object]) -> Mapping[str, object]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def describe(message: AbstractIncomingMessage) -> DeadMessage:
    headers: Mapping[str, object] = message.headers or {}
    death = _first_death(headers)
    keys = death.get("routing-keys")
    death_key = keys[0] if isinstance(keys, list) and keys else None
    attempts = headers.get(ATTEMPT_HEADER)
    return DeadMessage(
        message_id=message.message_id,
        queue=_text(headers.get(QUEUE_HEADER)) or _text(death.get("queue")),
        reason=_text(headers.get(REASON_HEADER)) or _text(death.get("reason")),
        attempts=attempts if isinstance(attempts, int) else None,
        worker=_text(headers.get(WORKER_HEADER)),
        dead_at=_text(headers.get(DEAD_AT_HEADER)) or _text(death.get("time")),
        error=_text(headers.get(ERROR_HEADER)),
        routing_key=_text(headers.get(ROUTING_KEY_HEADER))
        or _text(death_key)
        or message.routing_key,
        type=message.type,
        bytes=len(message.body),
    )


class DeadLetters:
    """A connection to the broker for reading and replaying ``hookline.dead``."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        try:
            return await aio_pika.connect(
                self._url, client_properties={"connection_name": "hookline-dead"}
            )
        except Exception as exc:
            raise HooklineError(
                f"cannot reach the broker at {mask_url_password(self._url)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def inspect(self, limit: int | None = None) -> list[DeadMessage]:
        connection = await self._connect()
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
            count = int(queue.declaration_result.message_count or 0)
            found: list[DeadMessage] = []
            for _ in range(count if limit is None else min(count, limit)):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                found.append(describe(message))
            return found  # closing the channel puts every message back
        finally:
            await connection.close()

    async def replay(
        self, *, message_id: str | None = None
    ) -> tuple[list[DeadMessage], list[DeadMessage]]:
        """Replay the messages with ``message_id`` (every one when None).

        Returns (replayed, skipped): skipped are selected messages whose original queue is
        unknown or gone; they stay in ``hookline.dead``.
        """
        connection = await self._connect()
        replayed: list[DeadMessage] = []
        skipped: list[DeadMessage] = []
        try:
            channel = await connection.channel()
            confirming = await connection.channel(publisher_confirms=True, on_return_raises=True)
            queue = await channel.declare_queue(DEAD_QUEUE, passive=True)
            count = int(queue.declaration_result.message_count or 0)
            for _ in range(count):
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                if message_id is not None and message.message_id != message_id:
                    continue  # left unacked: back in hookline.dead when the channel closes
                dead = describe(message)
                if not dead.queue:
                    skipped.append(dead)
                    continue
                headers = {
                    key: value
                    for key, value in (message.headers or {}).items()
                    if key not in DEAD_HEADERS and key != "x-death"
                }
                headers[ATTEMPT_HEADER] = 1
                if dead.routing_key:
                    headers[ROUTING_KEY_HEADER] = dead.routing_key
                try:
                    await confirming.default_exchange.publish(
                        persistent_copy(message, headers),
                        routing_key=dead.queue,
                        mandatory=True,
                    )
                except aio_pika.exceptions.DeliveryError:  # returned or nacked: queue gone/full
                    skipped.append(dead)
                    continue
                await message.ack()
                replayed.append(dead)
            return replayed, skipped
        finally:
            await connection.close()


def persistent_copy(
    message: AbstractIncomingMessage, headers: Mapping[str, object]
) -> aio_pika.Message:
    """The message again, persistent, with ``headers`` and without its per-message TTL: what a
    replayed dead letter and a worker's retry or dead-letter copy are published as."""
    return aio_pika.Message(
        body=message.body,
        headers=dict(headers),  # type: ignore[arg-type]
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        app_id=message.app_id,
        timestamp=message.timestamp,
    )
