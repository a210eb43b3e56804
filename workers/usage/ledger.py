"""The usage ledger interface, what it stores and returns, and an in-memory fake for tests.

Exactly once per (tenant, event id): every implementation inserts the batch's event ids into a
table whose primary key is (tenant, event_id) (``INSERT ... ON CONFLICT DO NOTHING``) and
applies only the facts whose key was actually inserted, all in one transaction with the item,
month and budget alert writes. A redelivered batch (a worker killed before its ack) finds its
ids already there and changes nothing; two workers racing on the same id are serialized by the
unique key, so one inserts and the other does nothing. Nothing is ever checked first and
inserted later. The tenant is part of the key because event ids are derived from the provider
account: two tenants configured with the same account would otherwise share ids, and the second
tenant's genuine events would be dropped as already seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final, Protocol

from gateway.errors import TransientError
from gateway.usage_config import Budget, RateCard, decimal_text
from schemas.events import USAGE_BUDGET, Event, event_id, format_time
from workers.usage.facts import (
    BOT,
    CALL,
    DELIVERED,
    MESSAGE,
    NOT_DELIVERED,
    Item,
    UsageFact,
    merge_batch,
    new_facts,
)

#: Columns of usage_items, in the order both implementations read and write them.
ITEM_COLUMNS: Final = (
    "tenant",
    "provider",
    "kind",
    "sid",
    "channel",
    "direction",
    "day",
    "status",
    "rank",
    "destination",
    "segments",
    "duration_s",
    "minutes",
    "rated",
    "billed",
    "unit_price",
    "cost",
    "events",
)
SCHEMA_VERSION: Final = 2


class LedgerUnavailable(TransientError):
    """The ledger database cannot be reached or written now (retry the batch later)."""

    reason = "ledger_unavailable"


@dataclass(frozen=True, slots=True)
class UsagePolicy:
    """What ingest needs besides the facts: prices, and the budget of each tenant."""

    card: RateCard = field(default_factory=RateCard)
    budgets: Mapping[str, Budget] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """One threshold of one tenant's monthly budget, crossed (a row of budget_alerts)."""

    tenant: str
    month: str
    threshold: int
    mode: str
    amount: Decimal
    spent: Decimal
    crossed_at: datetime
    currency: str = "USD"

    @property
    def event_id(self) -> str:
        # Deterministic: a re-publish after a crash carries the same id, consumers dedupe.
        return event_id("hookline", USAGE_BUDGET, self.tenant, self.month, str(self.threshold))

    def to_event(self) -> Event:
        used = (self.spent * 100 / self.amount).quantize(Decimal("0.01"))
        return Event(
            id=self.event_id,
            kind=USAGE_BUDGET,
            tenant=self.tenant,
            provider="hookline",
            source="hookline/usage",
            subject=f"{self.tenant}/{self.month}/{self.threshold}",
            time=self.crossed_at,
            data={
                "month": self.month,
                "threshold_percent": self.threshold,
                "mode": self.mode,
                "budget": decimal_text(self.amount),
                "spent": decimal_text(self.spent),
                "used_percent": decimal_text(used),
                "currency": self.currency,
                "exhausted": self.spent >= self.amount,
                "crossed_at": format_time(self.crossed_at),
            },
        )


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What one batch did: facts applied, duplicates ignored, thresholds newly crossed."""

    applied: int
    duplicates: int
    alerts: tuple[BudgetAlert, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Counters of one (tenant, provider, channel, direction, day)."""

    tenant: str
    provider: str
    channel: str
    direction: str
    day: str
    messages: int = 0
    segments: int = 0
    #: Segments of messages that were sent (failed and canceled ones are not billed).
    billed_segments: int = 0
    delivered: int = 0
    failed: int = 0
    calls: int = 0
    minutes: int = 0
    cost: Decimal = Decimal(0)
    unrated: int = 0


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    """Bot calls of one tenant and day that ended with one outcome."""

    tenant: str
    day: str
    outcome: str
    count: int


class Ledger(Protocol):
    """Where usage is counted. Implementations: SqliteLedger, PostgresLedger, MemoryLedger."""

    async def open(self) -> None:
        """Connect, and create or migrate the schema (schema_version table)."""

    async def close(self) -> None:
        """Release the connection; safe to call twice."""

    async def ingest(
        self, facts: Sequence[UsageFact], policy: UsagePolicy, now: datetime
    ) -> IngestOutcome:
        """Apply the facts whose (tenant, event id) is new, in one transaction
        (LedgerUnavailable)."""
        ...

    async def pending_alerts(self) -> list[BudgetAlert]:
        """Crossed thresholds whose usage.budget event is not published yet, oldest first."""
        ...

    async def mark_published(self, alerts: Sequence[BudgetAlert], now: datetime) -> None:
        """Record that these alerts' events were confirmed by the broker."""

    async def month_spend(self, tenant: str, month: str) -> Decimal:
        """The tenant's metered cost in month YYYY-MM."""
        ...

    async def usage(self, month: str) -> list[UsageRow]:
        """Counters of every (tenant, provider, channel, direction, day) of the month."""
        ...

    async def outcomes(self, month: str) -> list[OutcomeRow]:
        """Bot-call outcomes of the month."""
        ...


