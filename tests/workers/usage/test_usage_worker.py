"""The usage Handler: per-delivery results, batch-wide transient failures, budget events
published once through the outbox (and valid against usage.budget.json), budget_exhausted."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.broker.memory import FailingPublisher, MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.errors import PoisonMessage, TransientError
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant
from gateway.usage_config import Budget
from schemas.events import Event
from schemas.topology import USAGE_QUEUE, tenant_queue
from tests.support.schema_check import assert_valid_event
from tests.support.usage import CARD, bot_result, call, message
from workers.handler import Delivery, Handler
from workers.usage.ledger import MemoryLedger, UsagePolicy
from workers.usage.sqlite_ledger import SqliteLedger
from workers.usage.usage_worker import (
    UsageHandler,
    budget_exhausted,
    create_usage_handler,
    usage_policy,
)

BUDGETS = {"acme": Budget("postpaid", Decimal("0.05"))}


def delivery(event: Event) -> Delivery:
    return Delivery(body=event.to_json(), routing_key=event.routing_key, message_id=event.id)


def handler(ledger: MemoryLedger | SqliteLedger, publisher: object = None) -> UsageHandler:
    return UsageHandler(
        ledger,
        UsagePolicy(CARD, BUDGETS),
        publisher,  # type: ignore[arg-type]
        clock=FakeClock(),
    )


def test_is_a_handler() -> None:
    """The usage handler satisfies the consumer contract and consumes hookline.usage."""
    usage: Handler = handler(MemoryLedger())
    assert (usage.name, usage.queue) == ("usage", USAGE_QUEUE)
    assert usage.batch_size > 1 and usage.batch_wait_s > 0


async def test_poison_is_per_delivery() -> None:
    """Unparsable bodies, foreign kinds and bad fields fail alone; the rest is counted."""
    ledger = MemoryLedger()
    usage = handler(ledger)
    sample = message(9, "sent")
    foreign = Event(
        id="x",
        kind="call.incoming",
        tenant="acme",
        provider="twilio",
        source=sample.source,
        subject="CA1",
        time=sample.time,
        data={},
    )
    bad_segments = message(8, "sent")
    bad_segments.data["segments"] = -3
    batch = [
        delivery(message(1, "sent")),
        Delivery(b"{not json", "acme.twilio.message.status"),
        delivery(foreign),
        delivery(bad_segments),
        delivery(call(1, "completed", duration=5)),
        delivery(bot_result(1, "voicemail")),
    ]
    results = await usage.handle(batch)
    assert results[0] is None and results[4] is None and results[5] is None
    for index, reason in (
        (1, "malformed_event"),
        (2, "unexpected_kind"),
        (3, "invalid_usage_event"),
    ):
        result = results[index]
        assert isinstance(result, PoisonMessage) and result.reason == reason
    assert {item.kind for item in ledger.items.values()} == {"message", "call", "bot"}


async def test_ledger_outage_fails_the_whole_batch() -> None:
    """A database outage raises TransientError and counts nothing; the retry counts once."""
    ledger = MemoryLedger()
    usage = handler(ledger)
    batch = [delivery(message(1, "sent")), delivery(message(2, "sent"))]
    ledger.fail_next = OSError("disk I/O error")
    with pytest.raises(TransientError):
        await usage.handle(batch)
    assert ledger.items == {}
    assert await usage.handle(batch) == [None, None]
    assert await usage.handle(batch) == [None, None]  # redelivered after a lost ack
    assert len(ledger.items) == 2 and len(ledger.events) == 2


async def test_budget_events_are_published_once_and_valid(tmp_path: Path) -> None:
    """Crossing 50/80/100 % publishes three valid usage.budget events, never more."""
    broker = MemoryBroker()
    ledger = SqliteLedger(tmp_path / "ledger.db")
    usage = handler(ledger, MemoryPublisher(broker, ["acme"]))
    await usage.start()
    try:
        await usage.handle([delivery(message(1, "sent", segments=4))])  # 0.0316: 63 %
        await usage.handle([delivery(message(2, "sent", segments=3))])  # 0.0553: 110 %
        await usage.handle([delivery(message(2, "sent", segments=3)), delivery(message(3, "sent"))])
        events = broker.drain(tenant_queue("acme"))
        assert [e.data["threshold_percent"] for e in events] == [50, 80, 100]
        for event in events:
            assert_valid_event(event.to_dict())
        assert events[-1].data["exhausted"] is True and events[0].data["exhausted"] is False
        assert events[-1].data["spent"] == "0.0553" and events[-1].data["mode"] == "postpaid"
        assert await budget_exhausted(ledger, BUDGETS, "acme", "2026-11")
        assert not await budget_exhausted(ledger, BUDGETS, "acme", "2026-12")
        assert not await budget_exhausted(ledger, BUDGETS, "other", "2026-11")
    finally:
        await usage.close()


async def test_unpublished_alerts_wait_in_the_outbox(tmp_path: Path) -> None:
    """A broker outage leaves the alert pending; a later start publishes it with the same id."""
    path = tmp_path / "ledger.db"
    down = handler(SqliteLedger(path), FailingPublisher())
    await down.start()
    assert await down.handle([delivery(message(1, "sent", segments=7))]) == [None]
    await down.close()
    broker = MemoryBroker()
    up = handler(SqliteLedger(path), MemoryPublisher(broker, ["acme"]))
    await up.start()  # publishes what is pending
    await up.close()
    events = broker.drain(tenant_queue("acme"))
    assert [e.data["threshold_percent"] for e in events] == [50, 80, 100]
    assert len({e.id for e in events}) == 3


def test_usage_policy_from_settings() -> None:
    """Budgets come from each tenant's [tenants.budget], prices from [usage]."""
    tenants = StaticTenantRegistry(
        [Tenant("acme", "Acme", budget=BUDGETS["acme"]), Tenant("solo", "Solo")]
    )
    policy = usage_policy(Settings(tenants=tenants, rate_card=CARD))
    assert policy.budgets == BUDGETS and policy.card is CARD
    built = create_usage_handler(Settings(tenants=tenants, db_url="sqlite:///x.db"))
    # memory://: no broker a tenant could read from, so alerts stay pending in the ledger.
    assert isinstance(built.ledger, SqliteLedger) and built.publisher is None
    on_rabbit = create_usage_handler(
        Settings(
            tenants=tenants, db_url="postgresql://h/db", amqp_url="amqp://guest:guest@127.0.0.1:1/"
        )
    )
    assert on_rabbit.publisher is not None and on_rabbit.publisher.ready is False
    assert type(on_rabbit.ledger).__name__ == "PostgresLedger"


