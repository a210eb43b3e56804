"""Bot-call stores (memory, SQLite, PostgreSQL): one contract, idempotent under redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from workers.backends import create_store
from workers.flows.bot_call_store import BotCall, BotCallStore, MemoryBotCallStore
from workers.flows.sqlite_store import SqliteBotCallStore

CALL = BotCall("CA1", "acme", "rx-1", "refill", "+14155550123", "+14155550100")


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BotCallStore]:
    if request.param == "postgres":
        made: BotCallStore = create_store(request.getfixturevalue("postgres_url"))
    elif request.param == "sqlite":
        made = create_store(f"sqlite:///{tmp_path / 'hookline.db'}")
    else:
        made = MemoryBotCallStore()
    await made.open()
    try:
        yield made
    finally:
        await made.close()


async def test_a_request_id_is_claimed_once_and_then_names_its_call(store: BotCallStore) -> None:
    """new, then pending while placing, then the call SID once placed."""
    assert await store.claim("acme", "rx-1") == "new"
    assert await store.claim("acme", "rx-1") == "pending"
    assert await store.claim("beta", "rx-1") == "new"  # request ids are per tenant
    await store.placed(CALL)
    assert await store.claim("acme", "rx-1") == "CA1"


async def test_a_released_claim_can_be_taken_again(store: BotCallStore) -> None:
    """release() after a refusal lets the same request_id be placed later."""
    assert await store.claim("acme", "rx-1") == "new"
    await store.release("acme", "rx-1")
    assert await store.claim("acme", "rx-1") == "new"


async def test_steps_merge_inputs_and_keep_the_first_answer(store: BotCallStore) -> None:
    """Inputs accumulate (later answers win per step); answered_by is set once."""
    await store.placed(CALL)
    await store.stepped(BotCall("CA1", "acme", "rx-1", "refill", "", "", "human", {}))
    await store.stepped(BotCall("CA1", "acme", "rx-1", "refill", "", "", None, {"menu": "9"}))
    await store.stepped(
        BotCall("CA1", "acme", "rx-1", "refill", "", "", "machine_start", {"menu": "1"})
    )
    got = await store.get("acme", "CA1")
    assert got is not None
    assert (got.answered_by, dict(got.inputs), got.to) == ("human", {"menu": "1"}, CALL.to)


async def test_a_flow_event_may_overtake_the_placement(store: BotCallStore) -> None:
    """stepped() before placed(): the call exists, and placement keeps its inputs."""
    await store.stepped(
        BotCall("CA1", "acme", "rx-1", "refill", "+1415", "", "human", {"menu": "2"})
    )
    await store.placed(CALL)
    got = await store.get("acme", "CA1")
    assert got is not None and dict(got.inputs) == {"menu": "2"} and got.from_ == CALL.from_


async def test_sms_and_finish_marks_are_idempotent(store: BotCallStore) -> None:
    """Marking twice is harmless; get() tells finished calls apart; unknown calls are None."""
    await store.placed(CALL)
    assert not await store.sms_sent("acme", "CA1", "confirmed")
    await store.mark_sms_sent("acme", "CA1", "confirmed")
    await store.mark_sms_sent("acme", "CA1", "confirmed")
    assert await store.sms_sent("acme", "CA1", "confirmed")
    await store.mark_finished("acme", "CA1")
    await store.mark_finished("acme", "CA1")
    got = await store.get("acme", "CA1")
    assert got is not None and got.finished
    assert await store.get("acme", "CA-unknown") is None


async def test_calls_and_texts_are_keyed_by_tenant_and_call_sid(store: BotCallStore) -> None:
    """Another tenant's step, text mark or finish naming acme's CallSid touches none of
    acme's rows; owners() names both tenants of that SID."""
    await store.placed(CALL)
    await store.stepped(
        BotCall("CA1", "evil", "rx-e", "refill", "", "", "machine_start", {"menu": "9"})
    )
    await store.mark_sms_sent("evil", "CA1", "confirmed")
    await store.mark_finished("evil", "CA1")
    mine = await store.get("acme", "CA1")
    assert mine is not None and mine.tenant == "acme" and mine.request_id == "rx-1"
    assert (mine.answered_by, dict(mine.inputs), mine.finished) == (None, {}, False)
    assert not await store.sms_sent("acme", "CA1", "confirmed")
    theirs = await store.get("evil", "CA1")
    assert theirs is not None and theirs.finished and dict(theirs.inputs) == {"menu": "9"}
    assert await store.owners("CA1") == ("acme", "evil")
    assert await store.owners("CA-unknown") == ()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_two_workers_claim_each_request_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two workers (two connections to one database) racing for 50 request ids: each is new
    exactly once."""
    url = (
        f"sqlite:///{tmp_path / 'hookline.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    stores = [create_store(url) for _ in range(2)]
    for each in stores:
        await each.open()
    try:
        claims = await asyncio.gather(
            *(each.claim("acme", f"rx-{n}") for n in range(50) for each in stores)
        )
    finally:
        for each in stores:
            await each.close()
    assert claims.count("new") == 50 and claims.count("pending") == 50


async def test_the_schema_is_created_once_and_reopened(tmp_path: Path) -> None:
    """Opening an existing database keeps its rows (migrations run once)."""
    first = SqliteBotCallStore(tmp_path / "hookline.db")
    await first.open()
    await first.placed(CALL)
    await first.close()
    again = SqliteBotCallStore(tmp_path / "hookline.db")
    await again.open()
    try:
        assert await again.get("acme", "CA1") is not None
    finally:
        await again.close()


V1_ROWS = (
    "INSERT INTO bot_requests VALUES ('acme', 'rx-1', 'CA1')",
    """INSERT INTO bot_calls (call_sid, tenant, request_id, flow, to_number, from_number,
       answered_by, inputs, finished)
       VALUES ('CA1', 'acme', 'rx-1', 'refill', '+14155550123', '+14155550100', 'human',
               '{"menu": "1"}', true)""",
    "INSERT INTO bot_sms VALUES ('CA1', 'confirmed')",
    "INSERT INTO bot_sms VALUES ('CA-gone', 'confirmed')",  # a text whose call is unknown
    "INSERT INTO flows_schema_version VALUES (1)",
)


async def _check_migrated(store: BotCallStore) -> None:
    got = await store.get("acme", "CA1")
    assert got is not None and (got.answered_by, dict(got.inputs), got.finished) == (
        "human",
        {"menu": "1"},
        True,
    )
    assert await store.sms_sent("acme", "CA1", "confirmed")
    assert await store.claim("acme", "rx-1") == "CA1"
    # The new key admits another tenant's row for the same SID beside acme's.
    await store.stepped(BotCall("CA1", "evil", "rx-e", "refill", "", "", None, {}))
    assert await store.owners("CA1") == ("acme", "evil")


async def test_sqlite_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A version-1 SQLite database (calls keyed by CallSid) opens as version 2 with its rows,
    texts taking their call's tenant."""
    import sqlite3

    from workers.flows import sqlite_store

    path = tmp_path / "hookline.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE flows_schema_version (version INTEGER)")
    for statement in (*sqlite_store.MIGRATIONS[1], *V1_ROWS):
        db.execute(statement)
    db.commit()
    db.close()
    store = SqliteBotCallStore(path)
    await store.open()
    try:
        await _check_migrated(store)
    finally:
        await store.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(version) FROM flows_schema_version").fetchone() == (2,)
    assert db.execute("SELECT tenant FROM bot_sms WHERE call_sid = 'CA-gone'").fetchone() == ("",)
    db.close()


@pytest.mark.postgres
async def test_postgres_version_1_database_is_migrated_in_place(postgres_url: str) -> None:
    """A version-1 PostgreSQL database opens as version 2 with its rows kept."""
    import psycopg

    from workers.flows import postgres_store

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE flows_schema_version (version integer)")
        for statement in (*postgres_store.MIGRATIONS[1], *V1_ROWS):
            conn.execute(statement.encode())
    store = create_store(postgres_url)
    await store.open()
    try:
        await _check_migrated(store)
    finally:
        await store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        version = conn.execute("SELECT max(version) FROM flows_schema_version").fetchone()
        assert version == (2,)
