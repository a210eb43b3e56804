"""``hookline usage report`` numbers for a known scenario in three formats, and ``usage
reconcile`` through the official twilio client against a local fake of the REST API."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.secrets import Secret
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant, TwilioAccount
from gateway.usage_config import Budget, RateCard, Rental, TenantUsage
from tests.support.fake_twilio import FakeTwilio, serving_in_thread
from tests.support.usage import ACCOUNT, CARD, bot_result, facts, policy, scenario
from workers.backends import create_ledger
from workers.usage.commands import add_usage_commands, run_usage_command

SID_B = "AC" + "0" * 31 + "b"
SID_C = "AC" + "0" * 31 + "c"
CARD_WITH_RENTAL = RateCard(rates=CARD.rates, rentals=(Rental("twilio", "1", Decimal("1.15")),))


def settings(tmp_path: Path) -> Settings:
    acme = Tenant(
        "acme",
        "Acme",
        twilio=TwilioAccount(ACCOUNT, Secret("token-a")),
        budget=Budget("prepaid", Decimal("50")),
        usage=TenantUsage(
            Decimal("100"), Decimal("300"), Decimal("0.05"), ("+14155550100", "+14155550101")
        ),
    )
    beta = Tenant("beta", "Beta", twilio=TwilioAccount(SID_B, Secret("token-b")))
    gamma = Tenant("gamma", "Gamma", twilio=TwilioAccount(SID_C, Secret("stale-token")))
    return Settings(
        tenants=StaticTenantRegistry([acme, beta, gamma]),
        rate_card=CARD_WITH_RENTAL,
        db_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )


def ingest_scenario(config: Settings) -> None:
    async def run() -> None:
        ledger = create_ledger(config.db_url)
        await ledger.open()
        events = [
            *scenario(1000),
            bot_result(1, "answered_human"),
            bot_result(2, "answered_human"),
            bot_result(3, "voicemail"),
        ]
        for i in range(0, len(events), 300):
            await ledger.ingest(facts(events[i : i + 300]), policy(), datetime.now(UTC))
        await ledger.close()

    asyncio.run(run())


def run(config: Settings, *argv: str, **kwargs: object) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="hookline")
    add_usage_commands(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = run_usage_command(parser.parse_args(argv), config, out, **kwargs)  # type: ignore[arg-type]
    return code, out.getvalue()


def test_report_numbers_for_a_known_scenario(tmp_path: Path) -> None:
    """1000 messages x 2 segments and 100 two-minute calls give the hand-computed economics."""
    config = settings(tmp_path)
    ingest_scenario(config)
    code, text = run(config, "usage", "report", "--month", "2026-11", "--format", "json")
    assert code == 0
    acme, beta, gamma = json.loads(text)
    assert (acme["messages"], acme["segments"], acme["delivered"], acme["failed"]) == (
        1000,
        2000,
        900,
        100,
    )
    assert (acme["calls"], acme["minutes"]) == (100, 200)
    # 2000 x 0.0079 + 200 x 0.0140 = 18.60 metered; 2 numbers x 1.15 rental.
    assert acme["usage_cost"] == "18.6000" and acme["rental_cost"] == "2.30"
    assert Decimal(acme["cogs"]) == Decimal("20.90")
    assert Decimal(acme["gross_margin"]) == Decimal("79.10")
    assert acme["margin_percent"] == "79.10" and acme["budget_used_percent"] == "37.20"
    assert acme["ltv"] == "1582.00"  # 79.10 / 0.05
    assert acme["cac_payback_months"] == "3.8"  # 300 / 79.10
    assert acme["bot_calls"] == 3 and acme["bot_outcomes"] == {"answered_human": 2, "voicemail": 1}
    assert beta["messages"] == 0 and beta["revenue"] is None and beta["margin_percent"] is None
    assert gamma["cogs"] == "0"

    code, table = run(config, "usage", "report", "--month", "2026-11")
    assert code == 0
    line = next(row for row in table.splitlines() if row.startswith("acme"))
    assert line.split() == [
        "acme",
        "1,000",
        "2,000",
        "900",
        "100",
        "100",
        "200",
        "3",
        "20.90",
        "100.00",
        "79.10",
        "79.1%",
        "37.2%",
        "1,582.00",
        "3.8",
        "mo",
    ]

    code, text = run(config, "usage", "report", "--month", "2026-11", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["tenant"] for r in rows] == ["acme", "beta", "gamma"]
    assert rows[0]["cogs"] == acme["cogs"] and rows[1]["revenue"] == ""
    assert rows[0]["bot_outcomes"] == "answered_human=2 voicemail=1"


def test_report_of_an_empty_month(tmp_path: Path) -> None:
    """A month without usage still lists the tenants, with zero volumes."""
    code, text = run(
        settings(tmp_path), "usage", "report", "--month", "2026-01", "--format", "json"
    )
    assert code == 0 and [r["messages"] for r in json.loads(text)] == [0, 0, 0]


@pytest.mark.parametrize("month", ["2026-13", "26-11", "2026-1", "november"])
def test_month_is_validated(tmp_path: Path, month: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--month must be YYYY-MM; anything else is a usage error naming the value."""
    with pytest.raises(SystemExit):
        run(settings(tmp_path), "usage", "report", "--month", month)
    assert "expected a month as YYYY-MM" in capsys.readouterr().err