def test_budget_event_money_never_uses_exponents() -> None:
    """Tiny amounts are written 0.0000001, not 1E-7, so the event stays valid."""
    from datetime import UTC, datetime

    from workers.usage.ledger import BudgetAlert

    alert = BudgetAlert(
        "acme",
        "2026-11",
        100,
        "prepaid",
        Decimal("0.0000001"),
        Decimal("1E-7"),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    event = alert.to_event()
    assert_valid_event(event.to_dict())
    assert event.data["spent"] == "0.0000001" and event.data["used_percent"] == "100.00"


async def test_an_event_whose_body_names_another_tenant_than_its_key_is_never_metered() -> None:
    """A status event published under routing key evil.* whose body says acme (or retried,
    with the original key in its header) is tenant_mismatch poison and meters nothing."""
    ledger = MemoryLedger()
    usage = handler(ledger)
    forged = message(1, "sent")
    key = forged.routing_key.replace("acme.", "evil.", 1)
    results = await usage.handle(
        [
            Delivery(body=forged.to_json(), routing_key=key, message_id=forged.id),
            Delivery(body=forged.to_json(), routing_key=key, message_id=forged.id, attempt=2),
        ]
    )
    for result in results:
        assert isinstance(result, PoisonMessage) and result.reason == "tenant_mismatch"
    assert ledger.items == {}
