"""The [usage] rate card, [tenants.budget] and [tenants.usage]: parsing, Decimal money, errors."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigFile, parse_config
from gateway.errors import ConfigError
from gateway.usage_config import (
    Budget,
    TenantUsage,
    decimal_text,
    digits_of,
)

TENANT = '[[tenants]]\nid = "acme"\n'

CARD = """
[usage]
currency = "EUR"
tolerance_amount = "0.05"
[[usage.rates]]
provider = "twilio"
channel = "sms"
per_segment = "0.0079"
[[usage.rates]]
provider = "twilio"
channel = "sms"
prefix = "+44"
per_segment = "0.0400"
[[usage.rates]]
provider = "twilio"
channel = "sms"
prefix = "+447"
per_segment = "0.0450"
[[usage.rates]]
provider = "twilio"
channel = "voice"
direction = "inbound"
prefix = "1"
per_minute = 1
[[usage.rentals]]
prefix = "+1"
monthly = "1.15"
"""


def parse(text: str) -> ConfigFile:
    return parse_config(tomllib.loads(text), environ={}, base_dir=Path("."))


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_rate_card_longest_prefix_wins() -> None:
    """The most specific prefix matching the destination prices it; no prefix is the default."""
    card = parse(CARD).usage
    assert card.currency == "EUR" and card.tolerance_amount == Decimal("0.05")
    price = card.rate_for

    def sms_per_segment(destination: str) -> Decimal | None:
        rate = price("twilio", "sms", "outbound", destination)
        assert rate is not None, destination
        return rate.per_segment

    assert sms_per_segment("+447700900123") == Decimal("0.0450")
    assert sms_per_segment("+442071234567") == Decimal("0.0400")
    assert sms_per_segment("+14155550100") == Decimal("0.0079")
    assert price("twilio", "sms", "outbound", "whatsapp:+447700900123") is not None
    voice = price("twilio", "voice", "inbound", "+14155550100")
    assert voice is not None and voice.unit_price == Decimal(1)
    assert price("twilio", "voice", "outbound", "+14155550100") is None
    assert price("kaleyra", "sms", "outbound", "+919800000000") is None
    rental = card.rental_for("twilio", "+14155550100")
    assert rental is not None and rental.monthly == Decimal("1.15")
    assert card.rental_for("twilio", "+447700900123") is None


def test_prices_are_decimal_never_float() -> None:
    """Every parsed price is a Decimal with the exact digits written."""
    card = parse(CARD).usage
    assert all(isinstance(r.unit_price, Decimal) for r in card.rates)
    assert str(card.rates[0].per_segment) == "0.0079"


def test_float_price_is_rejected_naming_the_key() -> None:
    """A TOML float is refused with a message that names the key and says to quote it."""
    text = '[usage]\n[[usage.rates]]\nprovider = "twilio"\nchannel = "sms"\nper_segment = 0.0079\n'
    message = problems(text)
    assert "usage.rates[0].per_segment" in message
    assert "float" in message and "quote" in message


@pytest.mark.parametrize(
    ("entry", "key", "fragment"),
    [
        ('provider = "plivo"\nchannel = "sms"\nper_segment = "1"', "provider", "twilio, kaleyra"),
        ('provider = "twilio"\nchannel = "fax"\nper_segment = "1"', "channel", "sms, mms"),
        (
            'provider = "twilio"\nchannel = "sms"\ndirection = "up"\nper_segment = "1"',
            "direction",
            "outbound",
        ),
        (
            'provider = "twilio"\nchannel = "sms"\nprefix = "UK"\nper_segment = "1"',
            "prefix",
            "country prefix",
        ),
        ('provider = "twilio"\nchannel = "sms"\nper_segment = "-1"', "per_segment", "non-negative"),
        (
            'provider = "twilio"\nchannel = "sms"\nper_segment = "1e3"',
            "per_segment",
            "non-negative",
        ),
        ('provider = "twilio"\nchannel = "sms"', "per_segment", "expected a price"),
        (
            'provider = "twilio"\nchannel = "voice"\nper_segment = "1"',
            "per_segment",
            "priced per_minute",
        ),
        ('provider = "twilio"\nchannel = "sms"\nper_segment = true', "per_segment", "a boolean"),
        ('provider = "twilio"\nchannel = "sms"\nper_segmnt = "1"', "per_segmnt", "did you mean"),
    ],
)
def test_bad_rate_lines(entry: str, key: str, fragment: str) -> None:
    """Each bad rate line is reported under its own key with what was expected."""
    message = problems(f"[usage]\n[[usage.rates]]\n{entry}\n")
    assert f"usage.rates[0].{key}" in message and fragment in message


def test_duplicate_rate_is_rejected() -> None:
    """Two lines for the same provider, channel, direction and prefix are ambiguous."""
    line = (
        '[[usage.rates]]\nprovider = "twilio"\nchannel = "sms"\nprefix = "+1"\nper_segment = "1"\n'
    )
    message = problems("[usage]\n" + line + line.replace('"1"\n', '"2"\n'))
    assert "usage.rates[1].prefix" in message and "duplicate" in message


def test_budget_and_plan_sections() -> None:
    """A tenant's budget and plan parse into frozen dataclasses in typed Tenant fields."""
    text = TENANT + (
        '[tenants.budget]\nmode = "postpaid"\namount = "250.00"\nthresholds = [90, 50]\n'
        '[tenants.usage]\nplan_monthly = 499\ncac = "1200"\nmonthly_churn = "0.02"\n'
        'numbers = ["+14155550100"]\n'
    )
    tenant = parse(text).tenants.by_id("acme")
    assert tenant is not None
    assert tenant.budget == Budget("postpaid", Decimal("250.00"), (50, 90))
    assert tenant.usage == TenantUsage(
        Decimal(499), Decimal(1200), Decimal("0.02"), ("+14155550100",)
    )


