"""Pick the publisher and the TwiML RPC client from HOOKLINE_AMQP_URL (docs/configuration.md).

``memory://`` selects the embedded broker and never imports aio-pika, so ``hookline run`` works
with nothing else installed; ``amqp://`` and ``amqps://`` import ``gateway.broker.fastamqp``
(hookline's own AMQP 0-9-1 publisher) and ``gateway.broker.rpc_amqp`` only when chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from gateway.backend_registry import Backends
from gateway.broker.base import Publisher
from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.broker.rpc import MemoryRpcClient, RpcClient
from gateway.errors import ConfigError
from gateway.log import mask_url_password

AMQP_FORMS: Final = "amqp://, amqps:// or memory://"


def _memory_publisher(
    url: str, tenant_ids: Sequence[str], memory_broker: MemoryBroker | None, name: str
) -> Publisher:
    return MemoryPublisher(memory_broker or MemoryBroker(), tenant_ids)


def _amqp_publisher(
    url: str, tenant_ids: Sequence[str], memory_broker: MemoryBroker | None, name: str
) -> Publisher:
    if memory_broker is not None:
        raise ConfigError(
            f"HOOKLINE_AMQP_URL is {mask_url_password(url)} but an embedded memory broker was "
            "also given; pass memory_broker only with memory://"
        )
    from gateway.broker.fastamqp import FastAmqpPublisher

    return FastAmqpPublisher(url, tenant_ids, name=name)


def _memory_rpc_client(url: str, memory_broker: MemoryBroker | None) -> RpcClient:
    return MemoryRpcClient(memory_broker or MemoryBroker())


def _amqp_rpc_client(url: str, memory_broker: MemoryBroker | None) -> RpcClient:
    from gateway.broker.rpc_amqp import AmqpRpcClient

    return AmqpRpcClient(url)


PUBLISHERS: Final[Backends[Callable[[str, Sequence[str], MemoryBroker | None, str], Publisher]]] = (
    Backends(
        "HOOKLINE_AMQP_URL",
        AMQP_FORMS,
        {"memory": _memory_publisher, "amqp": _amqp_publisher, "amqps": _amqp_publisher},
    )
)
RPC_CLIENTS: Final[Backends[Callable[[str, MemoryBroker | None], RpcClient]]] = Backends(
    "HOOKLINE_AMQP_URL",
    AMQP_FORMS,
    {"memory": _memory_rpc_client, "amqp": _amqp_rpc_client, "amqps": _amqp_rpc_client},
)


def create_publisher(
    amqp_url: str,
    tenant_ids: Sequence[str],
    *,
    memory_broker: MemoryBroker | None = None,
    name: str = "hookline-gateway",
) -> Publisher:
    """The publisher for ``amqp_url``; ``memory_broker`` shares one embedded broker in-process;
    ``name`` names its broker connection (and its log lines).

    Raises ConfigError for any other scheme (or a memory broker given with an AMQP URL).
    """
    return PUBLISHERS.pick(amqp_url)(amqp_url, tenant_ids, memory_broker, name)


def create_rpc_client(amqp_url: str, *, memory_broker: MemoryBroker | None = None) -> RpcClient:
    """The RPC client for HOOKLINE_AMQP_URL (memory:// shares the process's embedded broker)."""
    return RPC_CLIENTS.pick(amqp_url)(amqp_url, memory_broker)
