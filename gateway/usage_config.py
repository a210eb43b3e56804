"""The usage sections of the config file: the rate card, number rentals, budgets and plans.

``[usage]`` (document level) holds what the platform pays its providers: a price per segment
or per minute by provider, channel, direction and destination country prefix (the longest
matching prefix wins), and the monthly rental of a phone number by country prefix.
``[tenants.budget]`` and ``[tenants.usage]`` hold what each tenant may spend and pays.

Money is ``decimal.Decimal`` from end to end. TOML floats are binary fractions (0.1 is not
one tenth), so a price must be written as a string ("0.0079") or an integer; a float is an
error naming its key. Parsed values are frozen dataclasses; ``gateway.config`` calls the
parsers and collects their problems with everything else, so ``hookline check`` shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Final, Literal

from gateway.config_table import Table
from gateway.e164 import E164_PATTERN

Direction = Literal["inbound", "outbound"]
BudgetMode = Literal["prepaid", "postpaid"]

PROVIDERS: Final = ("twilio", "kaleyra")
CHANNELS: Final = ("sms", "mms", "whatsapp", "voice")
DIRECTIONS: Final[tuple[Direction, ...]] = ("outbound", "inbound")
BUDGET_MODES: Final[tuple[BudgetMode, ...]] = ("prepaid", "postpaid")
DEFAULT_THRESHOLDS: Final = (50, 80, 100)
DEFAULT_CURRENCY: Final = "USD"
# Reconciliation flags a difference above this much money, or above this share of the larger
# side (whichever is larger): rounding of per-record prices must not cry wolf.
DEFAULT_TOLERANCE_AMOUNT: Final = Decimal("0.01")
DEFAULT_TOLERANCE_PERCENT: Final = Decimal("1")

_DECIMAL: Final = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,12})?")
_PREFIX: Final = re.compile(r"\+?[0-9]{1,8}")
_CURRENCY: Final = re.compile(r"[A-Z]{3}")

USAGE_KEYS: Final = frozenset(
    {"currency", "tolerance_amount", "tolerance_percent", "rates", "rentals"}
)
RATE_KEYS: Final = frozenset(
    {"provider", "channel", "direction", "prefix", "per_segment", "per_minute"}
)
RENTAL_KEYS: Final = frozenset({"provider", "prefix", "monthly"})
TENANT_BUDGET_KEYS: Final = frozenset({"mode", "amount", "thresholds"})
TENANT_USAGE_KEYS: Final = frozenset({"plan_monthly", "cac", "monthly_churn", "numbers"})


def decimal_text(value: Decimal) -> str:
    """Plain positional notation, never exponents: "0.0000001", not str()'s "1E-7"."""
    return format(value, "f")


def digits_of(number: str | None) -> str:
    """The digits of an address: "whatsapp:+44 7700" -> "447700"; "" when there are none."""
    if not number:
        return ""
    _, colon, rest = number.partition(":")
    return "".join(c for c in (rest if colon else number) if c.isascii() and c.isdigit())


@dataclass(frozen=True, slots=True)
class Rate:
    """One line of the rate card. ``prefix`` is digits only ("" matches every destination)."""

    provider: str
    channel: str
    direction: Direction
    prefix: str
    per_segment: Decimal | None = None
    per_minute: Decimal | None = None

    @property
    def unit_price(self) -> Decimal:
        price = self.per_minute if self.channel == "voice" else self.per_segment
        return price if price is not None else Decimal(0)


@dataclass(frozen=True, slots=True)
class Rental:
    """Monthly price of one rented number whose E.164 digits start with ``prefix``."""

    provider: str
    prefix: str
    monthly: Decimal


