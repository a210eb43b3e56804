"""Declare ``schemas.topology`` on a RabbitMQ channel (docs/architecture.md#topology).

Every declaration is idempotent: RabbitMQ answers ``declare-ok`` when an entity already exists
with the same properties, so running this at every start-up (and from ``hookline topology
declare``) is safe. Declaring with *different* properties (say a classic queue where a quorum
queue exists) is a PRECONDITION_FAILED channel error, surfaced to the caller unchanged.
https://www.rabbitmq.com/docs/queues#property-equivalence
"""

from __future__ import annotations

from aio_pika import ExchangeType
from aio_pika.abc import AbstractChannel, AbstractExchange

from schemas.topology import Topology

_EXCHANGE_TYPES = {
    "topic": ExchangeType.TOPIC,
    "direct": ExchangeType.DIRECT,
    "fanout": ExchangeType.FANOUT,
}


async def declare_topology(channel: AbstractChannel, topology: Topology) -> None:
    """Declare durable exchanges, durable queues with their arguments, then the bindings.

    Exchanges come first because a binding to a missing exchange is a NOT_FOUND channel error.
    With a robust channel (``aio_pika.connect_robust``) the declared entities are remembered
    and re-declared after a reconnection.
    https://aio-pika.readthedocs.io/en/latest/apidoc.html#aio_pika.connect_robust
    """
    exchanges: dict[str, AbstractExchange] = {}
    for exchange in topology.exchanges:
        try:
            kind = _EXCHANGE_TYPES[exchange.type]
        except KeyError:
            raise ValueError(
                f"exchange {exchange.name!r}: unsupported type {exchange.type!r}, "
                f"expected one of {sorted(_EXCHANGE_TYPES)}"
            ) from None
        exchanges[exchange.name] = await channel.declare_exchange(exchange.name, kind, durable=True)
    for queue in topology.queues:
        # Quorum queues must be durable; classic ones are durable too so no event is lost
        # on a broker restart. https://www.rabbitmq.com/docs/quorum-queues#declaring
        declared = await channel.declare_queue(
            queue.name, durable=True, arguments=dict(queue.arguments)
        )
        for exchange_name, pattern in queue.bindings:
            target = exchanges.get(exchange_name)
            if target is None:
                raise ValueError(
                    f"queue {queue.name!r} binds to exchange {exchange_name!r}, "
                    "which the topology does not declare"
                )
            await declared.bind(target, routing_key=pattern)