def test_reconcile_against_the_fake_twilio_api(tmp_path: Path) -> None:
    """Matching figures are ok, a difference is flagged, a bad token fails that tenant only."""
    config = settings(tmp_path)
    ingest_scenario(config)
    fake = FakeTwilio(
        tokens={ACCOUNT: "token-a", SID_B: "token-b", SID_C: "current-token"},
        records={
            ACCOUNT: {
                "sms": [{"count": "1000", "usage": "2000", "price": "15.80"}],
                "calls": [{"count": "100", "usage": "200", "price": "2.80"}],
                # Two pages, 20.905 in all: 0.005 from the ledger's 20.90, within tolerance.
                "totalprice": [{"price": "18.605"}, {"price": "2.30"}],
            },
            SID_B: {
                "sms": [{"count": "5", "usage": "5", "price": "0.04"}],
                "totalprice": [{"price": "0.04"}],
            },
        },
    )
    with serving_in_thread(fake):
        code, text = run(
            config, "usage", "reconcile", "--month", "2026-11", "--twilio-api-base", fake.base_url
        )
    assert code == 1
    acme_lines = [line for line in text.splitlines() if line.startswith("acme")]
    assert [" ".join(line.split()[2:4]) for line in acme_lines] == [
        "sms segments",
        "sms price",
        "call minutes",
        "calls price",
        "total price",
    ]
    assert all(line.endswith(" ok") for line in acme_lines)
    beta = {
        " ".join(line.split()[2:4]): line for line in text.splitlines() if line.startswith("beta")
    }
    assert {m for m, line in beta.items() if line.endswith("DIFFERS")} == {
        "sms segments",
        "sms price",
        "total price",
    }
    assert any(
        line.startswith(f"FAILED gamma ({SID_C})") and "401" in line for line in text.splitlines()
    )
    assert "3 difference(s) beyond tolerance, 1 tenant(s) failed" in text
    acme_requests = [r for r in fake.requests if r["sid"] == ACCOUNT]
    assert {r["Category"] for r in acme_requests} == {"sms", "calls", "totalprice"}
    assert all(
        r["IncludeSubaccounts"] == "false"
        and r["StartDate"] == "2026-11-01"
        and r["EndDate"] == "2026-11-30"
        for r in acme_requests
    )
    assert sum(r["Category"] == "totalprice" for r in acme_requests) == 2  # paged


def test_reconcile_all_matching_exits_zero(tmp_path: Path) -> None:
    """With one tenant whose records match, reconcile prints only ok lines and exits 0."""
    base = settings(tmp_path)
    acme = base.tenants.by_id("acme")
    assert acme is not None
    config = Settings(
        tenants=StaticTenantRegistry([acme]), rate_card=base.rate_card, db_url=base.db_url
    )
    ingest_scenario(config)
    fake = FakeTwilio(
        tokens={ACCOUNT: "token-a"},
        records={
            ACCOUNT: {
                "sms": [{"count": "2000", "usage": "2000", "price": "15.80"}],
                "calls": [{"count": "100", "usage": "200", "price": "2.80"}],
                "totalprice": [{"price": "20.90"}],
            }
        },
    )
    with serving_in_thread(fake):
        code, text = run(
            config, "usage", "reconcile", "--month", "2026-11", "--twilio-api-base", fake.base_url
        )
    assert code == 0, text
    assert "0 difference(s) beyond tolerance, 0 tenant(s) failed" in text


@pytest.mark.usefixtures("reset_logging_after")
def test_hookline_usage_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline usage report` (the console script) prints the example tenants' JSON report."""
    import os

    from workers.console import main

    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ingest_scenario(Settings(db_url=db_url))
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOOKLINE_DB_URL": db_url,
        "HOOKLINE_CONFIG": str(Path(__file__).resolve().parents[3] / "examples" / "hookline.toml"),
        "HOOKLINE_LOG_FORMAT": "json",
    }
    code = main(["usage", "report", "--month", "2026-11", "--format", "json"], environ)
    out = capsys.readouterr().out
    assert code == 0, out
    reports = {r["tenant"]: r for r in json.loads(out)}
    # The scenario's events are tenant acme's; the example prices them with its own card.
    assert reports["acme"]["messages"] == 1000 and reports["demo"]["messages"] == 0
    assert reports["demo"]["revenue"] == "499.00" and reports["demo"]["budget_mode"] == "prepaid"
