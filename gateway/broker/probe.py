"""Reachability probe for `hookline check`: open and close one AMQP connection, declare nothing."""

from __future__ import annotations

import asyncio

import aio_pika

from gateway.errors import PublishError


async def probe_broker(url: str, timeout: float = 5.0) -> str:
    """Connect to RabbitMQ and return the server's product and version; raise PublishError."""
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), timeout)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        raise PublishError(f"broker not reachable within {timeout:g} s: {exc!r}") from exc
    try:
        transport = connection.transport
        properties = transport.connection.server_properties if transport else {}
        product = properties.get("product", "AMQP broker")
        version = properties.get("version", "?")
        return f"{product!s} {version!s}"
    finally:
        await connection.close()
