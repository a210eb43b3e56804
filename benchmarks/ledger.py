"""Ledger ingest rate (events/s) on SQLite and PostgreSQL, batched against one event per
transaction, in the same run.

    .venv/bin/python -m benchmarks.ledger [--events 20000] [--naive-events 2000]
        [--batch 256] [--repeats 3] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]

Events are the real normalized Twilio events of a realistic mix (per message: queued, sent,
delivered or undelivered; per call: ringing, completed), shuffled, 10 % of them delivered
twice. ``hookline`` ingests them in batches of --batch, one transaction each; ``naive`` is the
same ledger with one event per transaction, the way a consumer that acks message by message
writes. Every run starts from an empty database (SQLite: a new file in a temporary
directory; PostgreSQL: a throwaway database, dropped at the end) and checks the totals, so a
fast wrong answer cannot pass. The machine is shared: the conditions are printed with the
figures, and only the ratios within one run are meant to be compared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.usage import facts, policy, scenario
from workers.backends import create_ledger
from workers.usage.facts import UsageFact


def workload(events: int, seed: int = 7) -> list[UsageFact]:
    """About ``events`` facts: messages and calls, shuffled, 10 % duplicated."""
    messages = max(1, int(events / 1.1 / 3.2))
    items = facts(scenario(messages))
    rng = random.Random(seed)
    items += rng.sample(items, len(items) // 10)
    rng.shuffle(items)
    return items[:events]


async def ingest(url: str, items: Sequence[UsageFact], batch: int) -> float:
    """Seconds to ingest ``items`` in batches of ``batch`` into a fresh ledger at ``url``."""
    ledger = create_ledger(url)
    await ledger.open()
    try:
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            await ledger.ingest(items[i : i + batch], policy(), datetime.now(UTC))
        elapsed = time.perf_counter() - started
        rows = await ledger.usage("2026-11")
        expected = len({f.key for f in items if f.kind == "message"})
        if sum(r.messages for r in rows) != expected:
            raise SystemExit(
                f"wrong totals at {url}: {sum(r.messages for r in rows)} messages, "
                f"expected {expected}"
            )
        return elapsed
    finally:
        await ledger.close()


class Postgres:
    """Throwaway databases on the server of ``admin_url``."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def new(self) -> str:
        import psycopg

        name = f"hookline_bench_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name))

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            sync = conn.execute("SHOW synchronous_commit").fetchone()
            return (
                f"PostgreSQL {row[0] if row else '?'}, "
                f"synchronous_commit={sync[0] if sync else '?'}"
            )

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(
    label: str, make_url: Callable[[], str], items: Sequence[UsageFact], batch: int, repeats: int
) -> float:
    rates = []
    for _ in range(repeats):
        seconds = asyncio.run(ingest(make_url(), items, batch))
        rates.append(len(items) / seconds)
    rate = statistics.median(rates)
    spread = f"min {min(rates):,.0f} max {max(rates):,.0f}"
    print(
        f"  {label:<34} {rate:>10,.0f} events/s   ({len(items):,} events, batch {batch}, "
        f"median of {repeats}: {spread})"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--naive-events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "HOOKLINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    items, naive_items = workload(args.events), workload(args.naive_events, seed=8)
    load = os.getloadavg()
    print("ledger ingest benchmark")
    print(
        f"  conditions: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (machine shared with other work), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=FULL), "
        f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def sqlite_url() -> str:
            return f"sqlite:///{Path(tmp) / f'ledger{next(counter)}.db'}"

        print("SQLite")
        fast = measure(
            "hookline (batched transactions)", sqlite_url, items, args.batch, args.repeats
        )
        slow = measure(
            "naive (one event per transaction)", sqlite_url, naive_items, 1, args.repeats
        )
        print(f"  ratio hookline/naive: {fast / slow:,.1f}x")
    if args.skip_postgres:
        return
    pg = Postgres(args.pg_url)
    try:
        print(f"PostgreSQL ({pg.version()})")
        fast = measure("hookline (batched transactions)", pg.new, items, args.batch, args.repeats)
        slow = measure("naive (one event per transaction)", pg.new, naive_items, 1, args.repeats)
        print(f"  ratio hookline/naive: {fast / slow:,.1f}x")
    finally:
        pg.drop_all()


if __name__ == "__main__":
    main()
