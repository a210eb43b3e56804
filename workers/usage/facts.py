"""Pure metering core: an event becomes a usage fact; facts merge into per-message/call items.

No I/O here. Every ledger implementation (SQLite, PostgreSQL, the in-memory fake) runs the
same ``merge`` inside its transaction, so the counting rules live in one place:

- a message or call is one *item*, keyed by (tenant, provider, kind, sid), however many status
  events arrive for it; its day is the UTC day of its first event;
- states only move forward (``MESSAGE_RANK``/``CALL_RANK``): a late ``sent`` after
  ``delivered`` changes nothing; of two final states the first one stays;
- segments are the largest count reported for the message (a message reported without one is
  one segment); billable minutes are CallDuration rounded up to the minute, for completed calls
  (https://support.twilio.com/hc/en-us/articles/223132307: partial minutes round up);
- cost = units x the rate card's unit price, as Decimal; a failed or canceled message never
  left the provider and costs nothing, an undelivered one is billed (except on WhatsApp)
  (https://support.twilio.com/hc/en-us/articles/223181728). Twilio's flat processing fee for
  failed messages (https://support.twilio.com/hc/en-us/articles/27502337507483) is not
  modelled: reconciliation shows it as a small difference in the total price.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC
from decimal import Decimal
from typing import Any, Final

from gateway.errors import PoisonMessage
from gateway.usage_config import RateCard, digits_of
from schemas.events import CALL_BOT_RESULT, CALL_STATUS, MESSAGE_INCOMING, MESSAGE_STATUS, Event

MESSAGE, CALL, BOT = "message", "call", "bot"
UNKNOWN: Final = "unknown"

# Higher is later. Final states share a rank, so the first final report wins.
# https://www.twilio.com/docs/messaging/api/message-resource#message-status-values
MESSAGE_RANK: Final[dict[str, int]] = {
    UNKNOWN: 0, "accepted": 1, "scheduled": 1, "queued": 2, "sent": 3, "received": 4,
    "delivered": 4, "undelivered": 4, "failed": 4, "canceled": 4, "read": 5,
}  # fmt: skip
# https://www.twilio.com/docs/voice/api/call-resource#call-status-values
CALL_RANK: Final[dict[str, int]] = {
    UNKNOWN: 0, "queued": 1, "initiated": 1, "ringing": 2, "in-progress": 3, "completed": 4,
    "busy": 4, "no-answer": 4, "canceled": 4, "failed": 4,
}  # fmt: skip
DELIVERED: Final = frozenset({"delivered", "read"})
NOT_DELIVERED: Final = frozenset({"failed", "undelivered"})
UNBILLED_MESSAGE: Final = frozenset({"failed", "canceled"})
# Undelivered WhatsApp messages are not charged either (same support article).
UNBILLED_BY_CHANNEL: Final = {"whatsapp": frozenset({"failed", "canceled", "undelivered"})}
_MAX_COUNT: Final = 10**9


@dataclass(frozen=True, slots=True)
class UsageFact:
    """What one status event says about one message or call."""

    event_id: str
    tenant: str
    provider: str
    kind: str  # message, call or bot
    sid: str
    channel: str  # sms, mms, whatsapp, voice (or the event's own value: rcs, unknown, ...)
    direction: str  # outbound or inbound
    day: str  # YYYY-MM-DD, UTC
    status: str  # normalized status, or the bot call's outcome
    #: The first 8 digits of the destination: enough for every rate-card prefix, and no full
    #: phone number at rest in the ledger.
    destination: str | None = None
    segments: int | None = None
    duration_s: int | None = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.provider, self.kind, self.sid)

    @property
    def once(self) -> tuple[str, str]:
        """The exactly-once key: event ids are only unique within a tenant (two tenants on one
        provider account get the same deterministic ids for the same callback)."""
        return (self.tenant, self.event_id)

    @property
    def rank(self) -> int:
        if self.kind == MESSAGE:
            return MESSAGE_RANK.get(self.status, 0)
        return CALL_RANK.get(self.status, 0) if self.kind == CALL else 1


@dataclass(frozen=True, slots=True)
class Item:
    """One message, call or bot-call outcome as the ledger stores it (one row)."""

    tenant: str
    provider: str
    kind: str
    sid: str
    channel: str
    direction: str
    day: str
    status: str
    rank: int
    destination: str | None
    segments: int
    duration_s: int | None
    minutes: int
    rated: bool
    billed: bool
    unit_price: Decimal
    cost: Decimal
    events: int

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.tenant, self.provider, self.kind, self.sid)

    @property
    def month(self) -> str:
        return self.day[:7]


def fact_from_event(event: Event) -> UsageFact | None:
    """The fact an event states, None for an event that meters nothing (a recording callback).

    Raises PoisonMessage naming what is wrong: this event can never be counted.
    """
    data = event.data
    day = event.time.astimezone(UTC).date().isoformat()
    base: dict[str, Any] = {
        "event_id": event.id,
        "tenant": event.tenant,
        "provider": event.provider,
        "day": day,
    }
    if event.kind in (MESSAGE_STATUS, MESSAGE_INCOMING):
        # A received message is billed too, per segment at the inbound rate
        # (https://support.twilio.com/hc/en-us/articles/223181528), and no status callback
        # ever follows it: its message.incoming event is its only report. Its destination is
        # the tenant's own number, which is what the inbound rate depends on.
        inbound = event.kind == MESSAGE_INCOMING
        sid = _text(data, "message_sid") or _text(data, "message_id") or event.subject
        return UsageFact(
            **base,
            kind=MESSAGE,
            sid=sid,
            channel=_text(data, "channel") or "sms",
            direction="inbound" if inbound else "outbound",
            status="received" if inbound else _text(data, "status") or UNKNOWN,
            destination=_destination(data),
            segments=_count(data, "segments", event),
        )
    if event.kind == CALL_STATUS:
        status = _text(data, "status") or UNKNOWN
        if data.get("recording") is not None and status == UNKNOWN:
            return None  # a recording status callback: the call's own events meter the call
        raw_direction = (_text(data, "direction") or "").lower()
        direction = "inbound" if raw_direction.startswith("inbound") else "outbound"
        return UsageFact(
            **base,
            kind=CALL,
            sid=_text(data, "call_sid") or event.subject,
            channel="voice",
            direction=direction,
            status=status,
            destination=_destination(data),
            duration_s=_count(data, "duration_s", event),
        )
    if event.kind == CALL_BOT_RESULT:
        outcome = _text(data, "outcome")
        if outcome is None:
            raise PoisonMessage(
                f"call.bot.result event {event.id}: expected data.outcome, a "
                f"non-empty string, got {data.get('outcome')!r}",
                reason="invalid_usage_event",
            )
        return UsageFact(
            **base,
            kind=BOT,
            sid=_text(data, "call_sid") or event.subject,
            channel="voice",
            direction="outbound",
            status=outcome[:64],
            destination=_destination(data),
        )
    raise PoisonMessage(
        f"event {event.id}: the usage worker meters message.status, "
        f"message.incoming, call.status and call.bot.result, got {event.kind!r}",
        reason="unexpected_kind",
    )


def _text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value.strip() or None if isinstance(value, str) else None


def _destination(data: dict[str, Any]) -> str | None:
    return digits_of(_text(data, "to"))[:8] or None


def _count(data: dict[str, Any], name: str, event: Event) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_COUNT:
        raise PoisonMessage(
            f"{event.kind} event {event.id}: expected data.{name} to be null or "
            f"a count from 0 to {_MAX_COUNT - 1}, got {value!r}",
            reason="invalid_usage_event",
        )
    return value


def billable_minutes(duration_s: int | None, status: str) -> int:
    """CallDuration rounded up to whole minutes, for completed calls; 0 otherwise."""
    if status != "completed" or not duration_s:
        return 0
    return -(-duration_s // 60)


def merge(item: Item | None, fact: UsageFact, card: RateCard) -> Item:
    """The item after ``fact``: forward-only state, largest segment count, recomputed cost."""
    return price(fold(item, fact), card)


def fold(item: Item | None, fact: UsageFact) -> Item:
    """The item's state after ``fact``, not yet priced."""
    if item is None:
        return Item(
            tenant=fact.tenant,
            provider=fact.provider,
            kind=fact.kind,
            sid=fact.sid,
            channel=fact.channel,
            direction=fact.direction,
            day=fact.day,
            status=fact.status,
            rank=fact.rank,
            destination=fact.destination,
            segments=fact.segments or 0,
            duration_s=fact.duration_s,
            minutes=0,
            rated=False,
            billed=False,
            unit_price=Decimal(0),
            cost=Decimal(0),
            events=1,
        )
    forward = fact.rank > item.rank
    return replace(
        item,
        status=fact.status if forward else item.status,
        rank=fact.rank if forward else item.rank,
        destination=item.destination or fact.destination,
        segments=max(item.segments, fact.segments or 0),
        duration_s=_max_opt(item.duration_s, fact.duration_s),
        events=item.events + 1,
    )


