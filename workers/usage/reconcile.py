"""``hookline usage reconcile``: the ledger against each subaccount's Twilio Usage Records.

For every tenant with a Twilio subaccount, the official client reads the month's Usage
Records of that subaccount only (``include_subaccounts=False``), authenticated with the
subaccount's own SID and auth token, for the categories ``sms`` (messages and segments),
``calls`` (calls and minutes) and ``totalprice`` (everything billed, so the ledger side adds
the rental of the tenant's numbers). https://www.twilio.com/docs/usage/api/usage-record

A measure differs when |ledger - Twilio| exceeds the tolerance: for money the larger of
``tolerance_amount`` and ``tolerance_percent`` of the larger side, for counts the percentage
alone. Twilio's records lag real time by minutes to hours, so run it for a closed month.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from gateway.tenants import Tenant
from gateway.usage_config import RateCard, decimal_text
from workers.twilio_rest import rebased
from workers.usage.ledger import UsageRow
from workers.usage.report import rental_cost

CATEGORIES: Final = ("sms", "calls", "totalprice")

ClientFactory = Callable[[str, str], Any]


@dataclass(frozen=True, slots=True)
class Comparison:
    """One measure of one tenant: both sides and whether they differ beyond the tolerance."""

    tenant: str
    account_sid: str
    measure: str
    ledger: Decimal
    twilio: Decimal
    differs: bool

    @property
    def difference(self) -> Decimal:
        return self.ledger - self.twilio


@dataclass(frozen=True, slots=True)
class TenantFailure:
    """A tenant whose Usage Records could not be read."""

    tenant: str
    account_sid: str
    error: str


def month_range(month: str) -> tuple[date, date]:
    """First and last day of YYYY-MM."""
    year, number = int(month[:4]), int(month[5:7])
    return date(year, number, 1), date(year, number, calendar.monthrange(year, number)[1])


def twilio_client(api_base: str | None = None) -> ClientFactory:
    """A factory of official Twilio clients for (subaccount SID, auth token).

    ``api_base`` sends every request to another base URL instead of https://api.twilio.com
    (a proxy, or a local test double); None talks to Twilio.
    """
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    class _Rebased(TwilioHttpClient):  # type: ignore[misc]
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return super().request(method, rebased(url, api_base), *args, **kwargs)

    def build(account_sid: str, auth_token: str) -> Any:
        return Client(
            account_sid, auth_token, account_sid=account_sid, http_client=_Rebased(timeout=30)
        )

    return build


def fetch_usage(client: Any, account_sid: str, month: str) -> dict[str, dict[str, Decimal]]:
    """category -> {count, usage, price} summed over the month's records (blocking)."""
    first, last = month_range(month)
    found: dict[str, dict[str, Decimal]] = {}
    for category in CATEGORIES:
        sums = {"count": Decimal(0), "usage": Decimal(0), "price": Decimal(0)}
        records = client.api.v2010.accounts(account_sid).usage.records.list(
            category=category, start_date=first, end_date=last, include_subaccounts=False
        )
        for record in records:
            for name in sums:
                sums[name] += _decimal(getattr(record, name, None))
        found[category] = sums
    return found


def _decimal(value: object) -> Decimal:
    if value is None or value == "":
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def _differs(a: Decimal, b: Decimal, card: RateCard, money: bool) -> bool:
    allowed = max(abs(a), abs(b)) * card.tolerance_percent / 100
    if money:
        allowed = max(allowed, card.tolerance_amount)
    return abs(a - b) > allowed


def compare(
    tenant: Tenant, rows: Sequence[UsageRow], twilio: dict[str, dict[str, Decimal]], card: RateCard
) -> list[Comparison]:
    """The ledger's Twilio figures for the tenant against its Usage Records."""
    sid = tenant.twilio.account_sid if tenant.twilio else ""
    mine = [r for r in rows if r.tenant == tenant.id and r.provider == "twilio"]
    sms = [r for r in mine if r.channel == "sms"]
    calls = [r for r in mine if r.channel == "voice"]
    # Only what Twilio bills is compared: its counts (messages or segments? unanswered calls?)
    # are not defined precisely enough to match the ledger's. totalprice covers everything
    # Twilio billed, number rental included.
    total = sum((r.cost for r in mine), Decimal(0)) + rental_cost(card, tenant)
    measures = (
        (
            "sms segments",
            Decimal(sum(r.billed_segments for r in sms)),
            twilio["sms"]["usage"],
            False,
        ),
        ("sms price", sum((r.cost for r in sms), Decimal(0)), twilio["sms"]["price"], True),
        ("call minutes", Decimal(sum(r.minutes for r in calls)), twilio["calls"]["usage"], False),
        ("calls price", sum((r.cost for r in calls), Decimal(0)), twilio["calls"]["price"], True),
        ("total price", total, twilio["totalprice"]["price"], True),
    )
    return [
        Comparison(tenant.id, sid, name, ours, theirs, _differs(ours, theirs, card, money))
        for name, ours, theirs, money in measures
    ]


async def reconcile(
    tenants: Sequence[Tenant],
    rows: Sequence[UsageRow],
    card: RateCard,
    month: str,
    clients: ClientFactory,
) -> tuple[list[Comparison], list[TenantFailure]]:
    """Compare every Twilio tenant; the blocking client runs in a thread, one tenant at a time
    (Usage Records are rate-limited per account)."""
    from twilio.base.exceptions import TwilioException

    comparisons: list[Comparison] = []
    failures: list[TenantFailure] = []
    for tenant in tenants:
        if tenant.twilio is None:
            continue
        sid, token = tenant.twilio.account_sid, tenant.twilio.auth_token.reveal()
        try:
            client = clients(sid, token)
            usage = await asyncio.to_thread(fetch_usage, client, sid, month)
        except (TwilioException, OSError, ValueError) as exc:
            # requests' errors are OSErrors; TwilioRestException names status and code.
            failures.append(TenantFailure(tenant.id, sid, f"{type(exc).__name__}: {exc}"))
            continue
        comparisons += compare(tenant, rows, usage, card)
    return comparisons, failures


def format_comparisons(
    month: str, comparisons: Sequence[Comparison], failures: Sequence[TenantFailure], card: RateCard
) -> str:
    """An aligned table of every measure, then one line per failure and a summary."""
    head = ("tenant", "subaccount", "measure", "ledger", "twilio", "difference", "")
    lines = [head] + [
        (
            c.tenant,
            c.account_sid,
            c.measure,
            decimal_text(c.ledger),
            decimal_text(c.twilio),
            f"{c.difference:+f}",
            "DIFFERS" if c.differs else "ok",
        )
        for c in comparisons
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [
        f"reconcile {month}: ledger vs Twilio Usage Records (tolerance "
        f"{card.tolerance_amount} {card.currency} or {card.tolerance_percent}%)"
    ]
    if comparisons:
        for line in lines:
            out.append(
                "  ".join(
                    c.ljust(w) if i < 3 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(line, widths, strict=True))
                ).rstrip()
            )
    for failure in failures:
        out.append(f"FAILED {failure.tenant} ({failure.account_sid}): {failure.error}")
    differing = sum(c.differs for c in comparisons)
    out.append(f"{differing} difference(s) beyond tolerance, {len(failures)} tenant(s) failed")
    return "\n".join(out) + "\n"
