"""Unit economics per tenant for one month, from the ledger and the config (pure code).

    COGS            = metered cost (ledger) + monthly rental of the tenant's numbers
    gross margin    = plan revenue (plan_monthly) - COGS
    margin %        = gross margin / plan revenue x 100
    budget use %    = metered cost / budget amount x 100
    LTV             = gross margin / monthly_churn      (monthly margin over expected lifetime)
    CAC payback     = cac / gross margin                (months of margin that repay acquisition)

LTV and payback need a positive margin and the tenant's ``monthly_churn`` / ``cac``; otherwise
they are empty. All money is Decimal; JSON and CSV carry exact decimal strings, the table rounds
for reading only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

import orjson

from gateway.tenants import Tenant
from gateway.usage_config import Budget, RateCard, decimal_text
from workers.usage.ledger import OutcomeRow, UsageRow

FORMATS: Final = ("table", "json", "csv")
_CENT: Final = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class TenantReport:
    """One tenant's month."""

    tenant: str
    month: str
    currency: str
    messages: int
    segments: int
    delivered: int
    failed: int
    calls: int
    minutes: int
    bot_calls: int
    bot_outcomes: dict[str, int]
    unrated: int
    usage_cost: Decimal
    rental_cost: Decimal
    cogs: Decimal
    revenue: Decimal | None
    gross_margin: Decimal | None
    margin_percent: Decimal | None
    budget_mode: str | None
    budget: Decimal | None
    budget_used_percent: Decimal | None
    ltv: Decimal | None
    cac_payback_months: Decimal | None


def rental_cost(card: RateCard, tenant: Tenant) -> Decimal:
    """The month's rental of the tenant's Twilio numbers (numbers without a rental cost 0)."""
    total = Decimal(0)
    for number in tenant.usage.numbers:
        rental = card.rental_for("twilio", number)
        total += rental.monthly if rental is not None else Decimal(0)
    return total


def _ratio(part: Decimal, whole: Decimal | None, scale: int = 100) -> Decimal | None:
    if whole is None or whole == 0:
        return None
    return (part * scale / whole).quantize(_CENT, ROUND_HALF_EVEN)


def build_report(
    month: str,
    tenants: Iterable[Tenant],
    card: RateCard,
    rows: Sequence[UsageRow],
    outcomes: Sequence[OutcomeRow],
) -> list[TenantReport]:
    """One TenantReport per configured tenant, plus any tenant the ledger has that the config
    no longer lists (revenue and budget then unknown)."""
    known = {tenant.id: tenant for tenant in tenants}
    ids = sorted(set(known) | {r.tenant for r in rows} | {o.tenant for o in outcomes})
    reports = []
    for tenant_id in ids:
        mine = [r for r in rows if r.tenant == tenant_id]
        tenant = known.get(tenant_id)
        plan = tenant.usage if tenant else None
        budget: Budget | None = tenant.budget if tenant else None
        usage_cost = sum((r.cost for r in mine), Decimal(0))
        rent = rental_cost(card, tenant) if tenant else Decimal(0)
        cogs = usage_cost + rent
        revenue = plan.plan_monthly if plan else None
        margin = revenue - cogs if revenue is not None else None
        ltv = payback = None
        if margin is not None and margin > 0 and plan is not None:
            if plan.monthly_churn:
                ltv = (margin / plan.monthly_churn).quantize(_CENT, ROUND_HALF_EVEN)
            if plan.cac is not None:
                payback = (plan.cac / margin).quantize(Decimal("0.1"), ROUND_HALF_EVEN)
        reports.append(
            TenantReport(
                tenant=tenant_id,
                month=month,
                currency=card.currency,
                messages=sum(r.messages for r in mine),
                segments=sum(r.segments for r in mine),
                delivered=sum(r.delivered for r in mine),
                failed=sum(r.failed for r in mine),
                calls=sum(r.calls for r in mine),
                minutes=sum(r.minutes for r in mine),
                bot_calls=sum(o.count for o in outcomes if o.tenant == tenant_id),
                bot_outcomes=_outcomes(outcomes, tenant_id),
                unrated=sum(r.unrated for r in mine),
                usage_cost=usage_cost,
                rental_cost=rent,
                cogs=cogs,
                revenue=revenue,
                gross_margin=margin,
                margin_percent=_ratio(margin, revenue) if margin is not None else None,
                budget_mode=budget.mode if budget else None,
                budget=budget.amount if budget else None,
                budget_used_percent=_ratio(usage_cost, budget.amount) if budget else None,
                ltv=ltv,
                cac_payback_months=payback,
            )
        )
    return reports


def _outcomes(outcomes: Sequence[OutcomeRow], tenant_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in outcomes:
        if row.tenant == tenant_id:
            counts[row.outcome] = counts.get(row.outcome, 0) + row.count
    return dict(sorted(counts.items()))


def _plain(value: object) -> object:
    return decimal_text(value) if isinstance(value, Decimal) else value


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, dict):  # bot outcomes: "answered=3 voicemail=1"
        return " ".join(f"{k}={v}" for k, v in value.items())
    return _plain(value)


def to_json(reports: Sequence[TenantReport]) -> str:
    """A JSON array, one object per tenant; money and ratios as exact decimal strings."""
    docs = [{f.name: _plain(getattr(r, f.name)) for f in fields(TenantReport)} for r in reports]
    return orjson.dumps(docs, option=orjson.OPT_INDENT_2).decode() + "\n"


def to_csv(reports: Sequence[TenantReport]) -> str:
    """CSV with a header row; empty cells for unknown values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = [f.name for f in fields(TenantReport)]
    writer.writerow(names)
    for report in reports:
        writer.writerow([_cell(getattr(report, n)) for n in names])
    return buffer.getvalue()


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.quantize(_CENT, ROUND_HALF_EVEN):,}"


def _pct(value: Decimal | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def to_table(reports: Sequence[TenantReport]) -> str:
    """An aligned terminal table (money rounded to cents for reading; JSON/CSV are exact)."""
    if not reports:
        return "no tenants and no usage for this month\n"
    month, currency = reports[0].month, reports[0].currency
    head = (
        "tenant",
        "msgs",
        "segs",
        "dlvd",
        "fail",
        "calls",
        "mins",
        "bots",
        "COGS",
        "revenue",
        "margin",
        "margin%",
        "budget%",
        "LTV",
        "payback",
    )
    lines = [head]
    for r in reports:
        lines.append(
            (
                r.tenant,
                f"{r.messages:,}",
                f"{r.segments:,}",
                f"{r.delivered:,}",
                f"{r.failed:,}",
                f"{r.calls:,}",
                f"{r.minutes:,}",
                f"{r.bot_calls:,}",
                _money(r.cogs),
                _money(r.revenue),
                _money(r.gross_margin),
                _pct(r.margin_percent),
                _pct(r.budget_used_percent),
                _money(r.ltv),
                "-" if r.cac_payback_months is None else f"{r.cac_payback_months} mo",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = [f"usage report {month} ({currency}; COGS = metered usage + number rental)"]
    for n, line in enumerate(lines):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    unrated = sum(r.unrated for r in reports)
    if unrated:
        out.append(
            f"note: {unrated} message(s)/call(s) had no matching rate and cost 0 "
            f"(add [[usage.rates]] lines)"
        )
    return "\n".join(out) + "\n"


def render(reports: Sequence[TenantReport], fmt: str) -> str:
    if fmt == "json":
        return to_json(reports)
    if fmt == "csv":
        return to_csv(reports)
    return to_table(reports)