def crossed(total: Decimal, budget: Budget) -> list[int]:
    """The thresholds (percent) that a month's spend of ``total`` has reached."""
    return [t for t in budget.thresholds if total * 100 >= budget.amount * t]


def new_alerts(
    policy: UsagePolicy, totals: Mapping[tuple[str, str], Decimal], now: datetime
) -> list[BudgetAlert]:
    """Every threshold reached by the given month totals (the store keeps each only once)."""
    alerts: list[BudgetAlert] = []
    for (tenant, month), total in sorted(totals.items()):
        budget = policy.budgets.get(tenant)
        if budget is not None:
            alerts += [
                BudgetAlert(
                    tenant, month, t, budget.mode, budget.amount, total, now, policy.card.currency
                )
                for t in crossed(total, budget)
            ]
    return alerts


def month_bounds(month: str) -> tuple[str, str]:
    """First and last possible day strings of YYYY-MM, for ``day BETWEEN`` queries."""
    return f"{month}-01", f"{month}-31"


def rows_from_items(items: Iterable[Item]) -> list[UsageRow]:
    """Counters per (tenant, provider, channel, direction, day) of the given items."""
    acc: dict[tuple[str, str, str, str, str], list[int]] = {}
    costs: dict[tuple[str, str, str, str, str], Decimal] = {}
    for item in items:
        if item.kind not in (MESSAGE, CALL):
            continue
        key = (item.tenant, item.provider, item.channel, item.direction, item.day)
        counts = acc.setdefault(key, [0] * 8)
        if item.kind == MESSAGE:
            counts[0] += 1
            counts[1] += item.segments
            counts[2] += item.status in DELIVERED
            counts[3] += item.status in NOT_DELIVERED
            counts[7] += item.segments if item.billed else 0
        else:
            counts[4] += 1
            counts[5] += item.minutes
        counts[6] += not item.rated
        costs[key] = costs.get(key, Decimal(0)) + item.cost
    rows = []
    for key in sorted(acc):
        m, seg, ok, ko, calls, minutes, unrated, billed = acc[key]
        rows.append(
            UsageRow(
                *key,
                messages=m,
                segments=seg,
                billed_segments=billed,
                delivered=ok,
                failed=ko,
                calls=calls,
                minutes=minutes,
                cost=costs[key],
                unrated=unrated,
            )
        )
    return rows


class MemoryLedger:
    """The ledger rules on dicts (no durability): for unit tests of handlers and reports."""

    def __init__(self) -> None:
        self.events: set[tuple[str, str]] = set()  # (tenant, event_id)
        self.items: dict[tuple[str, str, str, str], Item] = {}
        self.months: dict[tuple[str, str], Decimal] = {}
        self.alerts: dict[tuple[str, str, int], tuple[BudgetAlert, datetime | None]] = {}
        self.fail_next: Exception | None = None

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ingest(
        self, facts: Sequence[UsageFact], policy: UsagePolicy, now: datetime
    ) -> IngestOutcome:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise LedgerUnavailable(f"memory ledger: {error}") from error
        inserted = {f.once for f in facts} - self.events
        self.events |= inserted
        fresh = new_facts(facts, set(inserted))
        changed, deltas = merge_batch(self.items, fresh, policy.card)
        self.items.update(changed)
        for month, delta in deltas.items():
            self.months[month] = self.months.get(month, Decimal(0)) + delta
        alerts = []
        for alert in new_alerts(policy, {m: self.months[m] for m in deltas}, now):
            key = (alert.tenant, alert.month, alert.threshold)
            if key not in self.alerts:
                self.alerts[key] = (alert, None)
                alerts.append(alert)
        return IngestOutcome(len(fresh), len(facts) - len(fresh), tuple(alerts))

    async def pending_alerts(self) -> list[BudgetAlert]:
        return [alert for alert, published in self.alerts.values() if published is None]

    async def mark_published(self, alerts: Sequence[BudgetAlert], now: datetime) -> None:
        for alert in alerts:
            self.alerts[(alert.tenant, alert.month, alert.threshold)] = (alert, now)

    async def month_spend(self, tenant: str, month: str) -> Decimal:
        return self.months.get((tenant, month), Decimal(0))

    async def usage(self, month: str) -> list[UsageRow]:
        return rows_from_items(i for i in self.items.values() if i.month == month)

    async def outcomes(self, month: str) -> list[OutcomeRow]:
        counts: dict[tuple[str, str, str], int] = {}
        for item in self.items.values():
            if item.kind == BOT and item.month == month:
                key = (item.tenant, item.day, item.status)
                counts[key] = counts.get(key, 0) + 1
        return [OutcomeRow(*key, count=n) for key, n in sorted(counts.items())]
