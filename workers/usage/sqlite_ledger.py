"""The embedded SQLite ledger (the default: HOOKLINE_DB_URL unset or a SQLite path).

One connection on one dedicated thread, so the event loop never blocks on the disk. Each batch
is one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock up front, so concurrent
worker processes on the same file are serialized by SQLite itself (busy_timeout waits for the
lock) and a read-merge-write inside the transaction cannot race. WAL mode with
synchronous=FULL: a committed batch survives a crash and a power loss
(https://www.sqlite.org/wal.html, https://www.sqlite.org/pragma.html#pragma_synchronous).
Money is stored as decimal text and summed by ``dsum``, an exact Decimal aggregate, because
SQLite's own arithmetic is binary floating point.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Final, TypeVar

from gateway.usage_config import decimal_text
from workers.sqlite_file import connect_wal
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

_T = TypeVar("_T")
BUSY_TIMEOUT_MS: Final = 30_000
_CHUNK: Final = 400  # bound parameters per statement stay far below SQLite's limit (32766)

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE usage_events (
            event_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL,
            sid TEXT NOT NULL, recorded_at TEXT NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE usage_items (
            tenant TEXT NOT NULL, provider TEXT NOT NULL, kind TEXT NOT NULL, sid TEXT NOT NULL,
            channel TEXT NOT NULL, direction TEXT NOT NULL, day TEXT NOT NULL,
            status TEXT NOT NULL, rank INTEGER NOT NULL, destination TEXT,
            segments INTEGER NOT NULL, duration_s INTEGER, minutes INTEGER NOT NULL,
            rated INTEGER NOT NULL, billed INTEGER NOT NULL, unit_price TEXT NOT NULL,
            cost TEXT NOT NULL,
            events INTEGER NOT NULL, PRIMARY KEY (tenant, provider, kind, sid)) WITHOUT ROWID""",
        "CREATE INDEX usage_items_day ON usage_items (day, tenant)",
        """CREATE TABLE usage_months (
            tenant TEXT NOT NULL, month TEXT NOT NULL, cost TEXT NOT NULL,
            PRIMARY KEY (tenant, month)) WITHOUT ROWID""",
        """CREATE TABLE budget_alerts (
            tenant TEXT NOT NULL, month TEXT NOT NULL, threshold INTEGER NOT NULL,
            mode TEXT NOT NULL, amount TEXT NOT NULL, spent TEXT NOT NULL,
            currency TEXT NOT NULL, crossed_at TEXT NOT NULL, published_at TEXT,
            PRIMARY KEY (tenant, month, threshold)) WITHOUT ROWID""",
    ),
    # Events keyed by (tenant, event_id): an id alone let one tenant's recorded event hide
    # another tenant's event with the same id (same provider account). SQLite cannot change a
    # primary key in place, so the table is copied, inside migrate()'s one transaction.
    2: (
        """CREATE TABLE usage_events_v2 (
            event_id TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL,
            sid TEXT NOT NULL, recorded_at TEXT NOT NULL,
            PRIMARY KEY (tenant, event_id)) WITHOUT ROWID""",
        """INSERT INTO usage_events_v2 (event_id, tenant, kind, sid, recorded_at)
           SELECT event_id, tenant, kind, sid, recorded_at FROM usage_events""",
        "DROP TABLE usage_events",
        "ALTER TABLE usage_events_v2 RENAME TO usage_events",
    ),
}


class _DecimalSum:
    """sqlite3 aggregate: the exact sum of decimal text values, as text."""

    def __init__(self) -> None:
        self.total = Decimal(0)

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total += Decimal(value)

    def finalize(self) -> str:
        return decimal_text(self.total)