@dataclass(frozen=True, slots=True)
class RateCard:
    """The ``[usage]`` section: what the platform pays its providers."""

    currency: str = DEFAULT_CURRENCY
    rates: tuple[Rate, ...] = ()
    rentals: tuple[Rental, ...] = ()
    tolerance_amount: Decimal = DEFAULT_TOLERANCE_AMOUNT
    tolerance_percent: Decimal = DEFAULT_TOLERANCE_PERCENT

    def rate_for(
        self, provider: str, channel: str, direction: str, destination: str | None
    ) -> Rate | None:
        """The rate with the longest prefix of the destination's digits, or None (unrated)."""
        digits = digits_of(destination)
        best: Rate | None = None
        for rate in self.rates:
            if (rate.provider, rate.channel, rate.direction) != (provider, channel, direction):
                continue
            if digits.startswith(rate.prefix) and (
                best is None or len(rate.prefix) > len(best.prefix)
            ):
                best = rate
        return best

    def rental_for(self, provider: str, number: str) -> Rental | None:
        """The rental with the longest prefix of the number's digits, or None."""
        digits = digits_of(number)
        matches = [
            r for r in self.rentals if r.provider == provider and digits.startswith(r.prefix)
        ]
        return max(matches, key=lambda r: len(r.prefix), default=None)


@dataclass(frozen=True, slots=True)
class Budget:
    """``[tenants.budget]``: a prepaid allocation or a postpaid credit limit per month."""

    mode: BudgetMode
    amount: Decimal
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """``[tenants.usage]``: plan revenue, unit-economics inputs and the rented numbers."""

    plan_monthly: Decimal | None = None
    cac: Decimal | None = None
    monthly_churn: Decimal | None = None  # a fraction: "0.02" is 2 % of customers a month
    numbers: tuple[str, ...] = field(default=())


def decimal_value(
    table: Table, name: str, *, required: bool = False, maximum: Decimal | None = None
) -> Decimal | None:
    """A non-negative decimal written as a string ("0.0079") or an integer, never a float."""
    raw = table.raw(name)
    if raw is None:
        if required:
            table.fail(name, 'expected a decimal as a string such as "0.0079", got nothing')
        return None
    if isinstance(raw, float):
        table.fail(
            name,
            f'expected a decimal as a string such as "{raw}" or an integer, got '
            f"the float {raw} (TOML floats are inexact; quote the value)",
        )
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        table.fail(name, f'expected a decimal as a string such as "0.0079", got {table.kind(raw)}')
        return None
    text = str(raw).strip()
    try:
        value = Decimal(text) if _DECIMAL.fullmatch(text) else None
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        value = None
    if value is None:
        table.fail(
            name,
            f"expected a non-negative decimal with at most 12 decimal places, got {text[:40]!r}",
        )
        return None
    if maximum is not None and value > maximum:
        table.fail(name, f"expected at most {maximum}, got {value}")
        return None
    return value


