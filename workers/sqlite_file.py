"""Opening a SQLite file that several worker processes share, in WAL mode.

Switching a fresh file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once,
without calling the busy handler, when another process opens the same file at that moment
(https://www.sqlite.org/wal.html#concurrency, https://www.sqlite.org/c3ref/busy_timeout.html).
Two workers starting together would then fail one of them with "database is locked", so the
switch is retried here, with a short backoff, until the same busy timeout the transactions use.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final

_FIRST_BACKOFF_S: Final = 0.005
_MAX_BACKOFF_S: Final = 0.2


def connect_wal(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with synchronous=FULL, for use on any one thread.

    Raises sqlite3.OperationalError if the file stays locked for busy_timeout_ms, or if SQLite
    refuses WAL (a filesystem without shared memory, for instance).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: callers issue BEGIN IMMEDIATE / COMMIT themselves.
    db = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    try:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = _switch_to_wal(db, time.monotonic() + busy_timeout_ms / 1000)
        if mode != "wal":
            raise sqlite3.OperationalError(
                f"{path}: expected journal_mode wal, SQLite kept {mode!r}"
            )
        db.execute("PRAGMA synchronous = FULL")
    except BaseException:
        db.close()
        raise
    return db


def _switch_to_wal(db: sqlite3.Connection, deadline: float) -> str:
    backoff = _FIRST_BACKOFF_S
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + backoff > deadline:
                raise
        time.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Primary codes SQLITE_BUSY (5) and SQLITE_LOCKED (6), whatever the extended part.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)
