"""Ledger outages: unreachable or unusable databases raise LedgerUnavailable (a TransientError,
so the batch is retried), a dropped PostgreSQL connection is reopened, and a database whose
schema is newer than the code is refused."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.errors import TransientError
from tests.support.net import free_port
from tests.support.usage import facts, message, policy
from workers.backends import create_ledger
from workers.usage.ledger import LedgerUnavailable
from workers.usage.postgres_ledger import PostgresLedger
from workers.usage.sqlite_ledger import SqliteLedger

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def test_ledger_unavailable_is_transient() -> None:
    """The runtime retries a batch that failed on the ledger."""
    assert issubclass(LedgerUnavailable, TransientError)


async def test_sqlite_in_an_unusable_place(tmp_path: Path) -> None:
    """A data dir that is a file makes open() fail with LedgerUnavailable naming the path."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    ledger = SqliteLedger(blocker / "ledger.db")
    with pytest.raises(LedgerUnavailable, match="not-a-dir"):
        await ledger.open()
    with pytest.raises(LedgerUnavailable, match="not open"):
        await ledger.ingest(facts([message(1, "sent")]), policy(), NOW)


async def test_postgres_unreachable() -> None:
    """Nothing listening: LedgerUnavailable, the password masked in the message."""
    ledger = PostgresLedger(f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x")
    with pytest.raises(LedgerUnavailable) as info:
        await ledger.open()
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)


@pytest.mark.postgres
async def test_postgres_connection_killed_then_reopened(postgres_url: str) -> None:
    """A terminated backend fails one batch (nothing half-written); the retry counts once."""
    import psycopg

    ledger = PostgresLedger(postgres_url)
    await ledger.open()
    try:
        await ledger.ingest(facts([message(1, "sent")]), policy(), NOW)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                "datname = current_database() AND pid <> pg_backend_pid()"
            )
        batch = facts([message(2, "sent"), message(1, "delivered")])
        with pytest.raises(LedgerUnavailable):
            await ledger.ingest(batch, policy(), NOW)
        retried = await ledger.ingest(batch, policy(), NOW)
        assert (retried.applied, retried.duplicates) == (2, 0)
        again = await ledger.ingest(batch, policy(), NOW)
        assert (again.applied, again.duplicates) == (0, 2)
        rows = await ledger.usage("2026-11")
        assert (sum(r.messages for r in rows), sum(r.delivered for r in rows)) == (2, 1)
    finally:
        await ledger.close()


async def test_newer_schema_is_refused(ledger_url: str) -> None:
    """A database migrated by a newer hookline is not touched by this one."""
    ledger = create_ledger(ledger_url)
    await ledger.open()
    await ledger.close()
    if ledger_url.startswith("sqlite:///"):
        db = sqlite3.connect(ledger_url[len("sqlite:///") :])
        with db:
            db.execute("INSERT INTO schema_version (version) VALUES (99)")
        db.close()
    else:
        import psycopg

        with psycopg.connect(ledger_url, autocommit=True) as pg:
            pg.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(LedgerUnavailable, match="newer"):
        await create_ledger(ledger_url).open()
