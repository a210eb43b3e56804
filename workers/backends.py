"""The workers' backends, one table per kind (the mechanism is gateway.backend_registry).

``HOOKLINE_AMQP_URL`` picks the transport of the worker runtime; ``HOOKLINE_DB_URL`` picks
the bot-call store of the flows worker and the usage ledger (both validated and normalized by
gateway.settings first). A builder imports its implementation only when chosen: memory://
never loads aio-pika, sqlite:/// never loads the PostgreSQL driver.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final

from gateway.backend_registry import Backends
from gateway.broker.factory import AMQP_FORMS
from gateway.broker.memory import MemoryBroker
from gateway.errors import ConfigError
from gateway.settings import sqlite_file
from workers.flows.bot_call_store import BotCallStore
from workers.transport import MemoryTransport, Transport
from workers.usage.ledger import Ledger

DB_FORMS: Final = "sqlite:///PATH or postgresql://..."


def _memory_transport(url: str, worker: str, memory_broker: MemoryBroker | None) -> Transport:
    if memory_broker is None:
        raise ConfigError(
            f"worker {worker}: HOOKLINE_AMQP_URL is memory://, whose queues live inside one "
            "process; run `hookline run` (gateway and workers together) or use RabbitMQ"
        )
    return MemoryTransport(memory_broker)


def _amqp_transport(url: str, worker: str, memory_broker: MemoryBroker | None) -> Transport:
    from workers.amqp_transport import AmqpTransport

    return AmqpTransport(url, worker)


def _sqlite_store(url: str) -> BotCallStore:
    from workers.flows.sqlite_store import SqliteBotCallStore

    return SqliteBotCallStore(_sqlite_path(BOT_CALL_STORES, url))


def _postgres_store(url: str) -> BotCallStore:
    from workers.flows.postgres_store import PostgresBotCallStore

    return PostgresBotCallStore(url)


def _sqlite_ledger(url: str) -> Ledger:
    from workers.usage.sqlite_ledger import SqliteLedger

    return SqliteLedger(_sqlite_path(LEDGERS, url))


def _postgres_ledger(url: str) -> Ledger:
    from workers.usage.postgres_ledger import PostgresLedger

    return PostgresLedger(url)


def _sqlite_path(kind: Backends[Callable[[str], object]], url: str) -> Path:
    path = sqlite_file(url)
    if path is None:  # "sqlite://x": gateway.settings writes every SQLite URL as sqlite:///
        raise kind.rejected(url)
    return path


_POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+")

TRANSPORTS: Final[Backends[Callable[[str, str, MemoryBroker | None], Transport]]] = Backends(
    "HOOKLINE_AMQP_URL",
    AMQP_FORMS,
    {"memory": _memory_transport, "amqp": _amqp_transport, "amqps": _amqp_transport},
)
BOT_CALL_STORES: Final[Backends[Callable[[str], BotCallStore]]] = Backends(
    "HOOKLINE_DB_URL",
    DB_FORMS,
    {"sqlite": _sqlite_store, **dict.fromkeys(_POSTGRES_SCHEMES, _postgres_store)},
)
LEDGERS: Final[Backends[Callable[[str], Ledger]]] = Backends(
    "HOOKLINE_DB_URL",
    DB_FORMS,
    {"sqlite": _sqlite_ledger, **dict.fromkeys(_POSTGRES_SCHEMES, _postgres_ledger)},
)


def create_transport(
    amqp_url: str, worker: str, *, memory_broker: MemoryBroker | None = None
) -> Transport:
    """The transport for HOOKLINE_AMQP_URL: memory:// needs the process's embedded broker."""
    return TRANSPORTS.pick(amqp_url)(amqp_url, worker, memory_broker)


def create_store(db_url: str) -> BotCallStore:
    """The bot-call store for HOOKLINE_DB_URL; nothing connects until ``open()``."""
    return BOT_CALL_STORES.pick(db_url)(db_url)


def create_ledger(db_url: str) -> Ledger:
    """The usage ledger for HOOKLINE_DB_URL; nothing connects until ``open()``."""
    return LEDGERS.pick(db_url)(db_url)
