"""The ledger's exactly-once key is (tenant, event id) on every backend: two tenants that share
a provider account (same deterministic event ids) are both metered, and a version-1 database
(keyed by event id alone) is migrated in place with its rows."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.usage import CARD, facts, message, policy
from workers.backends import create_ledger
from workers.usage.facts import UsageFact, merge_batch
from workers.usage.ledger import ITEM_COLUMNS, SCHEMA_VERSION, Ledger, MemoryLedger

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MONTH = "2026-11"


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """An open ledger of each kind: the in-memory fake, SQLite and the real PostgreSQL."""
    store: Ledger
    if request.param == "memory":
        store = MemoryLedger()
    elif request.param == "sqlite":
        store = create_ledger(f"sqlite:///{tmp_path / 'usage.db'}")
    else:
        store = create_ledger(request.getfixturevalue("postgres_url"))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def shared_id_facts() -> tuple[UsageFact, UsageFact]:
    """acme's and beta's 'sent' of the same MessageSid on the same Twilio account."""
    acme, beta = facts([message(1, "sent", tenant_id="acme"), message(1, "sent", tenant_id="beta")])
    if acme.event_id != beta.event_id:
        raise RuntimeError("the scenario needs two tenants' events with one event id")
    return acme, beta


async def spend(ledger: Ledger) -> dict[str, Decimal]:
    return {t: await ledger.month_spend(t, MONTH) for t in ("acme", "beta")}


async def test_same_event_id_counts_once_per_tenant_in_one_batch(any_ledger: Ledger) -> None:
    """Two tenants' events with the same id in one batch are both metered; redelivered,
    neither counts again."""
    acme, beta = shared_id_facts()
    first = await any_ledger.ingest([acme, beta], policy(), NOW)
    assert (first.applied, first.duplicates) == (2, 0)
    again = await any_ledger.ingest([beta, acme, beta], policy(), NOW)
    assert (again.applied, again.duplicates) == (0, 3)
    rows = await any_ledger.usage(MONTH)
    assert sorted((r.tenant, r.messages, r.segments) for r in rows) == [
        ("acme", 1, 1),
        ("beta", 1, 1),
    ]
    assert await spend(any_ledger) == {"acme": Decimal("0.0079"), "beta": Decimal("0.0079")}


async def test_another_tenants_earlier_event_does_not_hide_mine(any_ledger: Ledger) -> None:
    """beta's event is metered although acme's event with the same id was recorded first, and
    beta's redelivery is still counted once."""
    acme, beta = shared_id_facts()
    assert (await any_ledger.ingest([acme], policy(), NOW)).applied == 1
    mine = await any_ledger.ingest([beta], policy(), NOW)
    assert (mine.applied, mine.duplicates) == (1, 0)
    redelivered = await any_ledger.ingest([beta], policy(), NOW)
    assert (redelivered.applied, redelivered.duplicates) == (0, 1)
    assert await spend(any_ledger) == {"acme": Decimal("0.0079"), "beta": Decimal("0.0079")}


def _v1_content() -> tuple[UsageFact, list[object]]:
    """acme's recorded fact and its usage_items values, as version 1 stored them."""
    (fact,) = facts([message(1, "sent", tenant_id="acme")])
    changed, _ = merge_batch({}, [fact], CARD)
    (item,) = changed.values()
    return fact, [getattr(item, c) for c in ITEM_COLUMNS]


async def _check_migrated(ledger: Ledger) -> None:
    """The version-1 rows count as before, acme's event stays recorded, beta's is new."""
    acme, beta = shared_id_facts()
    (row,) = await ledger.usage(MONTH)
    assert (row.tenant, row.messages, row.cost) == ("acme", 1, Decimal("0.0079"))
    kept = await ledger.ingest([acme], policy(), NOW)
    assert (kept.applied, kept.duplicates) == (0, 1)
    new = await ledger.ingest([beta], policy(), NOW)
    assert (new.applied, new.duplicates) == (1, 0)
    assert await spend(ledger) == {"acme": Decimal("0.0079"), "beta": Decimal("0.0079")}


async def test_sqlite_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A version-1 SQLite ledger (events keyed by id alone) opens at the current version with
    its rows, keyed by (tenant, event id)."""
    from workers.usage import sqlite_ledger

    path = tmp_path / "usage.db"
    fact, values = _v1_content()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in sqlite_ledger.MIGRATIONS[1]:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute(
        "INSERT INTO usage_events VALUES (?, ?, ?, ?, ?)",
        (fact.event_id, fact.tenant, fact.kind, fact.sid, NOW.isoformat()),
    )
    db.execute(
        f"INSERT INTO usage_items VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
        [str(v) if isinstance(v, Decimal) else v for v in values],
    )
    db.execute("INSERT INTO usage_months VALUES ('acme', ?, '0.0079')", (MONTH,))
    db.commit()
    db.close()
    ledger = create_ledger(f"sqlite:///{path}")
    await ledger.open()
    try:
        await _check_migrated(ledger)
    finally:
        await ledger.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
        keys = db.execute(
            "SELECT name FROM pragma_table_info('usage_events') WHERE pk > 0 ORDER BY pk"
        ).fetchall()
        assert keys == [("tenant",), ("event_id",)]
        assert db.execute("SELECT count(*) FROM usage_events").fetchone() == (2,)
    finally:
        db.close()


@pytest.mark.postgres
async def test_postgres_version_1_database_is_migrated_in_place(postgres_url: str) -> None:
    """A version-1 PostgreSQL ledger opens at the current version with its rows, its primary
    key swapped to (tenant, event id)."""
    import psycopg

    from workers.usage import postgres_ledger

    fact, values = _v1_content()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for statement in postgres_ledger.MIGRATIONS[1]:
            conn.execute(statement.encode())
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            "INSERT INTO usage_events VALUES (%s, %s, %s, %s, %s)",
            (fact.event_id, fact.tenant, fact.kind, fact.sid, NOW),
        )
        conn.execute(
            f"INSERT INTO usage_items VALUES ({', '.join(['%s'] * len(ITEM_COLUMNS))})".encode(),
            values,
        )
        conn.execute("INSERT INTO usage_months VALUES ('acme', %s, 0.0079)", (MONTH,))
    ledger = create_ledger(postgres_url)
    await ledger.open()
    try:
        await _check_migrated(ledger)
    finally:
        await ledger.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        assert version == (SCHEMA_VERSION,)
        keys = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'usage_events'::regclass "
            "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
        ).fetchall()
        assert keys == [("tenant",), ("event_id",)]
        count = conn.execute("SELECT count(*) FROM usage_events").fetchone()
        assert count == (2,)
