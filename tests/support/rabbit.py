"""Test helpers for the real RabbitMQ: a small inspection client and a TCP proxy for faults."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractConnection


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP properties and delivery details of one message read with basic.get."""

    message_id: str | None
    content_type: str | None
    delivery_mode: int
    routing_key: str | None
    exchange: str | None
    type: str | None
    app_id: str | None
    timestamp: datetime | None
    headers: dict[str, Any] = field(default_factory=dict)


class RabbitClient:
    """Reads, counts and purges queues; declares extra queues for a test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: AbstractConnection | None = None

    async def connect(self) -> RabbitClient:
        self._connection = await aio_pika.connect(self.url)
        return self

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @contextlib.asynccontextmanager
    async def _channel(self) -> Any:
        # A fresh channel per operation: a 404 on a missing queue closes only that channel.
        assert self._connection is not None, "RabbitClient.connect() first"
        channel: AbstractChannel = await self._connection.channel()
        try:
            yield channel
        finally:
            if not channel.is_closed:
                await channel.close()

    async def read_all(self, queue: str) -> list[tuple[Properties, Any]]:
        """basic.get (auto-ack) until the queue is empty: (properties, decoded JSON) pairs."""
        out: list[tuple[Properties, Any]] = []
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            while (message := await declared.get(no_ack=True, fail=False)) is not None:
                props = Properties(
                    message_id=message.message_id,
                    content_type=message.content_type,
                    delivery_mode=int(message.delivery_mode),
                    routing_key=message.routing_key,
                    exchange=message.exchange,
                    type=message.type,
                    app_id=message.app_id,
                    timestamp=message.timestamp,
                    headers=dict(message.headers),
                )
                out.append((props, orjson.loads(message.body)))
        return out

    async def queue_length(self, queue: str) -> int:
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return int(result.message_count or 0)

    async def queue_exists(self, queue: str) -> bool:
        try:
            await self.queue_length(queue)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
        except aiormq.exceptions.ChannelLockedResource:
            return True  # another connection's exclusive queue: it exists
        return True

    async def purge(self, queue: str) -> int:
        async with self._channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
            result = await declared.purge()
            return int(result.message_count or 0)

    async def declare_queue(
        self, name: str, bindings: Sequence[tuple[str, str]], arguments: dict[str, Any]
    ) -> None:
        async with self._channel() as channel:
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            for exchange, pattern in bindings:
                await queue.bind(exchange, routing_key=pattern)

    async def delete_queue(self, name: str) -> None:
        async with self._channel() as channel:
            await channel.queue_delete(name)


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` until true; TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        # Polling: states like `Publisher.ready` are properties, there is no event to await.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


class TcpProxy:
    """A TCP relay in front of the broker that a test can pause (a hung broker) or sever."""

    def __init__(
        self, target_url: str, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
    ) -> None:
        """``tls``: accept TLS with this server context and relay plain TCP (an amqps front
        for the plain test broker); ``url`` then says ``amqps://`` and names ``host``."""
        self._tls, self._host = tls, host
        parts = urlsplit(target_url)
        self._target_url = parts
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5672)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pumps: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.accepting = True
        self.port = 0

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        """The broker URL, same credentials and vhost, through this proxy."""
        parts = self._target_url
        userinfo = parts.netloc.rpartition("@")[0]
        address = f"{self._host}:{self.port}"
        netloc = f"{userinfo}@{address}" if userinfo else address
        return urlunsplit(
            parts._replace(scheme="amqps" if self._tls else parts.scheme, netloc=netloc)
        )

    def pause(self) -> None:
        """Hold every byte in both directions: the broker looks alive but never answers."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def sever(self) -> None:
        """Drop every relayed connection at once, like a broker crash or a network cut."""
        for writer in self._writers:
            writer.transport.abort()
        for pump in self._pumps:
            pump.cancel()

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                await self._flowing.wait()
                sink.write(chunk)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            sink.transport.abort()
            self._writers.discard(sink)
