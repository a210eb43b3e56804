"""The bot-call store in SQLite (the embedded default database, HOOKLINE_DB_URL unset).

Same file as the usage ledger, tables of its own (``bot_*``, versioned in
``flows_schema_version``). One connection on one thread keeps the event loop free; every
write is one statement or one ``BEGIN IMMEDIATE`` transaction, so concurrent worker
processes are serialized by SQLite's write lock (https://www.sqlite.org/lang_transaction.html).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Final, TypeVar

import orjson

from gateway.errors import TransientError
from workers.flows.bot_call_store import BotCall, Claim
from workers.sqlite_file import connect_wal

_T = TypeVar("_T")
SCHEMA_VERSION: Final = 2
BUSY_TIMEOUT_MS: Final = 30_000
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE bot_requests (
            tenant TEXT NOT NULL, request_id TEXT NOT NULL, call_sid TEXT,
            PRIMARY KEY (tenant, request_id)) WITHOUT ROWID""",
        """CREATE TABLE bot_calls (
            call_sid TEXT PRIMARY KEY, tenant TEXT NOT NULL, request_id TEXT NOT NULL,
            flow TEXT NOT NULL, to_number TEXT NOT NULL, from_number TEXT NOT NULL,
            answered_by TEXT, inputs TEXT NOT NULL, finished INTEGER NOT NULL DEFAULT 0)
            WITHOUT ROWID""",
        """CREATE TABLE bot_sms (
            call_sid TEXT NOT NULL, step TEXT NOT NULL, PRIMARY KEY (call_sid, step))
            WITHOUT ROWID""",
    ),
    # Calls and texts keyed by (tenant, CallSid): a CallSid alone let one tenant's signed
    # callback reach another tenant's call. SQLite cannot change a primary key in place, so
    # the tables are copied (rows kept; a text's tenant is its call's).
    2: (
        """CREATE TABLE bot_calls_v2 (
            call_sid TEXT NOT NULL, tenant TEXT NOT NULL, request_id TEXT NOT NULL,
            flow TEXT NOT NULL, to_number TEXT NOT NULL, from_number TEXT NOT NULL,
            answered_by TEXT, inputs TEXT NOT NULL, finished INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (tenant, call_sid)) WITHOUT ROWID""",
        "INSERT INTO bot_calls_v2 SELECT * FROM bot_calls",
        """CREATE TABLE bot_sms_v2 (
            tenant TEXT NOT NULL, call_sid TEXT NOT NULL, step TEXT NOT NULL,
            PRIMARY KEY (tenant, call_sid, step)) WITHOUT ROWID""",
        """INSERT INTO bot_sms_v2 SELECT coalesce(c.tenant, ''), s.call_sid, s.step
           FROM bot_sms s LEFT JOIN bot_calls c ON c.call_sid = s.call_sid""",
        "DROP TABLE bot_sms",
        "DROP TABLE bot_calls",
        "ALTER TABLE bot_calls_v2 RENAME TO bot_calls",
        "ALTER TABLE bot_sms_v2 RENAME TO bot_sms",
        "CREATE INDEX bot_calls_by_sid ON bot_calls (call_sid)",
    ),
}
# Placement fills in what a flow event that overtook it left empty, and keeps its facts.
_PLACED: Final = """
    INSERT INTO bot_calls (call_sid, tenant, request_id, flow, to_number, from_number,
                           answered_by, inputs)
    VALUES (?, ?, ?, ?, ?, ?, NULL, '{}')
    ON CONFLICT (tenant, call_sid) DO UPDATE SET
        request_id = excluded.request_id, flow = excluded.flow,
        to_number = excluded.to_number, from_number = excluded.from_number"""


class SqliteBotCallStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        if self._db is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="hookline-flows-db")
        try:
            self._db = await self._run_raw(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        db = connect_wal(self._path, BUSY_TIMEOUT_MS)
        try:
            _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._run_raw(db.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _run_raw(self, work: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise TransientError("bot-call store is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O
            raise TransientError(f"bot-call store {self._path}: {exc}") from exc

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._db
        if db is None:
            raise TransientError("bot-call store is not open")
        return await self._run_raw(lambda: work(db))

    async def placed(self, call: BotCall) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    _PLACED,
                    (call.call_sid, call.tenant, call.request_id, call.flow, call.to, call.from_),
                )
                db.execute(
                    """INSERT INTO bot_requests VALUES (?, ?, ?) ON CONFLICT
                              (tenant, request_id) DO UPDATE SET call_sid = excluded.call_sid""",
                    (call.tenant, call.request_id, call.call_sid),
                )

        await self._run(write)

    async def stepped(self, call: BotCall) -> None:
        def write(db: sqlite3.Connection) -> None:
            with _transaction(db):
                row = db.execute(
                    "SELECT answered_by, inputs FROM bot_calls WHERE tenant = ? AND call_sid = ?",
                    (call.tenant, call.call_sid),
                ).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO bot_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
                        (
                            call.call_sid,
                            call.tenant,
                            call.request_id,
                            call.flow,
                            call.to,
                            call.from_,
                            call.answered_by,
                            orjson.dumps(dict(call.inputs)).decode(),
                        ),
                    )
                    return
                inputs = {**orjson.loads(row[1]), **call.inputs}
                db.execute(
                    "UPDATE bot_calls SET answered_by = ?, inputs = ? WHERE tenant = ? "
                    "AND call_sid = ?",
                    (
                        row[0] or call.answered_by,
                        orjson.dumps(inputs).decode(),
                        call.tenant,
                        call.call_sid,
                    ),
                )

        await self._run(write)

    async def sms_sent(self, tenant: str, call_sid: str, step: str) -> bool:
        return await self._run(
            lambda db: (
                db.execute(
                    "SELECT 1 FROM bot_sms WHERE tenant = ? AND call_sid = ? AND step = ?",
                    (tenant, call_sid, step),
                ).fetchone()
                is not None
            )
        )

    async def mark_sms_sent(self, tenant: str, call_sid: str, step: str) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO bot_sms VALUES (?, ?, ?)", (tenant, call_sid, step)
            )
        )

    async def get(self, tenant: str, call_sid: str) -> BotCall | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT call_sid, tenant, request_id, flow, to_number, from_number, answered_by, "
                "inputs, finished FROM bot_calls WHERE tenant = ? AND call_sid = ?",
                (tenant, call_sid),
            ).fetchone()
        )
        if row is None:
            return None
        return BotCall(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            orjson.loads(row[7]),
            bool(row[8]),
        )

    async def owners(self, call_sid: str) -> tuple[str, ...]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT tenant FROM bot_calls WHERE call_sid = ? ORDER BY tenant", (call_sid,)
            ).fetchall()
        )
        return tuple(str(row[0]) for row in rows)

    async def mark_finished(self, tenant: str, call_sid: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE bot_calls SET finished = 1 WHERE tenant = ? AND call_sid = ?",
                (tenant, call_sid),
            )
        )

    async def claim(self, tenant: str, request_id: str) -> Claim:
        def write(db: sqlite3.Connection) -> Claim:
            with _transaction(db):
                row = db.execute(
                    "SELECT call_sid FROM bot_requests WHERE tenant = ? AND request_id = ?",
                    (tenant, request_id),
                ).fetchone()
                if row is not None:
                    return str(row[0]) if row[0] else "pending"
                db.execute("INSERT INTO bot_requests VALUES (?, ?, NULL)", (tenant, request_id))
                return "new"

        return await self._run(write)

    async def release(self, tenant: str, request_id: str) -> None:
        await self._run(
            lambda db: db.execute(
                "DELETE FROM bot_requests WHERE tenant = ? AND request_id = ? AND call_sid IS NULL",
                (tenant, request_id),
            )
        )


def _migrate(db: sqlite3.Connection) -> None:
    with _transaction(db):
        db.execute("CREATE TABLE IF NOT EXISTS flows_schema_version (version INTEGER)")
        current = db.execute("SELECT max(version) FROM flows_schema_version").fetchone()[0]
        for version in range((current or 0) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute("INSERT INTO flows_schema_version VALUES (?)", (version,))


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (the connection is in autocommit)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