def price(item: Item, card: RateCard) -> Item:
    """The item with its units, unit price and cost from the rate card."""
    if item.kind == BOT:
        return item  # the call itself is metered by its call.status events
    rate = card.rate_for(item.provider, item.channel, item.direction, item.destination)
    unit_price = rate.unit_price if rate is not None else Decimal(0)
    if item.kind == MESSAGE:
        segments = max(item.segments, 1)
        billed = item.status not in UNBILLED_BY_CHANNEL.get(item.channel, UNBILLED_MESSAGE)
        return replace(
            item,
            segments=segments,
            rated=rate is not None,
            billed=billed,
            unit_price=unit_price,
            cost=unit_price * segments if billed else Decimal(0),
        )
    minutes = billable_minutes(item.duration_s, item.status)
    return replace(
        item,
        minutes=minutes,
        rated=rate is not None,
        billed=minutes > 0,
        unit_price=unit_price,
        cost=unit_price * minutes,
    )


def _max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def new_facts(facts: Iterable[UsageFact], seen: set[tuple[str, str]]) -> list[UsageFact]:
    """The facts whose (tenant, event id) is in ``seen`` (just inserted), each once, in input
    order."""
    out: list[UsageFact] = []
    for fact in facts:
        if fact.once in seen:
            seen.discard(fact.once)
            out.append(fact)
    return out


def merge_batch(
    existing: dict[tuple[str, str, str, str], Item], facts: Iterable[UsageFact], card: RateCard
) -> tuple[dict[tuple[str, str, str, str], Item], dict[tuple[str, str], Decimal]]:
    """Fold new facts into their items: (changed items by key, cost delta by (tenant, month))."""
    folded: dict[tuple[str, str, str, str], Item] = {}
    for fact in facts:
        current = folded.get(fact.key) or existing.get(fact.key)
        folded[fact.key] = fold(current, fact)
    changed = {key: price(item, card) for key, item in folded.items()}  # once per item
    deltas: dict[tuple[str, str], Decimal] = {}
    for key, item in changed.items():
        before = existing.get(key)
        delta = item.cost - (before.cost if before is not None else Decimal(0))
        month = (item.tenant, item.month)
        deltas[month] = deltas.get(month, Decimal(0)) + delta
    return changed, deltas