def _choice(
    table: Table, name: str, choices: tuple[str, ...], default: str | None = None
) -> str | None:
    value = table.string(name, required=default is None)
    if value is None:
        return default
    if value not in choices:
        table.fail(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return None
    return value


def _prefix(table: Table, name: str) -> str | None:
    value = table.string(name, required=False)
    if value is None:
        return ""
    if not _PREFIX.fullmatch(value):
        table.fail(name, f'expected a country prefix such as "+44" (1 to 8 digits), got {value!r}')
        return None
    return value.lstrip("+")


def parse_rate_card(table: Table) -> RateCard:
    """The ``[usage]`` table; problems go to the table's reader."""
    currency = table.string("currency", required=False) or DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(currency):
        table.fail("currency", f"expected an ISO 4217 code such as USD, got {currency!r}")
    rates: list[Rate] = []
    seen: dict[tuple[str, str, str, str], str] = {}
    for entry in table.tables("rates", RATE_KEYS):
        provider = _choice(entry, "provider", PROVIDERS)
        channel = _choice(entry, "channel", CHANNELS)
        direction = _choice(entry, "direction", DIRECTIONS, "outbound")
        prefix = _prefix(entry, "prefix")
        per_segment = decimal_value(entry, "per_segment")
        per_minute = decimal_value(entry, "per_minute")
        wanted = "per_minute" if channel == "voice" else "per_segment"
        other = "per_segment" if channel == "voice" else "per_minute"
        if (
            channel is not None
            and (per_minute if channel == "voice" else per_segment) is None
            and entry.raw(wanted) is None
        ):
            entry.fail(wanted, f"expected a price for channel {channel!r}, got nothing")
        if channel is not None and entry.raw(other) is not None:
            entry.fail(other, f"channel {channel!r} is priced {wanted}, not {other}")
        if (
            provider is None
            or channel is None
            or direction is None
            or prefix is None
            or not entry.ok
        ):
            continue
        key = (provider, channel, direction, prefix)
        if key in seen:
            entry.fail(
                "prefix",
                f"duplicate rate for {provider}/{channel}/{direction} prefix "
                f"{'+' + prefix if prefix else '(any)'}: already in {seen[key]}",
            )
            continue
        seen[key] = entry.path
        rates.append(
            Rate(
                provider,
                channel,
                direction,  # type: ignore[arg-type]
                prefix,
                per_segment,
                per_minute,
            )
        )
    rentals: list[Rental] = []
    for entry in table.tables("rentals", RENTAL_KEYS):
        provider = _choice(entry, "provider", PROVIDERS, "twilio")
        prefix = _prefix(entry, "prefix")
        monthly = decimal_value(entry, "monthly", required=True)
        if provider is not None and prefix is not None and monthly is not None:
            rentals.append(Rental(provider, prefix, monthly))
    amount = decimal_value(table, "tolerance_amount")
    percent = decimal_value(table, "tolerance_percent", maximum=Decimal(100))
    return RateCard(
        currency=currency,
        rates=tuple(rates),
        rentals=tuple(rentals),
        tolerance_amount=DEFAULT_TOLERANCE_AMOUNT if amount is None else amount,
        tolerance_percent=DEFAULT_TOLERANCE_PERCENT if percent is None else percent,
    )


def parse_budget(table: Table) -> Budget | None:
    """``[tenants.budget]``."""
    mode = _choice(table, "mode", BUDGET_MODES)
    amount = decimal_value(table, "amount", required=True)
    thresholds = DEFAULT_THRESHOLDS
    raw = table.raw("thresholds")
    if raw is not None:
        items = raw if isinstance(raw, list) else None
        if not items or any(
            isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= 1000 for t in items
        ):
            table.fail(
                "thresholds",
                f"expected a non-empty array of whole percentages from 1 to "
                f"1000, such as [50, 80, 100], got {raw!r}",
            )
        else:
            thresholds = tuple(sorted(set(items)))
    if amount is not None and amount == 0:
        table.fail("amount", "expected an amount above 0 (a zero budget is exhausted at once)")
    if mode is None or amount is None or not table.ok:
        return None
    return Budget(mode, amount, thresholds)  # type: ignore[arg-type]


def parse_tenant_usage(table: Table) -> TenantUsage | None:
    """``[tenants.usage]``."""
    plan = decimal_value(table, "plan_monthly")
    cac = decimal_value(table, "cac")
    churn = decimal_value(table, "monthly_churn", maximum=Decimal(1))
    if churn is not None and churn == 0:
        table.fail("monthly_churn", 'expected a fraction above 0 such as "0.02" (2 % a month)')
    numbers: list[str] = []
    raw = table.raw("numbers")
    if raw is not None:
        if not isinstance(raw, list) or not all(
            isinstance(n, str) and E164_PATTERN.fullmatch(n) for n in raw
        ):
            table.fail("numbers", 'expected an array of E.164 numbers such as ["+14155550100"]')
        else:
            numbers = list(dict.fromkeys(raw))
    if not table.ok:
        return None
    return TenantUsage(plan, cac, churn, tuple(numbers))
