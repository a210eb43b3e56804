"""The ledger on SQLite and the real PostgreSQL: exactly once, forward-only states, costs,
budget thresholds once per month, schema migration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.usage_config import Budget
from tests.support.usage import (
    bot_result,
    call,
    facts,
    kaleyra_dlr,
    message,
    policy,
    received,
    scenario,
)
from workers.backends import create_ledger
from workers.usage.ledger import Ledger, UsageRow

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MONTH = "2026-11"


@pytest.fixture
async def ledger(ledger_url: str) -> AsyncIterator[Ledger]:
    """An open ledger on each backend, closed after the test."""
    store = create_ledger(ledger_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def total(rows: list[UsageRow], name: str) -> object:
    values = [getattr(row, name) for row in rows]
    return sum(values, Decimal(0)) if name == "cost" else sum(values)


async def test_each_event_id_counts_once(ledger: Ledger) -> None:
    """Duplicates in a batch, a redelivered batch and a later copy change nothing."""
    batch = facts([message(1, "sent"), message(1, "sent"), message(2, "delivered")])
    first = await ledger.ingest(batch, policy(), NOW)
    assert (first.applied, first.duplicates) == (2, 1)
    again = await ledger.ingest(batch, policy(), NOW)
    assert (again.applied, again.duplicates) == (0, 3)
    rows = await ledger.usage(MONTH)
    assert total(rows, "messages") == 2 and total(rows, "segments") == 2


async def test_states_only_move_forward(ledger: Ledger) -> None:
    """A late 'sent' after 'delivered' changes nothing; a message counts once over its events."""
    await ledger.ingest(facts([message(1, "delivered", segments=3)]), policy(), NOW)
    before = await ledger.usage(MONTH)
    out_of_order = await ledger.ingest(
        facts([message(1, "sent", segments=3), message(1, "queued", segments=3)]), policy(), NOW
    )
    assert out_of_order.applied == 2
    after = await ledger.usage(MONTH)
    assert after == before
    assert (after[0].messages, after[0].delivered, after[0].segments) == (1, 1, 3)
    # In order within one batch too: queued, sent, undelivered is one failed message.
    await ledger.ingest(
        facts([message(2, s) for s in ("queued", "sent", "undelivered")]), policy(), NOW
    )
    rows = await ledger.usage(MONTH)
    assert (total(rows, "messages"), total(rows, "failed"), total(rows, "delivered")) == (2, 1, 1)


async def test_counters_and_costs(ledger: Ledger) -> None:
    """Segments, minutes rounded up, prefixes and channels give the exact Decimal costs."""
    events = [
        message(1, "delivered", segments=2),  # US sms 2 x 0.0079
        message(2, "delivered", segments=1, to="+447700900123"),  # UK sms 1 x 0.0400
        message(3, "failed", segments=1),  # failed: not billed
        message(4, "read", segments=1, to="whatsapp:+14155550100"),  # whatsapp 0.0050
        call(1, "ringing", sequence=1),
        call(1, "completed", duration=61, sequence=2),  # 2 min x 0.0140
        call(2, "completed", duration=60, sequence=1, direction="inbound"),  # 1 min x 0.0085
        call(3, "busy", sequence=1),  # no minutes
        kaleyra_dlr(1, "DELIVRD", units=3),  # 3 x 0.0021 (prefix 91)
        bot_result(1, "answered_human"),
        bot_result(2, "voicemail"),
    ]
    await ledger.ingest(facts(events), policy(), NOW)
    rows = {(r.provider, r.channel, r.direction): r for r in await ledger.usage(MONTH)}
    sms = rows[("twilio", "sms", "outbound")]
    assert (sms.messages, sms.segments, sms.delivered, sms.failed) == (3, 4, 2, 1)
    assert sms.cost == Decimal("0.0558")  # 2 x 0.0079 + 0.0400
    assert rows[("twilio", "whatsapp", "outbound")].cost == Decimal("0.0050")
    voice_out = rows[("twilio", "voice", "outbound")]
    assert (voice_out.calls, voice_out.minutes, voice_out.cost) == (2, 2, Decimal("0.0280"))
    voice_in = rows[("twilio", "voice", "inbound")]
    assert (voice_in.calls, voice_in.minutes, voice_in.cost) == (1, 1, Decimal("0.0085"))
    kaleyra = rows[("kaleyra", "sms", "outbound")]
    assert (kaleyra.messages, kaleyra.segments, kaleyra.cost) == (1, 3, Decimal("0.0063"))
    assert all(isinstance(r.cost, Decimal) for r in rows.values())
    assert await ledger.month_spend("acme", MONTH) == Decimal("0.1036")
    outcomes = {(o.outcome, o.count) for o in await ledger.outcomes(MONTH)}
    assert outcomes == {("answered_human", 1), ("voicemail", 1)}


async def test_received_messages_are_metered_inbound(ledger: Ledger) -> None:
    """An incoming SMS is one inbound message, billed per segment at the inbound rate of the
    number it was sent to, once however often it is redelivered; it is neither delivered
    nor failed."""
    await ledger.ingest(
        facts([received(1, segments=2), received(2), received(1, segments=2)]), policy(), NOW
    )
    await ledger.ingest(facts([received(2)]), policy(), NOW)  # redelivered in a later batch
    (row,) = await ledger.usage(MONTH)
    assert (row.provider, row.channel, row.direction) == ("twilio", "sms", "inbound")
    assert (row.messages, row.segments, row.delivered, row.failed) == (2, 3, 0, 0)
    assert row.cost == Decimal("0.0249")  # 3 x 0.0083
    assert await ledger.month_spend("acme", MONTH) == Decimal("0.0249")


async def test_what_is_billed(ledger: Ledger) -> None:
    """Undelivered SMS are billed, undelivered WhatsApp and failed messages are not."""
    await ledger.ingest(
        facts(
            [
                message(1, "undelivered", segments=2),
                message(2, "failed", segments=2),
                message(3, "undelivered", segments=1, to="whatsapp:+14155550100"),
            ]
        ),
        policy(),
        NOW,
    )
    rows = {r.channel: r for r in await ledger.usage(MONTH)}
    assert (rows["sms"].segments, rows["sms"].billed_segments) == (4, 2)
    assert rows["sms"].cost == Decimal("0.0158")
    assert (rows["whatsapp"].billed_segments, rows["whatsapp"].cost) == (0, Decimal(0))


async def test_unrated_destinations_are_counted_and_flagged(ledger: Ledger) -> None:
    """A destination without a rate is counted, costs nothing and is reported as unrated."""
    await ledger.ingest(
        facts([call(1, "completed", duration=30, to="+447700900123")]), policy(), NOW
    )
    (row,) = await ledger.usage(MONTH)
    assert (row.calls, row.minutes, row.cost, row.unrated) == (1, 1, Decimal(0), 1)


async def test_budget_thresholds_fire_once_per_month(ledger: Ledger) -> None:
    """50/80/100 % each produce one pending alert, never again on redelivery or more spend."""
    budgets = {"acme": Budget("prepaid", Decimal("0.10"))}
    # 7 US segments = 0.0553 (55 %): crosses 50 only.
    first = await ledger.ingest(facts([message(1, "sent", segments=7)]), policy(budgets), NOW)
    assert [a.threshold for a in first.alerts] == [50]
    again = await ledger.ingest(facts([message(1, "sent", segments=7)]), policy(budgets), NOW)
    assert again.alerts == ()
    # 7 more segments: 0.1106 (110.6 %) crosses 80 and 100 at once.
    more = await ledger.ingest(facts([message(2, "sent", segments=7)]), policy(budgets), NOW)
    assert [a.threshold for a in more.alerts] == [80, 100]
    assert more.alerts[-1].spent == Decimal("0.1106")
    later = await ledger.ingest(facts([message(3, "sent")]), policy(budgets), NOW)
    assert later.alerts == ()
    pending = await ledger.pending_alerts()
    assert [(a.threshold, a.mode) for a in pending] == [
        (50, "prepaid"),
        (80, "prepaid"),
        (100, "prepaid"),
    ]
    await ledger.mark_published(pending[:2], NOW)
    assert [a.threshold for a in await ledger.pending_alerts()] == [100]
    # Another month starts from zero.
    december = datetime(2026, 12, 1, tzinfo=UTC)
    nxt = await ledger.ingest(
        facts([message(9, "sent", segments=7, when=december)]), policy(budgets), NOW
    )
    assert [(a.month, a.threshold) for a in nxt.alerts] == [("2026-12", 50)]


async def test_large_batches(ledger: Ledger) -> None:
    """A few thousand events in batches of 500 give the scenario's exact totals."""
    events = scenario(1000)
    for i in range(0, len(events), 500):
        await ledger.ingest(facts(events[i : i + 500]), policy(), NOW)
    rows = await ledger.usage(MONTH)
    assert total(rows, "messages") == 1000 and total(rows, "failed") == 100
    assert total(rows, "segments") == 2000 and total(rows, "minutes") == 200
    # 900 delivered + 100 undelivered messages are billed: 2000 x 0.0079; 100 calls x 2 min.
    assert total(rows, "cost") == Decimal("15.8000") + Decimal("2.8000")


async def test_migration_is_idempotent(ledger_url: str) -> None:
    """Reopening a ledger keeps its data and its schema version."""
    first = create_ledger(ledger_url)
    await first.open()
    await first.ingest(facts([message(1, "sent")]), policy(), NOW)
    await first.close()
    second = create_ledger(ledger_url)
    await second.open()
    await second.open()  # a second open on the same object is harmless too
    assert len(await second.usage(MONTH)) == 1
    await second.close()
