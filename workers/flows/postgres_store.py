"""The bot-call store in PostgreSQL (HOOKLINE_DB_URL=postgresql://...), with psycopg 3.

Same database as the usage ledger, tables of its own (``bot_*``, versioned in
``flows_schema_version``; migrations serialized by an advisory lock). Claims are one
``INSERT ... ON CONFLICT DO NOTHING``: the primary key decides which worker places a call.
A flow step merges in one ``UPDATE`` (``inputs || new``) under the row's lock, so concurrent
steps of one call never lose each other's inputs. https://www.postgresql.org/docs/current/sql-insert.html#SQL-ON-CONFLICT
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from gateway.errors import TransientError
from gateway.log import mask_url_password
from workers.flows.bot_call_store import BotCall, Claim

_T = TypeVar("_T")
SCHEMA_VERSION: Final = 2
_MIGRATION_LOCK: Final = 0x626F7463  # pg_advisory_xact_lock key: "botc"
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        """CREATE TABLE bot_requests (
            tenant text NOT NULL, request_id text NOT NULL, call_sid text,
            PRIMARY KEY (tenant, request_id))""",
        """CREATE TABLE bot_calls (
            call_sid text PRIMARY KEY, tenant text NOT NULL, request_id text NOT NULL,
            flow text NOT NULL, to_number text NOT NULL, from_number text NOT NULL,
            answered_by text, inputs jsonb NOT NULL DEFAULT '{}',
            finished boolean NOT NULL DEFAULT false)""",
        """CREATE TABLE bot_sms (
            call_sid text NOT NULL, step text NOT NULL, PRIMARY KEY (call_sid, step))""",
    ),
    # Calls and texts keyed by (tenant, CallSid): a CallSid alone let one tenant's signed
    # callback reach another tenant's call. Migrated in place (rows kept; a text's tenant is
    # its call's).
    2: (
        "ALTER TABLE bot_sms ADD COLUMN tenant text",
        "UPDATE bot_sms s SET tenant = c.tenant FROM bot_calls c WHERE c.call_sid = s.call_sid",
        "UPDATE bot_sms SET tenant = '' WHERE tenant IS NULL",
        """ALTER TABLE bot_sms ALTER COLUMN tenant SET NOT NULL,
           DROP CONSTRAINT bot_sms_pkey, ADD PRIMARY KEY (tenant, call_sid, step)""",
        """ALTER TABLE bot_calls DROP CONSTRAINT bot_calls_pkey,
           ADD PRIMARY KEY (tenant, call_sid)""",
        "CREATE INDEX bot_calls_by_sid ON bot_calls (call_sid)",
    ),
}


class PostgresBotCallStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one connection: one statement at a time

    async def open(self) -> None:
        await self._run(lambda _conn: _done())

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]) -> _T:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, connect_timeout=10
                    )
                    await _migrate(self._conn)
                return await work(self._conn)
            except psycopg.OperationalError as exc:  # server gone, connection broken
                conn, self._conn = self._conn, None
                if conn is not None:
                    await conn.close()
                raise TransientError(
                    f"bot-call store {mask_url_password(self.url)}: {exc}"
                ) from exc

    async def placed(self, call: BotCall) -> None:
        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO bot_calls (call_sid, tenant, request_id, flow, to_number,
                                              from_number)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (tenant, call_sid) DO UPDATE SET
                           request_id = excluded.request_id, flow = excluded.flow,
                           to_number = excluded.to_number, from_number = excluded.from_number""",
                    (call.call_sid, call.tenant, call.request_id, call.flow, call.to, call.from_),
                )
                await conn.execute(
                    """INSERT INTO bot_requests VALUES (%s, %s, %s) ON CONFLICT
                       (tenant, request_id) DO UPDATE SET call_sid = excluded.call_sid""",
                    (call.tenant, call.request_id, call.call_sid),
                )

        await self._run(write)

    async def stepped(self, call: BotCall) -> None:
        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO bot_calls (call_sid, tenant, request_id, flow, to_number,
                                              from_number)
                       VALUES (%s, %s, %s, %s, %s, %s)
                       ON CONFLICT (tenant, call_sid) DO NOTHING""",
                    (call.call_sid, call.tenant, call.request_id, call.flow, call.to, call.from_),
                )
                await conn.execute(
                    """UPDATE bot_calls SET answered_by = coalesce(answered_by, %s),
                           inputs = inputs || %s WHERE tenant = %s AND call_sid = %s""",
                    (call.answered_by, Jsonb(dict(call.inputs)), call.tenant, call.call_sid),
                )

        await self._run(write)

    async def sms_sent(self, tenant: str, call_sid: str, step: str) -> bool:
        async def read(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                "SELECT 1 FROM bot_sms WHERE tenant = %s AND call_sid = %s AND step = %s",
                (tenant, call_sid, step),
            )
            return await cur.fetchone() is not None

        return await self._run(read)

    async def mark_sms_sent(self, tenant: str, call_sid: str, step: str) -> None:
        await self._execute(
            """INSERT INTO bot_sms (tenant, call_sid, step) VALUES (%s, %s, %s)
                               ON CONFLICT DO NOTHING""",
            (tenant, call_sid, step),
        )

    async def get(self, tenant: str, call_sid: str) -> BotCall | None:
        async def read(conn: psycopg.AsyncConnection[Any]) -> BotCall | None:
            cur = await conn.execute(
                """SELECT call_sid, tenant, request_id, flow, to_number, from_number,
                          answered_by, inputs, finished FROM bot_calls
                   WHERE tenant = %s AND call_sid = %s""",
                (tenant, call_sid),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            return BotCall(
                row[0], row[1], row[2], row[3], row[4], row[5], row[6], dict(row[7]), bool(row[8])
            )

        return await self._run(read)

    async def owners(self, call_sid: str) -> tuple[str, ...]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> tuple[str, ...]:
            cur = await conn.execute(
                "SELECT tenant FROM bot_calls WHERE call_sid = %s ORDER BY tenant", (call_sid,)
            )
            return tuple(str(row[0]) for row in await cur.fetchall())

        return await self._run(read)

    async def mark_finished(self, tenant: str, call_sid: str) -> None:
        await self._execute(
            "UPDATE bot_calls SET finished = true WHERE tenant = %s AND call_sid = %s",
            (tenant, call_sid),
        )

    async def claim(self, tenant: str, request_id: str) -> Claim:
        async def write(conn: psycopg.AsyncConnection[Any]) -> Claim:
            cur = await conn.execute(
                """INSERT INTO bot_requests VALUES (%s, %s, NULL) ON CONFLICT DO NOTHING
                   RETURNING 1""",
                (tenant, request_id),
            )
            if await cur.fetchone() is not None:
                return "new"
            cur = await conn.execute(
                "SELECT call_sid FROM bot_requests WHERE tenant = %s AND request_id = %s",
                (tenant, request_id),
            )
            row = await cur.fetchone()
            return str(row[0]) if row and row[0] else "pending"

        return await self._run(write)

    async def release(self, tenant: str, request_id: str) -> None:
        await self._execute(
            """DELETE FROM bot_requests WHERE tenant = %s AND request_id = %s
               AND call_sid IS NULL""",
            (tenant, request_id),
        )

    async def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(sql.encode(), params)

        await self._run(write)


async def _done() -> None:
    return None


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS flows_schema_version (version integer)")
        cur = await conn.execute("SELECT max(version) FROM flows_schema_version")
        row = await cur.fetchone()
        for version in range((row[0] if row and row[0] else 0) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement.encode())
            await conn.execute("INSERT INTO flows_schema_version VALUES (%s)", (version,))
