"""The workers' backend tables: transport, bot-call store and ledger, chosen by URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.broker.memory import MemoryBroker
from gateway.errors import ConfigError
from workers.backends import (
    BOT_CALL_STORES,
    LEDGERS,
    create_ledger,
    create_store,
    create_transport,
)
from workers.flows.postgres_store import PostgresBotCallStore
from workers.flows.sqlite_store import SqliteBotCallStore
from workers.transport import MemoryTransport
from workers.usage.postgres_ledger import PostgresLedger
from workers.usage.sqlite_ledger import SqliteLedger


def test_db_kinds_pick_by_scheme(tmp_path: Path) -> None:
    """sqlite:/// and every postgresql form (with a driver too) pick their implementation."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    assert isinstance(create_store(url), SqliteBotCallStore)
    assert isinstance(create_ledger(url), SqliteLedger)
    for pg in ("postgresql://db/x", "postgres://db/x", "postgresql+psycopg://db/x"):
        assert isinstance(create_store(pg), PostgresBotCallStore)
        assert isinstance(create_ledger(pg), PostgresLedger)


@pytest.mark.parametrize("create", [create_store, create_ledger], ids=["store", "ledger"])
@pytest.mark.parametrize("url", ["mysql://u:hunter2@db/x", "sqlite://relative.db"])
def test_db_kinds_share_one_error(create: Callable[[str], object], url: str) -> None:
    """An unsupported database URL is one ConfigError text for both kinds, password masked."""
    with pytest.raises(ConfigError) as caught:
        create(url)
    message = str(caught.value)
    assert message.startswith(
        "HOOKLINE_DB_URL: expected sqlite:///PATH or postgresql://..., got scheme "
    )
    assert "hunter2" not in message
    assert BOT_CALL_STORES.rejected(url).args == LEDGERS.rejected(url).args


def test_transport_table() -> None:
    """memory:// needs the embedded broker; other schemes get the one broker-URL error."""
    assert isinstance(
        create_transport("memory://", "twiml", memory_broker=MemoryBroker()), MemoryTransport
    )
    with pytest.raises(ConfigError, match="worker twiml: HOOKLINE_AMQP_URL is memory://"):
        create_transport("memory://", "twiml")
    with pytest.raises(
        ConfigError,
        match="HOOKLINE_AMQP_URL: expected amqp://, amqps:// or memory://, got scheme 'kafka'",
    ):
        create_transport("kafka://h/", "twiml")
