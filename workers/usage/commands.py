"""``hookline usage report|reconcile`` (docs/operations.md#command-line), composed into the CLI by
the workers side: ``add_usage_commands`` adds the sub-commands, ``run_usage_command`` runs one."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from gateway.errors import ConfigError
from gateway.settings import Settings
from workers.backends import create_ledger
from workers.usage.ledger import Ledger
from workers.usage.reconcile import ClientFactory, format_comparisons, reconcile, twilio_client
from workers.usage.report import FORMATS, build_report, render

_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def month_arg(value: str) -> str:
    """argparse type of --month: YYYY-MM."""
    if not _MONTH.fullmatch(value):
        raise argparse.ArgumentTypeError(f"expected a month as YYYY-MM, got {value!r}")
    return value


def current_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


def add_usage_commands(subparsers: Any) -> None:
    """Add ``usage report`` and ``usage reconcile`` to the ``hookline`` sub-parsers."""
    usage = subparsers.add_parser("usage", help="usage, cost and margin per tenant")
    actions = usage.add_subparsers(dest="action", required=True, metavar="ACTION")
    report = actions.add_parser("report", help="volumes, COGS, revenue, margin, budget use")
    report.add_argument(
        "--month", type=month_arg, default=None, help="YYYY-MM (UTC; default: the current month)"
    )
    report.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        dest="fmt",
        help="table (default), json or csv",
    )
    rec = actions.add_parser("reconcile", help="compare the ledger with Twilio Usage Records")
    rec.add_argument("--month", type=month_arg, required=True, help="YYYY-MM (UTC)")
    rec.add_argument(
        "--twilio-api-base",
        default=None,
        metavar="URL",
        help="send Twilio API requests to this base URL instead of "
        "https://api.twilio.com (a proxy or a local test double)",
    )


def run_usage_command(
    args: argparse.Namespace,
    settings: Settings,
    out: TextIO,
    *,
    clients: ClientFactory | None = None,
    ledger_factory: Callable[[str], Ledger] = create_ledger,
) -> int:
    """Run ``usage report`` or ``usage reconcile``; return the exit code.

    report: 0. reconcile: 0 when everything matches within tolerance, 1 when a measure
    differs or a tenant's records could not be read.
    """
    if args.action == "report":
        return asyncio.run(
            _report(settings, args.month or current_month(), args.fmt, out, ledger_factory)
        )
    if args.action == "reconcile":
        factory = clients or twilio_client(args.twilio_api_base)
        return asyncio.run(_reconcile(settings, args.month, out, factory, ledger_factory))
    raise ConfigError(f"usage: unknown action {args.action!r}; expected report or reconcile")


async def _report(
    settings: Settings, month: str, fmt: str, out: TextIO, ledger_factory: Callable[[str], Ledger]
) -> int:
    ledger = ledger_factory(settings.db_url)
    await ledger.open()
    try:
        rows, outcomes = await ledger.usage(month), await ledger.outcomes(month)
    finally:
        await ledger.close()
    out.write(
        render(build_report(month, settings.tenants, settings.rate_card, rows, outcomes), fmt)
    )
    return 0


async def _reconcile(
    settings: Settings,
    month: str,
    out: TextIO,
    clients: ClientFactory,
    ledger_factory: Callable[[str], Ledger],
) -> int:
    ledger = ledger_factory(settings.db_url)
    await ledger.open()
    try:
        rows = await ledger.usage(month)
    finally:
        await ledger.close()
    comparisons, failures = await reconcile(
        list(settings.tenants), rows, settings.rate_card, month, clients
    )
    out.write(format_comparisons(month, comparisons, failures, settings.rate_card))
    return 1 if failures or any(c.differs for c in comparisons) else 0
