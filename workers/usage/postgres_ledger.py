"""The PostgreSQL ledger (HOOKLINE_DB_URL=postgresql://...).

Driver: psycopg 3 (https://www.psycopg.org/psycopg3/docs/). It has a native asyncio connection
(the worker runs inside the event loop), adapts Python lists to PostgreSQL arrays (a whole
batch goes in one ``INSERT ... SELECT FROM unnest(...)`` round trip), loads ``numeric`` as
Decimal, pipelines ``executemany``, and ships type hints, which strict mypy needs; asyncpg is
as fast on this workload but untyped, and would add a second driver for the synchronous tools.

Concurrency: a batch is one transaction. Event ids go in first (the primary key, (tenant,
event_id), decides who counts an event: a concurrent copy waits for the first transaction, then
does nothing); item rows are created if missing and then locked ``FOR UPDATE`` in key order, so
two workers never merge the same message at once; month totals are incremented in SQL (``cost =
cost + delta``, exact numeric), whose row lock orders the budget checks of one tenant. Every
lock is taken in a fixed order, and a deadlock or serialization failure PostgreSQL still
reports is retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import psycopg
from psycopg import errors as pg_errors

from gateway.log import mask_url_password
from workers.usage.facts import Item, UsageFact, merge_batch, new_facts
from workers.usage.ledger import (
    ITEM_COLUMNS,
    SCHEMA_VERSION,
    BudgetAlert,
    IngestOutcome,
    LedgerUnavailable,
    OutcomeRow,
    UsagePolicy,
    UsageRow,
    month_bounds,
    new_alerts,
)

_RETRIES: Final = 5
_MIGRATION_LOCK: Final = 0x686F6F6B  # pg_advisory_xact_lock key of schema migrations

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE usage_events (
            event_id text PRIMARY KEY, tenant text NOT NULL, kind text NOT NULL,
            sid text NOT NULL, recorded_at timestamptz NOT NULL)""",
        """CREATE TABLE usage_items (
            tenant text NOT NULL, provider text NOT NULL, kind text NOT NULL, sid text NOT NULL,
            channel text NOT NULL, direction text NOT NULL, day text NOT NULL,
            status text NOT NULL, rank integer NOT NULL, destination text,
            segments integer NOT NULL, duration_s bigint, minutes integer NOT NULL,
            rated boolean NOT NULL, billed boolean NOT NULL, unit_price numeric NOT NULL,
            cost numeric NOT NULL,
            events integer NOT NULL, PRIMARY KEY (tenant, provider, kind, sid))""",
        "CREATE INDEX usage_items_day ON usage_items (day, tenant)",
        """CREATE TABLE usage_months (
            tenant text NOT NULL, month text NOT NULL, cost numeric NOT NULL,
            PRIMARY KEY (tenant, month))""",
        """CREATE TABLE budget_alerts (
            tenant text NOT NULL, month text NOT NULL, threshold integer NOT NULL,
            mode text NOT NULL, amount numeric NOT NULL, spent numeric NOT NULL,
            currency text NOT NULL, crossed_at timestamptz NOT NULL, published_at timestamptz,
            PRIMARY KEY (tenant, month, threshold))""",
        "CREATE INDEX budget_alerts_pending ON budget_alerts (crossed_at) "
        "WHERE published_at IS NULL",
    ),
    # Events keyed by (tenant, event_id): an id alone let one tenant's recorded event hide
    # another tenant's event with the same id (same provider account). The primary key is
    # swapped in place, inside migrate()'s transaction and advisory lock; rows are kept.
    2: (
        """ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey,
           ADD PRIMARY KEY (tenant, event_id)""",
    ),
}


