"""What a worker is, seen from the consumer runtime: a queue and a batch handler.

The runtime (``workers.runner``, the one worker module that may import aio-pika) owns
everything AMQP: prefetch, acks, retries with back-off, dead-lettering, replies, draining on
SIGTERM, one log line per message. A handler owns only
what a message means. Keeping this contract free of aio-pika lets the same handlers run on
RabbitMQ and on the embedded ``memory://`` broker, and be unit-tested with plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from gateway.errors import ConsumerError, PoisonMessage
from schemas.topology import ERROR_HEADER

ERROR_REPLY_CONTENT_TYPE: Final = "text/plain"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as consumed, whatever the broker."""

    body: bytes
    routing_key: str
    message_id: str | None = None
    content_type: str | None = None
    headers: Mapping[str, object] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    redelivered: bool = False
    #: 1 on the first delivery; the runtime counts retries in a header of its own.
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class RpcReply:
    """An RPC answer: the runtime publishes it to ``reply_to`` with the ``correlation_id``."""

    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def routing_tenant(routing_key: str) -> str:
    """The tenant a routing key names: its first word (``<tenant>.<provider>.<kind>`` for an
    event, ``<tenant>.call.bot`` for a command)."""
    return routing_key.partition(".")[0]


def require_routed_tenant(delivery: Delivery, tenant: str, what: str) -> None:
    """PoisonMessage (``tenant_mismatch``) when ``tenant`` (from the body) is not the tenant
    of the delivery's routing key.

    The routing key is the trustworthy tenant: broker topic permissions let a tenant's
    credentials publish only ``<its id>.*`` keys, and nothing checks a body. A retried message
    travels by queue name but ``Delivery.routing_key`` is still the one it was published with.
    """
    routed = routing_tenant(delivery.routing_key)
    if routed != tenant:
        raise PoisonMessage(
            f"{what} {delivery.message_id or ''}: body names tenant "
            f"{tenant[:60]!r}, routing key {delivery.routing_key[:120]!r} "
            f"names {routed[:60]!r}",
            reason="tenant_mismatch",
        )


def error_reply(reason: str) -> RpcReply:
    """The answer to an RPC request its handler could not serve: no body, and the reason in
    ``x-hookline-error`` (the requester's client turns it into the ``worker_error`` outcome)."""
    return RpcReply(b"", ERROR_REPLY_CONTENT_TYPE, {ERROR_HEADER: reason})


#: Per delivery: None (done, ack), an RpcReply (done, answer then ack), or a ConsumerError
#: (PoisonMessage: dead-letter now; TransientError: retry later, dead-letter when exhausted).
Result = RpcReply | ConsumerError | None


class Handler(Protocol):
    """One kind of worker (twiml, usage, flows).

    Two optional attributes are read by the runtime when present (not part of the protocol, so
    a handler without them still conforms): ``concurrency`` (batches handled at once, default
    1) and ``retry_delays_s`` (the back-off schedule of TransientError, default
    ``schemas.topology.RETRY_DELAYS_S``; empty: dead-letter at the first failure).
    """

    #: Worker kind as named on the command line: ``hookline worker <name>``.
    name: str
    #: The queue it consumes.
    queue: str
    #: Deliveries handed over at once (1 for per-message handlers such as RPC).
    batch_size: int
    #: How long the runtime may wait to fill a batch before handing over a partial one.
    batch_wait_s: float

    async def start(self) -> None:
        """Open resources (database, HTTP clients); called once before the first batch."""

    async def close(self) -> None:
        """Release resources; called once after the last batch, also after a failed start."""

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        """One Result per delivery, in order.

        Raising instead fails the whole batch: a ConsumerError by its kind, anything else as a
        TransientError (a bug must not dead-letter good messages at the first attempt).
        """
        ...
