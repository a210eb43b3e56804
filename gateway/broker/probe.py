"""Reachability probe for `hookline check`: open and close one AMQP connection, declare nothing.

It connects exactly as the gateway's publisher does (gateway.broker.fastamqp), so what `check`
says about the broker is what `serve` will meet; a failure is one plain sentence
(gateway.broker.failures).
"""

from __future__ import annotations

from gateway.broker.failures import connect_failure
from gateway.broker.fastamqp import open_link, parse_url
from gateway.broker.link import Link
from gateway.errors import PublishError
from gateway.log import mask_url_password


async def probe_broker(url: str, timeout: float = 5.0) -> str:
    """Connect to RabbitMQ and return the server's product and version; raise PublishError."""
    try:
        link = await open_link(
            parse_url(url, mask_url_password(url)),
            "hookline-check",
            timeout,
            timeout,
            _ignore,
            heartbeat=0,
        )
    except Exception as exc:
        raise PublishError(connect_failure(exc, url, timeout)) from None
    try:
        properties = link.server_properties
        return f"{properties.get('product', 'AMQP broker')!s} {properties.get('version', '?')!s}"
    finally:
        link.on_lost = _ignore
        await link.close(timeout=min(timeout, 2.0))


def _ignore(_link: Link, _exc: BaseException | None) -> None:
    return None
