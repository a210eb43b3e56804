"""Usage-metering test helpers: real normalized events, ledgers by URL, a child-process ingester.

Events are built by the real Twilio and Kaleyra normalizers from callback parameters, so the
usage worker is tested on exactly what the gateway publishes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from gateway.providers import kaleyra_events, twilio_events
from gateway.secrets import Secret
from gateway.tenants import KaleyraAccount, Tenant, TwilioAccount
from gateway.usage_config import Budget, Rate, RateCard
from schemas.events import CALL_BOT_RESULT, Event, event_id
from workers.backends import create_ledger
from workers.usage.facts import UsageFact, fact_from_event
from workers.usage.ledger import Ledger, UsagePolicy

ACCOUNT = "AC" + "0" * 31 + "1"
DAY = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

CARD = RateCard(
    rates=(
        Rate("twilio", "sms", "outbound", "", per_segment=Decimal("0.0079")),
        Rate("twilio", "sms", "outbound", "44", per_segment=Decimal("0.0400")),
        Rate("twilio", "whatsapp", "outbound", "", per_segment=Decimal("0.0050")),
        Rate("twilio", "voice", "outbound", "1", per_minute=Decimal("0.0140")),
        Rate("twilio", "voice", "inbound", "", per_minute=Decimal("0.0085")),
        Rate("twilio", "sms", "inbound", "1", per_segment=Decimal("0.0083")),
        Rate("kaleyra", "sms", "outbound", "91", per_segment=Decimal("0.0021")),
    )
)


def tenant(tenant_id: str = "acme") -> Tenant:
    return Tenant(
        id=tenant_id,
        name=tenant_id,
        twilio=TwilioAccount(ACCOUNT, Secret("token")),
        kaleyra=KaleyraAccount("HXTEST00000001IN", Secret("kaleyra-secret")),
    )


def policy(budgets: dict[str, Budget] | None = None) -> UsagePolicy:
    return UsagePolicy(CARD, budgets or {})


def message(
    sid_n: int,
    status: str,
    *,
    segments: int | None = 1,
    to: str = "+14155550100",
    tenant_id: str = "acme",
    when: datetime = DAY,
    error: str | None = None,
) -> Event:
    """A Twilio message.status event as the gateway publishes it."""
    params = {
        "MessageSid": [f"SM{sid_n:032x}"],
        "AccountSid": [ACCOUNT],
        "MessageStatus": [status],
        "To": [to],
        "From": ["+14155550999"],
    }
    if segments is not None:
        params["NumSegments"] = [str(segments)]
    if error:
        params["ErrorCode"] = [error]
    return twilio_events.normalize("message.status", tenant(tenant_id), params, when)


def call(
    sid_n: int,
    status: str,
    *,
    duration: int | None = None,
    sequence: int = 0,
    direction: str = "outbound-api",
    to: str = "+14155550100",
    tenant_id: str = "acme",
    when: datetime = DAY,
) -> Event:
    """A Twilio call.status event."""
    params = {
        "CallSid": [f"CA{sid_n:032x}"],
        "AccountSid": [ACCOUNT],
        "CallStatus": [status],
        "Direction": [direction],
        "To": [to],
        "From": ["+14155550999"],
        "SequenceNumber": [str(sequence)],
    }
    if duration is not None:
        params["CallDuration"] = [str(duration)]
    return twilio_events.normalize("call.status", tenant(tenant_id), params, when)


def received(
    sid_n: int, *, segments: int | None = 1, to: str = "+14155550100", tenant_id: str = "acme"
) -> Event:
    """A Twilio message.incoming event (an SMS to the tenant's number ``to``)."""
    params = {
        "MessageSid": [f"SM{sid_n:032x}"],
        "AccountSid": [ACCOUNT],
        "To": [to],
        "From": ["+14155550999"],
        "Body": ["is my prescription ready?"],
        "SmsStatus": ["received"],
        "NumMedia": ["0"],
    }
    if segments is not None:
        params["NumSegments"] = [str(segments)]
    return twilio_events.normalize("message.incoming", tenant(tenant_id), params, DAY)


def kaleyra_dlr(n: int, status: str, *, units: int = 1, tenant_id: str = "acme") -> Event:
    """A Kaleyra delivery report."""
    params = {
        "message_id": [f"00000000-0000-0000-0000-{n:012d}:1"],
        "status": [status],
        "to": ["+919800000001"],
        "units": [str(units)],
    }
    return kaleyra_events.normalize("message.status", tenant(tenant_id), params, DAY)


def bot_result(n: int, outcome: str, *, tenant_id: str = "acme") -> Event:
    """A call.bot.result event as the flows worker emits it."""
    sid = f"CA{n:032x}"
    return Event(
        id=event_id("hookline", CALL_BOT_RESULT, tenant_id, sid),
        kind=CALL_BOT_RESULT,
        tenant=tenant_id,
        provider="hookline",
        source="hookline/flows",
        subject=sid,
        time=DAY,
        data={"call_sid": sid, "outcome": outcome},
    )


def facts(events: Sequence[Event]) -> list[UsageFact]:
    out = []
    for event in events:
        fact = fact_from_event(event)
        if fact is not None:
            out.append(fact)
    return out


def scenario(n: int, tenant_id: str = "acme") -> list[Event]:
    """n messages (queued, sent, delivered; one in ten undelivered) and n/10 calls."""
    events: list[Event] = []
    for i in range(n):
        final = "undelivered" if i % 10 == 0 else "delivered"
        events += [
            message(i, s, segments=2, tenant_id=tenant_id) for s in ("queued", "sent", final)
        ]
    for i in range(n // 10):
        events += [
            call(i, "ringing", sequence=1, tenant_id=tenant_id),
            call(i, "completed", duration=61, sequence=2, tenant_id=tenant_id),
        ]
    return events


async def ingest_all(
    url: str,
    batches: Sequence[Sequence[Event]],
    budgets: dict[str, Budget] | None = None,
    progress: Path | None = None,
) -> None:
    """Ingest batch after batch; ``progress`` gets the number of committed batches after each."""
    ledger: Ledger = create_ledger(url)
    await ledger.open()
    try:
        for done, batch in enumerate(batches, 1):
            await ledger.ingest(facts(batch), policy(budgets), datetime.now(UTC))
            if progress is not None:
                progress.write_text(str(done))  # noqa: ASYNC240 (a few bytes, tests only)
    finally:
        await ledger.close()


def child_main(url: str, n: int, seed: int, batch: int, progress: Path | None) -> None:
    """Entry point of an ingesting child process: the scenario in a seeded shuffled order."""
    import random

    events = scenario(n)
    random.Random(seed).shuffle(events)
    batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    budgets = {"acme": Budget("prepaid", Decimal("1.00"))}
    asyncio.run(ingest_all(url, batches, budgets, progress))


if __name__ == "__main__":  # python -m tests.support.usage URL N SEED BATCH [PROGRESS_FILE]
    args = sys.argv[1:]
    child_main(
        args[0], int(args[1]), int(args[2]), int(args[3]), Path(args[4]) if len(args) > 4 else None
    )
