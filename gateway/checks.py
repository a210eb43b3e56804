"""`hookline check`: validate what start-up needs and report each check on its own line."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import TextIO
from urllib.parse import urlsplit

from gateway.errors import HooklineError
from gateway.log import mask_url_password
from gateway.settings import Settings


async def run_checks(settings: Settings, out: TextIO) -> int:
    """Print one line per check; return 0 when all pass, else 1.

    Config and secrets were already validated by load_settings (it raises before we get here).
    """
    failures = 0
    tenants = list(settings.tenants)
    if settings.config_found:
        print(
            f"ok   config: {settings.config_path} ({len(tenants)} tenant(s), secrets resolved)",
            file=out,
        )
    else:
        print(
            f"warn config: no config file: {settings.config_path} does not exist and "
            "HOOKLINE_CONFIG is unset, so there are no tenants",
            file=out,
        )
    if not tenants:
        print("warn config: no tenants configured, every callback will be refused (403)", file=out)
    card = settings.rate_card
    budgets = sum(1 for tenant in tenants if tenant.budget is not None)
    print(
        f"ok   usage: {len(card.rates)} rate(s), {len(card.rentals)} number rental(s), "
        f"{budgets} tenant budget(s), {card.currency}",
        file=out,
    )
    for name, check in (("broker", _check_broker), ("database", _check_database)):
        try:
            detail = await check(settings)
        except (HooklineError, OSError, sqlite3.Error) as exc:
            failures += 1
            print(f"FAIL {name}: {exc}", file=out)
        else:
            print(f"ok   {name}: {detail}", file=out)
    return 1 if failures else 0


async def _check_broker(settings: Settings) -> str:
    if settings.amqp_url.startswith("memory:"):
        return "memory:// (embedded, in-process)"
    from gateway.broker.probe import probe_broker

    server = await probe_broker(settings.amqp_url)
    return f"{mask_url_password(settings.amqp_url)} reachable ({server})"


async def _check_database(settings: Settings) -> str:
    url = settings.db_url
    path = settings.sqlite_path
    if path is None:  # a postgresql:// URL (load_settings accepts nothing else)
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 5432
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        writer.close()
        await writer.wait_closed()
        return f"postgresql at {host}:{port} accepts connections"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("select 1")
    connection.close()
    return f"sqlite at {path} is writable"