class PostgresLedger:
    """The Ledger protocol on PostgreSQL: one connection, one batch at a time."""

    def __init__(self, url: str) -> None:
        # SQLAlchemy-style "postgresql+psycopg://" names a driver; libpq wants the plain scheme.
        scheme, sep, rest = url.partition("://")
        self.url = f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresLedger({mask_url_password(self.url)!r})"

    async def open(self) -> None:
        async with self._lock:
            await self._connection()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise LedgerUnavailable(
                f"postgresql ledger {mask_url_password(self.url)}: {exc}"
            ) from exc
        try:
            await migrate(conn)
        except BaseException as exc:
            await conn.close()  # a schema this version cannot use, or the server went away
            if isinstance(exc, psycopg.Error):
                raise LedgerUnavailable(
                    f"postgresql ledger {mask_url_password(self.url)}: {exc}"
                ) from exc
            raise
        self._conn = conn
        return conn

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _call(self, work: Any, *args: Any) -> Any:
        async with self._lock:
            for attempt in range(_RETRIES):
                conn = await self._connection()
                try:
                    async with conn.transaction():
                        return await work(conn, *args)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                    if attempt == _RETRIES - 1:
                        raise LedgerUnavailable(
                            f"postgresql ledger: lock conflicts persisted over {_RETRIES} attempts"
                        ) from None
                    await asyncio.sleep(0.01 * 2**attempt)
                except psycopg.Error as exc:
                    if conn.broken:
                        self._conn = None
                    raise LedgerUnavailable(f"postgresql ledger: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def ingest(
        self, facts: Sequence[UsageFact], policy: UsagePolicy, now: datetime
    ) -> IngestOutcome:
        result: IngestOutcome = await self._call(_ingest, facts, policy, now)
        return result

    async def pending_alerts(self) -> list[BudgetAlert]:
        async def query(conn: psycopg.AsyncConnection[Any]) -> list[BudgetAlert]:
            cur = await conn.execute(
                "SELECT tenant, month, threshold, mode, amount, spent, crossed_at, currency "
                "FROM budget_alerts WHERE published_at IS NULL ORDER BY crossed_at, tenant, "
                "month, threshold"
            )
            return [BudgetAlert(*row) for row in await cur.fetchall()]

        result: list[BudgetAlert] = await self._call(query)
        return result

    async def mark_published(self, alerts: Sequence[BudgetAlert], now: datetime) -> None:
        async def update(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "UPDATE budget_alerts SET published_at = %s WHERE tenant = %s AND "
                    "month = %s AND threshold = %s AND published_at IS NULL",
                    [(now, a.tenant, a.month, a.threshold) for a in alerts],
                )

        if alerts:
            await self._call(update)

    async def month_spend(self, tenant: str, month: str) -> Decimal:
        async def query(conn: psycopg.AsyncConnection[Any]) -> Decimal:
            cur = await conn.execute(
                "SELECT cost FROM usage_months WHERE tenant = %s AND month = %s", (tenant, month)
            )
            row = await cur.fetchone()
            return Decimal(row[0]) if row else Decimal(0)

        result: Decimal = await self._call(query)
        return result

    async def usage(self, month: str) -> list[UsageRow]:
        async def query(conn: psycopg.AsyncConnection[Any]) -> list[UsageRow]:
            cur = await conn.execute(
                "SELECT tenant, provider, channel, direction, day, "
                "count(*) FILTER (WHERE kind = 'message'), "
                "coalesce(sum(segments) FILTER (WHERE kind = 'message'), 0), "
                "count(*) FILTER (WHERE kind = 'message' AND status IN ('delivered', 'read')), "
                "count(*) FILTER (WHERE kind = 'message' AND status IN ('failed', "
                "'undelivered')), count(*) FILTER (WHERE kind = 'call'), sum(minutes), "
                "sum(cost), count(*) FILTER (WHERE NOT rated), coalesce(sum(segments) FILTER "
                "(WHERE kind = 'message' AND billed), 0) "
                "FROM usage_items WHERE day BETWEEN %s AND %s AND kind IN ('message', 'call') "
                "GROUP BY tenant, provider, channel, direction, day "
                "ORDER BY tenant, provider, channel, direction, day",
                month_bounds(month),
            )
            rows = await cur.fetchall()
            return [
                UsageRow(
                    t,
                    p,
                    c,
                    d,
                    day,
                    messages=m,
                    segments=int(s),
                    billed_segments=int(billed),
                    delivered=ok,
                    failed=ko,
                    calls=calls,
                    minutes=int(mins),
                    cost=cost,
                    unrated=unrated,
                )
                for t, p, c, d, day, m, s, ok, ko, calls, mins, cost, unrated, billed in rows
            ]

        result: list[UsageRow] = await self._call(query)
        return result

    async def outcomes(self, month: str) -> list[OutcomeRow]:
        async def query(conn: psycopg.AsyncConnection[Any]) -> list[OutcomeRow]:
            cur = await conn.execute(
                "SELECT tenant, day, status, count(*) FROM usage_items WHERE kind = 'bot' AND "
                "day BETWEEN %s AND %s GROUP BY tenant, day, status ORDER BY tenant, day, status",
                month_bounds(month),
            )
            return [OutcomeRow(*row) for row in await cur.fetchall()]

        result: list[OutcomeRow] = await self._call(query)
        return result