def test_budget_defaults_and_absence() -> None:
    """Thresholds default to 50/80/100; a tenant without the sections has no budget, no plan."""
    with_budget = parse(TENANT + '[tenants.budget]\nmode = "prepaid"\namount = "10"\n')
    tenant = with_budget.tenants.by_id("acme")
    assert tenant is not None and tenant.budget == Budget("prepaid", Decimal(10), (50, 80, 100))
    bare = parse(TENANT).tenants.by_id("acme")
    assert bare is not None and bare.budget is None
    assert bare.usage == TenantUsage()


@pytest.mark.parametrize(
    ("section", "key", "fragment"),
    [
        ('[tenants.budget]\nmode = "credit"\namount = "1"', "budget.mode", "prepaid, postpaid"),
        ('[tenants.budget]\nmode = "prepaid"', "budget.amount", "got nothing"),
        ('[tenants.budget]\nmode = "prepaid"\namount = 2.5', "budget.amount", "float"),
        ('[tenants.budget]\nmode = "prepaid"\namount = "0"', "budget.amount", "above 0"),
        (
            '[tenants.budget]\nmode = "prepaid"\namount = "1"\nthresholds = [0]',
            "budget.thresholds",
            "1 to 1000",
        ),
        (
            '[tenants.budget]\nmode = "prepaid"\namount = "1"\nthresholds = []',
            "budget.thresholds",
            "non-empty",
        ),
        ('[tenants.usage]\nmonthly_churn = "1.5"', "usage.monthly_churn", "at most 1"),
        ('[tenants.usage]\nmonthly_churn = "0"', "usage.monthly_churn", "above 0"),
        ("[tenants.usage]\nplan_monthly = 9.99", "usage.plan_monthly", "float"),
        ('[tenants.usage]\nnumbers = ["4155550100"]', "usage.numbers", "E.164"),
    ],
)
def test_bad_tenant_sections(section: str, key: str, fragment: str) -> None:
    """Each bad budget or plan key is reported with the tenant's path and what was expected."""
    message = problems(TENANT + section + "\n")
    assert f"tenants[0](acme).{key}" in message and fragment in message


def test_digits_of_addresses() -> None:
    """Channel prefixes, plus signs and spaces are dropped before prefix matching."""
    assert digits_of("whatsapp:+44 7700 900123") == "447700900123"
    assert digits_of("+14155550100") == "14155550100"
    assert digits_of(None) == "" and digits_of("ACME") == ""


def test_example_config_has_a_rate_card_and_a_budget() -> None:
    """examples/hookline.toml documents every usage section, and it parses."""
    from gateway.config import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "hookline.toml", {})
    assert config.usage.rate_for("twilio", "sms", "outbound", "+447700900123") is not None
    demo = config.tenants.by_id("demo")
    assert demo is not None and demo.budget is not None
    assert demo.usage.plan_monthly == Decimal("499.00")


def test_hookline_check_names_a_float_price(tmp_path: Path) -> None:
    """hookline check exits 1 and names the key of a float price."""
    import subprocess
    import sys

    path = tmp_path / "hookline.toml"
    path.write_text(
        '[usage]\n[[usage.rates]]\nprovider = "twilio"\nchannel = "sms"\nper_segment = 0.0079\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check"],
        capture_output=True,
        text=True,
        env={"HOOKLINE_CONFIG": str(path), "PATH": "/usr/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "usage.rates[0].per_segment" in done.stderr and "float" in done.stderr


@given(
    st.integers(0, 12).flatmap(
        lambda places: st.decimals(
            min_value=0, max_value=10**9, places=places, allow_nan=False, allow_infinity=False
        )
    )
)
def test_decimal_strings_parse_exactly(value: Decimal) -> None:
    """Any price written as a plain decimal string comes back as exactly that Decimal."""
    text = format(value, "f")
    card = parse(
        f'[usage]\n[[usage.rates]]\nprovider = "twilio"\nchannel = "sms"\nper_segment = "{text}"\n'
    ).usage
    per_segment = card.rates[0].per_segment
    assert per_segment is not None and per_segment == value
    assert decimal_text(per_segment) == text


@given(
    prefixes=st.lists(
        st.text("0123456789", min_size=0, max_size=4), min_size=1, max_size=6, unique=True
    ),
    number=st.text("0123456789", min_size=1, max_size=12),
)
def test_longest_prefix_wins_against_brute_force(prefixes: list[str], number: str) -> None:
    """rate_for picks the longest matching prefix, as a brute-force search does."""
    lines = "".join(
        '[[usage.rates]]\nprovider = "twilio"\nchannel = "sms"\n'
        + (f'prefix = "+{p}"\n' if p else "")
        + f'per_segment = "{i}"\n'
        for i, p in enumerate(prefixes)
    )
    card = parse("[usage]\n" + lines).usage
    matches = [p for p in prefixes if number.startswith(p)]
    rate = card.rate_for("twilio", "sms", "outbound", "+" + number)
    if not matches:
        assert rate is None
    else:
        assert rate is not None and rate.prefix == max(matches, key=len)
