"""Bot-call stores (memory, SQLite, PostgreSQL): one contract, idempotent under redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from workers.flows.sqlite_store import SqliteBotCallStore
from workers.flows.store import BotCall, BotCallStore, MemoryBotCallStore, create_store

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
    await store.stepped(BotCall("CA1", "acme", "rx-1", "refill", "", "", "machine_start",
                                {"menu": "1"}))
    got = await store.get("CA1")
    assert got is not None
    assert (got.answered_by, dict(got.inputs), got.to) == ("human", {"menu": "1"}, CALL.to)


async def test_a_flow_event_may_overtake_the_placement(store: BotCallStore) -> None:
    """stepped() before placed(): the call exists, and placement keeps its inputs."""
    await store.stepped(BotCall("CA1", "acme", "rx-1", "refill", "+1415", "", "human",
                                {"menu": "2"}))
    await store.placed(CALL)
    got = await store.get("CA1")
    assert got is not None and dict(got.inputs) == {"menu": "2"} and got.from_ == CALL.from_


async def test_sms_and_finish_marks_are_idempotent(store: BotCallStore) -> None:
    """Marking twice is harmless; get() tells finished calls apart; unknown calls are None."""
    await store.placed(CALL)
    assert not await store.sms_sent("CA1", "confirmed")
    await store.mark_sms_sent("CA1", "confirmed")
    await store.mark_sms_sent("CA1", "confirmed")
    assert await store.sms_sent("CA1", "confirmed")
    await store.mark_finished("CA1")
    await store.mark_finished("CA1")
    got = await store.get("CA1")
    assert got is not None and got.finished
    assert await store.get("CA-unknown") is None


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres",
                                                            marks=pytest.mark.postgres)])
async def test_two_workers_claim_each_request_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two workers (two connections to one database) racing for 50 request ids: each is new
    exactly once."""
    url = f"sqlite:///{tmp_path / 'hookline.db'}" if backend == "sqlite" \
        else request.getfixturevalue("postgres_url")
    stores = [create_store(url) for _ in range(2)]
    for each in stores:
        await each.open()
    try:
        claims = await asyncio.gather(*(
            each.claim("acme", f"rx-{n}") for n in range(50) for each in stores))
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
        assert await again.get("CA1") is not None
    finally:
        await again.close()

