"""The pure counting rules: events to facts, forward-only merging in any order and batching,
minutes rounded up, and SQLite agreeing with the in-memory rules on random event streams."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import PoisonMessage
from tests.support.usage import CARD, call, facts, message, policy
from workers.usage.facts import (
    CALL_RANK,
    MESSAGE_RANK,
    billable_minutes,
    fact_from_event,
    merge_batch,
)
from workers.usage.ledger import MemoryLedger
from workers.usage.sqlite_ledger import SqliteLedger

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)
# One status per rank, so that the winner of any order is the highest rank.
MESSAGE_CHAIN = ["queued", "sent", "delivered", "read"]
CALL_CHAIN = ["initiated", "ringing", "in-progress", "completed"]


@pytest.mark.parametrize(
    ("duration", "status", "minutes"),
    [
        (None, "completed", 0),
        (0, "completed", 0),
        (1, "completed", 1),
        (60, "completed", 1),
        (61, "completed", 2),
        (3600, "completed", 60),
        (45, "busy", 0),
        (45, "in-progress", 0),
    ],
)
def test_billable_minutes_round_up(duration: int | None, status: str, minutes: int) -> None:
    """CallDuration is rounded up to whole minutes, for completed calls only."""
    assert billable_minutes(duration, status) == minutes


def test_ranks_cover_every_normalized_status() -> None:
    """Every normalized message and call status has a rank (unknown ranks lowest)."""
    from schemas.events import CALL_STATUSES, MESSAGE_STATUSES

    assert set(MESSAGE_RANK) == MESSAGE_STATUSES and set(CALL_RANK) == CALL_STATUSES
    assert min(MESSAGE_RANK.values()) == MESSAGE_RANK["unknown"] == 0


def test_recording_callbacks_meter_nothing() -> None:
    """A recording status callback (no CallStatus) is acked without touching the call."""
    from gateway.providers import twilio_events
    from tests.support.usage import ACCOUNT, DAY, tenant

    params = {
        "CallSid": ["CA" + "1" * 32],
        "AccountSid": [ACCOUNT],
        "RecordingSid": ["RE1"],
        "RecordingStatus": ["completed"],
        "RecordingDuration": ["12"],
    }
    event = twilio_events.normalize("call.status", tenant(), params, DAY)
    assert fact_from_event(event) is None


def test_an_incoming_message_is_an_inbound_fact() -> None:
    """message.incoming meters the received message: inbound, received, its segments, and of
    the tenant's number only the first 8 digits (no body, no sender)."""
    from tests.support.usage import received

    fact = fact_from_event(received(7, segments=3, to="+14155550100"))
    assert fact is not None
    assert (fact.kind, fact.direction, fact.status, fact.channel) == (
        "message",
        "inbound",
        "received",
        "sms",
    )
    assert (fact.segments, fact.destination, fact.sid) == (3, "14155550", f"SM{7:032x}")


def test_bot_result_without_outcome_is_poison() -> None:
    """A call.bot.result whose data lacks the outcome can never be counted."""
    from tests.support.usage import bot_result

    event = bot_result(1, "answered")
    event.data.pop("outcome")
    with pytest.raises(PoisonMessage, match=r"data\.outcome"):
        fact_from_event(event)


@given(order=st.permutations(range(4)), cut=st.integers(0, 4), kind=st.sampled_from(["m", "c"]))
def test_any_order_and_batching_ends_in_the_furthest_state(
    order: list[int], cut: int, kind: str
) -> None:
    """Whatever order the statuses arrive in, and however batched, the last state wins."""
    chain = MESSAGE_CHAIN if kind == "m" else CALL_CHAIN

    def event(i: int) -> object:
        if kind == "m":
            return message(1, chain[i], segments=1 + i % 2)
        return call(1, chain[i], duration=125 if chain[i] == "completed" else None, sequence=i)

    stream = facts([event(i) for i in order])  # type: ignore[misc]
    first, _ = merge_batch({}, stream[:cut], CARD)
    later, _ = merge_batch(first, stream[cut:], CARD)  # returns the items it changed
    (item,) = {**first, **later}.values()
    assert item.status == chain[-1] and item.events == 4
    if kind == "m":
        assert item.segments == 2 and item.cost == Decimal("0.0158")
    else:
        assert item.minutes == 3 and item.cost == Decimal("0.0420")


EVENT = st.one_of(
    st.builds(
        lambda n, s, g: message(n, s, segments=g),
        st.integers(0, 5),
        st.sampled_from(sorted(MESSAGE_RANK)),
        st.integers(0, 4),
    ),
    st.builds(
        lambda n, s, d: call(n, s, duration=d),
        st.integers(0, 3),
        st.sampled_from(sorted(CALL_RANK)),
        st.one_of(st.none(), st.integers(0, 400)),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(EVENT, max_size=30), size=st.integers(1, 8))
def test_sqlite_agrees_with_the_rules(events: list[object], size: int) -> None:
    """SQLite gives the in-memory ledger's counters for any stream, batching and duplicates."""
    stream = facts(events + events[: len(events) // 2])  # type: ignore[arg-type]

    async def run() -> tuple[object, object, object, object]:
        memory = MemoryLedger()
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = SqliteLedger(Path(tmp) / "l.db")
            await sqlite.open()
            try:
                for i in range(0, len(stream), size):
                    await memory.ingest(stream[i : i + size], policy(), NOW)
                    await sqlite.ingest(stream[i : i + size], policy(), NOW)
                return (
                    await memory.usage("2026-11"),
                    await sqlite.usage("2026-11"),
                    await memory.month_spend("acme", "2026-11"),
                    await sqlite.month_spend("acme", "2026-11"),
                )
            finally:
                await sqlite.close()

    mem_rows, sql_rows, mem_spend, sql_spend = asyncio.run(run())
    assert mem_rows == sql_rows and mem_spend == sql_spend