async def migrate(conn: psycopg.AsyncConnection[Any]) -> int:
    """Create or upgrade the schema; an advisory lock serializes concurrent migrators."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        cur = await conn.execute("SELECT max(version) FROM schema_version")
        row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        if current > SCHEMA_VERSION:
            raise LedgerUnavailable(
                f"postgresql ledger: schema version {current} is newer "
                f"than this hookline knows ({SCHEMA_VERSION}); upgrade"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return SCHEMA_VERSION


async def _ingest(
    conn: psycopg.AsyncConnection[Any],
    facts: Sequence[UsageFact],
    policy: UsagePolicy,
    now: datetime,
) -> IngestOutcome:
    # Sorted by key, so that concurrent batches take the key locks in the same order.
    unique = sorted({f.once: f for f in facts}.values(), key=lambda f: f.once)
    cur = await conn.execute(
        "INSERT INTO usage_events (event_id, tenant, kind, sid, recorded_at) "
        "SELECT e, t, k, s, %s FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
        "AS v(e, t, k, s) ON CONFLICT (tenant, event_id) DO NOTHING RETURNING tenant, event_id",
        (
            now,
            [f.event_id for f in unique],
            [f.tenant for f in unique],
            [f.kind for f in unique],
            [f.sid for f in unique],
        ),
    )
    inserted = {(tenant, event) for tenant, event in await cur.fetchall()}
    fresh = new_facts(facts, inserted)
    keys = sorted({f.key for f in fresh})
    existing: dict[tuple[str, str, str, str], Item] = {}
    if keys:
        columns = [list(column) for column in zip(*keys, strict=True)]
        # Rows that do not exist yet are created as placeholders (rank -1), so that the lock
        # below covers new messages too: a concurrent creator waits on the unique key.
        await conn.execute(
            "INSERT INTO usage_items (tenant, provider, kind, sid, channel, direction, day, "
            "status, rank, segments, minutes, rated, billed, unit_price, cost, events) "
            "SELECT t, p, k, s, '', '', '', '', -1, 0, 0, false, false, 0, 0, 0 "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS v(t, p, k, s) "
            "ON CONFLICT DO NOTHING",
            columns,
        )
        cur = await conn.execute(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM usage_items "  # noqa: S608
            "WHERE (tenant, provider, kind, sid) IN (SELECT * FROM unnest(%s::text[], "
            "%s::text[], %s::text[], %s::text[])) ORDER BY tenant, provider, kind, sid "
            "FOR UPDATE",
            columns,
        )
        for row in await cur.fetchall():
            item = Item(*row)
            if item.rank >= 0:
                existing[item.key] = item
    changed, deltas = merge_batch(existing, fresh, policy.card)
    if changed:
        async with conn.cursor() as many:
            await many.executemany(
                "UPDATE usage_items SET "  # noqa: S608
                + ", ".join(f"{c} = %s" for c in ITEM_COLUMNS[4:])
                + " WHERE tenant = %s AND provider = %s AND kind = %s AND sid = %s",
                [[getattr(i, c) for c in ITEM_COLUMNS[4:]] + list(i.key) for i in changed.values()],
            )
    totals: dict[tuple[str, str], Decimal] = {}
    for (tenant, month), delta in sorted(deltas.items()):
        cur = await conn.execute(
            "INSERT INTO usage_months (tenant, month, cost) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant, month) DO UPDATE SET cost = usage_months.cost + excluded.cost "
            "RETURNING cost",
            (tenant, month, delta),
        )
        row = await cur.fetchone()
        totals[(tenant, month)] = row[0] if row else delta
    alerts = []
    for alert in new_alerts(policy, totals, now):
        cur = await conn.execute(
            "INSERT INTO budget_alerts (tenant, month, threshold, mode, amount, spent, currency, "
            "crossed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING "
            "RETURNING threshold",
            (
                alert.tenant,
                alert.month,
                alert.threshold,
                alert.mode,
                alert.amount,
                alert.spent,
                alert.currency,
                now,
            ),
        )
        if await cur.fetchone():
            alerts.append(alert)
    return IngestOutcome(len(fresh), len(facts) - len(fresh), tuple(alerts))
