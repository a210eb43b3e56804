"""RabbitMQ permissions as data: what a tenant's broker user and each hookline service may do.

Generated from the names of ``schemas.topology`` so that the permissions, the topology and the
documentation (docs/broker-users.md) cannot drift apart. Free of I/O: gateway.broker applies
them through the management HTTP API, tests check them against the real broker.

RabbitMQ checks three regular expressions per user and vhost, on resource names: *configure*
(declare, delete), *write* (publish to an exchange; bind: the queue or destination exchange),
*read* (consume or get from a queue; bind: the source exchange). Topic permissions add two
more per exchange, on routing keys: *write* for publishing, *read* for binding keys.
https://www.rabbitmq.com/docs/access-control#authorisation and
https://www.rabbitmq.com/docs/access-control#topic-authorisation
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from schemas.topology import (
    BOT_CALLS_QUEUE,
    BOT_COMMANDS_QUEUE,
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    REPLY_QUEUE_PREFIX,
    TENANT_QUEUE_PREFIX,
    TWIML_QUEUE,
    USAGE_QUEUE,
    Topology,
    build_topology,
    retry_queues,
)

#: A tenant id (docs/configuration.md): also what makes the regexes below safe to build by hand.
TENANT_ID: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
#: RabbitMQ's name for the default exchange in permission checks: publishing to it reaches
#: *any* queue by name, so only services that must (RPC, retries, dead-letter replay) get it.
DEFAULT_EXCHANGE: Final = "amq.default"
#: Names the broker gives to server-named queues (``queue.declare`` with an empty name).
SERVER_NAMED: Final = r"amq\.gen-.*"
#: A regex that matches no name: the empty string is RabbitMQ's spelling of "nothing".
NOTHING: Final = ""
#: Every tenant queue, for the services that declare the topology of all tenants.
ANY_TENANT_QUEUE: Final = re.escape(TENANT_QUEUE_PREFIX) + r"[a-z0-9][a-z0-9-]{0,39}"
#: Reply queues of the gateway's RPC clients (``hookline.reply.<host>.<pid>.<random>``).
ANY_REPLY_QUEUE: Final = re.escape(REPLY_QUEUE_PREFIX) + r".+"


@dataclass(frozen=True, slots=True)
class TopicPermission:
    """Routing-key regexes on one topic exchange: ``write`` for publishing, ``read`` for
    binding keys. Without any topic permission on an exchange, every key is allowed."""

    exchange: str
    write: str
    read: str


@dataclass(frozen=True, slots=True)
class UserPermissions:
    """What one broker user may do on the vhost: three resource regexes plus topic ones."""

    configure: str
    write: str
    read: str
    topics: tuple[TopicPermission, ...] = ()


def literal(name: str) -> str:
    """``name`` as a regex matching exactly itself (PCRE, as RabbitMQ uses)."""
    return "".join(c if c.isalnum() or c in "_-" else "\\" + c for c in name)


def any_of(patterns: Iterable[str]) -> str:
    """One anchored alternation of regexes (already escaped), or NOTHING when empty."""
    unique = sorted(set(patterns))
    if not unique:
        return NOTHING
    return f"^({'|'.join(unique)})$" if len(unique) > 1 else f"^{unique[0]}$"


def checked_tenant(tenant_id: str) -> str:
    if TENANT_ID.fullmatch(tenant_id) is None:
        raise ValueError(f"tenant id {tenant_id!r} is not a slug [a-z0-9][a-z0-9-]{{0,39}}")
    return tenant_id


def tenant_key_prefix(tenant_id: str) -> str:
    """Routing or binding keys whose first word is exactly ``tenant_id``: ``acme.`` never
    matches ``acme-2.call.bot``, and a binding key starting ``acme.`` only ever matches acme's
    events, whatever wildcards follow (``#`` and ``*`` cannot span the first word)."""
    return "^" + literal(checked_tenant(tenant_id)) + r"\."


def tenant_permissions(tenant_id: str) -> UserPermissions:
    """A tenant app's user (docs/architecture.md#tenancy): consume ``hookline.tenant.<id>``, publish
    ``<id>.*`` to ``hookline.commands``, bind its own server-named queues ``<id>.#``
    to ``hookline.events`` (``hookline tail``); nothing else."""
    own_keys = tenant_key_prefix(tenant_id)
    queue = literal(TENANT_QUEUE_PREFIX + tenant_id)
    return UserPermissions(
        # Only the queues the broker names: a tenant declares no exchange and no named queue.
        configure=any_of([SERVER_NAMED]),
        # Publishing to hookline.commands; binding its server-named queues (write on the queue).
        write=any_of([literal(COMMANDS_EXCHANGE), SERVER_NAMED]),
        # Consuming its queue and its server-named ones; hookline.events as a binding source.
        read=any_of([queue, SERVER_NAMED, literal(EVENTS_EXCHANGE)]),
        topics=(
            TopicPermission(EVENTS_EXCHANGE, write=NOTHING, read=own_keys),
            TopicPermission(COMMANDS_EXCHANGE, write=own_keys, read=NOTHING),
        ),
    )


# -- hookline's own services --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Grant:
    """Sets of (escaped) name regexes, combined with ``|`` before they become permissions."""

    configure: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    read: frozenset[str] = frozenset()

    def __or__(self, other: Grant) -> Grant:
        return Grant(
            self.configure | other.configure, self.write | other.write, self.read | other.read
        )

    def permissions(self) -> UserPermissions:
        return UserPermissions(any_of(self.configure), any_of(self.write), any_of(self.read))


def _grant(
    *, configure: Iterable[str] = (), write: Iterable[str] = (), read: Iterable[str] = ()
) -> Grant:
    return Grant(frozenset(configure), frozenset(write), frozenset(read))


def _declare(topology: Topology, tenant_queues: bool) -> Grant:
    """What declaring ``topology`` takes: configure every entity; for each binding write on the
    queue and read on the exchange; and for a queue with a dead-letter exchange, read on the
    queue and write on that exchange (RabbitMQ checks both at every ``queue.declare`` with
    ``x-dead-letter-exchange``, even of an existing queue; ``""`` is amq.default)."""
    queues = [literal(queue.name) for queue in topology.queues]
    bound = [literal(queue.name) for queue in topology.queues if queue.bindings]
    sources = [literal(exchange) for queue in topology.queues for exchange, _ in queue.bindings]
    dead_lettered = [
        queue for queue in topology.queues if "x-dead-letter-exchange" in queue.arguments
    ]
    readable = [literal(queue.name) for queue in dead_lettered]
    dlx = [
        literal(str(queue.arguments["x-dead-letter-exchange"]) or DEFAULT_EXCHANGE)
        for queue in dead_lettered
    ]
    if tenant_queues:
        # Tenant queues are quorum queues dead-lettering to hookline.dlx, like the others.
        queues.append(ANY_TENANT_QUEUE)
        bound.append(ANY_TENANT_QUEUE)
        readable.append(ANY_TENANT_QUEUE)
        dlx.append(literal(DEAD_LETTER_EXCHANGE))
    exchanges = [literal(exchange.name) for exchange in topology.exchanges]
    return _grant(configure=exchanges + queues, write=bound + dlx, read=sources + readable)


def _holding(queue: str) -> list[str]:
    # The runtime declares a work queue's holding queues on first use when the topology has
    # none (workers.runner), so a worker may configure its own.
    return [literal(held.name) for held in retry_queues(queue)]


def _consumer(queue: str) -> Grant:
    """A worker runtime on ``queue``: consume it; retry through its holding queues (default
    exchange); dead-letter to hookline.dlx."""
    # A holding queue dead-letters to the default exchange: declaring one takes read on it.
    return _grant(
        configure=_holding(queue),
        write=[literal(DEFAULT_EXCHANGE), literal(DEAD_LETTER_EXCHANGE)],
        read=[literal(queue), *_holding(queue)],
    )


#: Declaring every tenant's topology: the gateway, and every process that publishes events
#: (its publisher declares the topology at start, gateway.broker.fastamqp).
DECLARE_ALL: Final = _declare(build_topology(()), tenant_queues=True)
#: Declaring the topology without tenant queues: what every worker runtime does at start.
DECLARE_BASE: Final = _declare(build_topology(()), tenant_queues=False)
#: Publishing events (the gateway's publisher, and workers that publish results).
PUBLISH_EVENTS: Final = DECLARE_ALL | _grant(write=[literal(EVENTS_EXCHANGE)])

_GATEWAY: Final = PUBLISH_EVENTS | _grant(
    configure=[ANY_REPLY_QUEUE], write=[literal(DEFAULT_EXCHANGE)], read=[ANY_REPLY_QUEUE]
)
_TWIML: Final = DECLARE_BASE | _consumer(TWIML_QUEUE)
_USAGE: Final = DECLARE_BASE | _consumer(USAGE_QUEUE) | PUBLISH_EVENTS
_FLOWS: Final = (
    DECLARE_BASE | _consumer(BOT_COMMANDS_QUEUE) | _consumer(BOT_CALLS_QUEUE) | PUBLISH_EVENTS
)
_OPERATOR: Final = PUBLISH_EVENTS | _grant(
    configure=[SERVER_NAMED],
    write=[literal(DEFAULT_EXCHANGE), SERVER_NAMED],
    read=[literal(DEAD_QUEUE), SERVER_NAMED, literal(EVENTS_EXCHANGE)],
)

#: What hookline's own processes need, and no more: one broker user per service.
SERVICE_PERMISSIONS: Final[dict[str, UserPermissions]] = {
    # Publishes events (and declares the topology of every tenant at start); its RPC client
    # declares and consumes its reply queue and sends requests to hookline.twiml through the
    # default exchange (gateway.broker.rpc_amqp).
    "gateway": _GATEWAY.permissions(),
    # Consumes hookline.twiml; replies to each request's reply_to through the default exchange.
    "twiml": _TWIML.permissions(),
    # Consumes hookline.usage; publishes usage.budget events.
    "usage": _USAGE.permissions(),
    # Consumes hookline.bot.commands and hookline.bot.calls; publishes call.bot.result events.
    "flows": _FLOWS.permissions(),
    # `hookline topology declare`, `spool replay` (the publisher), `dead list|replay`
    # (hookline.dead, re-published through the default exchange), `tail` of any tenant.
    "operator": _OPERATOR.permissions(),
    # `hookline worker all` or `hookline run` under one user: every worker kind.
    "workers": (_TWIML | _USAGE | _FLOWS).permissions(),
}
#: What each service user is for, in the order of the documentation's table.
SERVICE_ROLES: Final[dict[str, str]] = {
    "gateway": "hookline serve (ingress, event publisher, TwiML RPC client)",
    "twiml": "hookline worker twiml",
    "usage": "hookline worker usage",
    "flows": "hookline worker flows",
    "workers": "hookline worker all (every worker kind under one user)",
    "operator": "hookline topology declare, spool replay, dead list|replay, tail",
}


def _qualified(name: str, vhost: str) -> str:
    # Users are broker-wide while hookline lives in one vhost: two hookline installations on
    # one broker (staging and production vhosts) must not share, or overwrite, a user.
    return name if vhost == "/" else f"{name}@{vhost}"


def tenant_username(tenant_id: str, vhost: str) -> str:
    """The broker user of a tenant's app: ``tenant-<id>``, plus ``@<vhost>`` off ``/``."""
    return _qualified(f"tenant-{checked_tenant(tenant_id)}", vhost)


def service_username(service: str, vhost: str) -> str:
    """The broker user of one hookline service: ``hookline-<service>``, plus ``@<vhost>``."""
    if service not in SERVICE_PERMISSIONS:
        raise ValueError(
            f"no hookline service {service!r}; expected one of {', '.join(SERVICE_PERMISSIONS)}"
        )
    return _qualified(f"hookline-{service}", vhost)