class SqliteLedger:
    """The Ledger protocol on a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None or self._db is None:
            raise LedgerUnavailable(f"sqlite ledger {self.path}: not open")
        db = self._db
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, db)
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"sqlite ledger {self.path}: {exc}") from exc

    async def open(self) -> None:
        if self._db is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hookline-ledger")
        loop = asyncio.get_running_loop()
        try:
            self._db = await loop.run_in_executor(self._executor, self._connect)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown()
            self._executor = None
            raise LedgerUnavailable(f"sqlite ledger {self.path}: cannot open: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        db = connect_wal(self.path, BUSY_TIMEOUT_MS)
        # typeshed pins aggregates to int values; SQLite passes and takes any value.
        db.create_aggregate("dsum", 1, _DecimalSum)  # type: ignore[arg-type]
        try:
            migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        db, executor = self._db, self._executor
        self._db = self._executor = None
        if executor is not None and db is not None:
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
        if executor is not None:
            executor.shutdown()

    async def ingest(
        self, facts: Sequence[UsageFact], policy: UsagePolicy, now: datetime
    ) -> IngestOutcome:
        return await self._run(partial(_ingest, facts=facts, policy=policy, now=now))

    async def pending_alerts(self) -> list[BudgetAlert]:
        def query(db: sqlite3.Connection) -> list[BudgetAlert]:
            rows = db.execute(
                "SELECT tenant, month, threshold, mode, amount, spent, crossed_at, currency "
                "FROM budget_alerts WHERE published_at IS NULL ORDER BY crossed_at, tenant, "
                "month, threshold"
            ).fetchall()
            return [
                BudgetAlert(t, m, th, mode, Decimal(a), Decimal(s), datetime.fromisoformat(at), cur)
                for t, m, th, mode, a, s, at, cur in rows
            ]

        return await self._run(query)

    async def mark_published(self, alerts: Sequence[BudgetAlert], now: datetime) -> None:
        def update(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.executemany(
                    "UPDATE budget_alerts SET published_at = ? WHERE tenant = ? AND month = ? "
                    "AND threshold = ? AND published_at IS NULL",
                    [(now.isoformat(), a.tenant, a.month, a.threshold) for a in alerts],
                )

        await self._run(update)

    async def month_spend(self, tenant: str, month: str) -> Decimal:
        def query(db: sqlite3.Connection) -> Decimal:
            row = db.execute(
                "SELECT cost FROM usage_months WHERE tenant = ? AND month = ?", (tenant, month)
            ).fetchone()
            return Decimal(row[0]) if row else Decimal(0)

        return await self._run(query)

    async def usage(self, month: str) -> list[UsageRow]:
        def query(db: sqlite3.Connection) -> list[UsageRow]:
            rows = db.execute(
                "SELECT tenant, provider, channel, direction, day, "
                "sum(kind = 'message'), sum(CASE WHEN kind = 'message' THEN segments END), "
                "sum(kind = 'message' AND status IN ('delivered', 'read')), "
                "sum(kind = 'message' AND status IN ('failed', 'undelivered')), "
                "sum(kind = 'call'), sum(minutes), dsum(cost), sum(rated = 0), "
                "sum(CASE WHEN kind = 'message' AND billed THEN segments END) "
                "FROM usage_items WHERE day BETWEEN ? AND ? AND kind IN ('message', 'call') "
                "GROUP BY tenant, provider, channel, direction, day "
                "ORDER BY tenant, provider, channel, direction, day",
                month_bounds(month),
            )
            return [
                UsageRow(
                    t,
                    p,
                    c,
                    d,
                    day,
                    messages=m or 0,
                    segments=s or 0,
                    billed_segments=billed or 0,
                    delivered=ok or 0,
                    failed=ko or 0,
                    calls=calls or 0,
                    minutes=mins or 0,
                    cost=Decimal(cost),
                    unrated=unrated or 0,
                )
                for t, p, c, d, day, m, s, ok, ko, calls, mins, cost, unrated, billed in rows
            ]

        return await self._run(query)

    async def outcomes(self, month: str) -> list[OutcomeRow]:
        def query(db: sqlite3.Connection) -> list[OutcomeRow]:
            rows = db.execute(
                "SELECT tenant, day, status, count(*) FROM usage_items WHERE kind = 'bot' AND "
                "day BETWEEN ? AND ? GROUP BY tenant, day, status ORDER BY tenant, day, status",
                month_bounds(month),
            ).fetchall()
            return [OutcomeRow(*row) for row in rows]

        return await self._run(query)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error (the batch leaves no trace)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def migrate(db: sqlite3.Connection) -> int:
    """Create or upgrade the schema under the write lock; return the version now in force."""
    with _transaction(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        current = row[0] or 0
        if current > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {current} is newer than this hookline knows "
                f"({SCHEMA_VERSION}); upgrade hookline"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return SCHEMA_VERSION


def _chunks(values: Sequence[_T], size: int = _CHUNK) -> list[Sequence[_T]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _ingest(
    db: sqlite3.Connection, *, facts: Sequence[UsageFact], policy: UsagePolicy, now: datetime
) -> IngestOutcome:
    stamp = now.isoformat()
    with _transaction(db):
        inserted: set[tuple[str, str]] = set()
        unique = list({f.once: f for f in facts}.values())
        for chunk in _chunks(unique):
            values = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
            params = [v for f in chunk for v in (f.event_id, f.tenant, f.kind, f.sid, stamp)]
            rows = db.execute(
                f"INSERT INTO usage_events (event_id, tenant, kind, sid, recorded_at) "  # noqa: S608
                f"VALUES {values} ON CONFLICT (tenant, event_id) DO NOTHING "
                f"RETURNING tenant, event_id",
                params,
            ).fetchall()
            inserted.update((tenant, event) for tenant, event in rows)
        fresh = new_facts(facts, set(inserted))
        keys = sorted({f.key for f in fresh})
        existing: dict[tuple[str, str, str, str], Item] = {}
        for part in _chunks(keys, _CHUNK // 4):
            where = " OR ".join(
                ["(tenant = ? AND provider = ? AND kind = ? AND sid = ?)"] * len(part)
            )
            for row in db.execute(
                f"SELECT {', '.join(ITEM_COLUMNS)} FROM usage_items "  # noqa: S608
                f"WHERE {where}",
                [v for k in part for v in k],
            ):
                item = _item(row)
                existing[item.key] = item
        changed, deltas = merge_batch(existing, fresh, policy.card)
        db.executemany(
            f"INSERT INTO usage_items ({', '.join(ITEM_COLUMNS)}) "  # noqa: S608
            f"VALUES ({', '.join('?' * len(ITEM_COLUMNS))}) ON CONFLICT DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in ITEM_COLUMNS[4:]),
            [_row(item) for item in changed.values()],
        )
        totals: dict[tuple[str, str], Decimal] = {}
        for (tenant, month), delta in sorted(deltas.items()):
            row = db.execute(
                "SELECT cost FROM usage_months WHERE tenant = ? AND month = ?", (tenant, month)
            ).fetchone()
            totals[(tenant, month)] = total = (Decimal(row[0]) if row else Decimal(0)) + delta
            db.execute(
                "INSERT INTO usage_months (tenant, month, cost) VALUES (?, ?, ?) "
                "ON CONFLICT DO UPDATE SET cost = excluded.cost",
                (tenant, month, decimal_text(total)),
            )
        alerts = []
        for alert in new_alerts(policy, totals, now):
            # The primary key keeps each threshold once per tenant and month, whoever crosses it.
            if db.execute(
                "INSERT INTO budget_alerts (tenant, month, threshold, mode, amount, spent, "
                "currency, crossed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING "
                "RETURNING threshold",
                (
                    alert.tenant,
                    alert.month,
                    alert.threshold,
                    alert.mode,
                    decimal_text(alert.amount),
                    decimal_text(alert.spent),
                    alert.currency,
                    stamp,
                ),
            ).fetchone():
                alerts.append(alert)
    return IngestOutcome(len(fresh), len(facts) - len(fresh), tuple(alerts))


def _item(row: Sequence[object]) -> Item:
    values = dict(zip(ITEM_COLUMNS, row, strict=True))
    values["rated"] = bool(values["rated"])
    values["billed"] = bool(values["billed"])
    values["unit_price"] = Decimal(str(values["unit_price"]))
    values["cost"] = Decimal(str(values["cost"]))
    return Item(**values)  # type: ignore[arg-type]


def _row(item: Item) -> tuple[object, ...]:
    values = [getattr(item, c) for c in ITEM_COLUMNS]
    return tuple(
        decimal_text(v) if isinstance(v, Decimal) else int(v) if isinstance(v, bool) else v
        for v in values
    )
