"""Pick the publisher from HOOKLINE_AMQP_URL (docs/configuration.md), and mask broker URLs.

``memory://`` selects the embedded broker and never imports aio-pika, so ``hookline run`` works
with nothing else installed; ``amqp://`` and ``amqps://`` import ``gateway.broker.fastamqp``
lazily (hookline's own AMQP 0-9-1 publisher).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from gateway.broker.base import Publisher
from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.errors import ConfigError

MASK = "****"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``****``: safe for logs and error messages.

    Works on the raw text rather than ``urlsplit``: a password with an unescaped ``/``, ``?``
    or ``#`` would otherwise be parsed as part of the path and leak. When in doubt (an ``@``
    in the vhost) it masks too much, never too little.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at < 0:
        return url
    user, colon, _password = rest[:at].partition(":")
    return f"{scheme}://{user}:{MASK}{rest[at:]}" if colon else url


def url_scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def create_publisher(
    amqp_url: str,
    tenant_ids: Sequence[str],
    *,
    memory_broker: MemoryBroker | None = None,
) -> Publisher:
    """The publisher for ``amqp_url``; ``memory_broker`` shares one embedded broker in-process.

    Raises ConfigError for any other scheme (or a memory broker given with an AMQP URL).
    """
    scheme = url_scheme(amqp_url)
    if scheme == "memory":
        return MemoryPublisher(memory_broker or MemoryBroker(), tenant_ids)
    if scheme in ("amqp", "amqps"):
        if memory_broker is not None:
            raise ConfigError(
                f"HOOKLINE_AMQP_URL is {mask_url(amqp_url)} but an embedded memory broker was "
                "also given; pass memory_broker only with memory://"
            )
        # Lazy: memory mode loads no AMQP code at all.
        from gateway.broker.fastamqp import FastAmqpPublisher

        return FastAmqpPublisher(amqp_url, tenant_ids)
    raise ConfigError(
        f"HOOKLINE_AMQP_URL must use amqp://, amqps:// or memory://, got scheme {scheme!r} "
        f"({mask_url(amqp_url)})"
    )
