"""The durable local spool: events the broker could not confirm wait here, fsynced, until replay.

Why SQLite, WAL mode, ``synchronous=FULL`` (https://www.sqlite.org/wal.html,
https://www.sqlite.org/pragma.html#pragma_synchronous):
* Crash safety from SQLite's journal: a transaction survives a crash whole or not at all, and
  FULL fsyncs the WAL at every commit, so a committed ``put`` survives a power cut too.
* WAL frames are checksummed and a torn tail is discarded on recovery: checksummed enough,
  without a hand-written segment log and its recovery code to get wrong.
* ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` is the rowid: replay order is a B-tree walk,
  deletes are cheap, a seq is never reused. Group commit (one transaction per burst of
  ``put``) amortizes the fsync; WAL lets ``hookline spool status`` read a live spool.
* One file per owner: a process owns ``spool-<n>.db`` while it holds an exclusive ``flock`` on
  ``spool-<n>.lock``; the kernel drops it when the process dies, and the file becomes an orphan
  that another process may adopt and drain. SQLite work runs in one writer thread per spool.
* A file SQLite reports as corrupt when it is opened (not a database, damaged pages) is renamed
  ``corrupt-spool-<n>-<UTC time>.db`` (with its WAL) and a fresh spool takes its place: the
  gateway keeps a working spool, the orphan sweep skips it, and nothing in it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson
import structlog

from gateway.errors import HooklineError
from schemas.events import Event

SPOOL_DIR: Final = "spool"
_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,
    routing_key TEXT NOT NULL, body BLOB NOT NULL, spooled_at REAL NOT NULL)"""
# Fsync the WAL at every commit; shrink it again after an outage; wait out a status reader.
_PRAGMAS: Final = ("synchronous=FULL", "journal_size_limit=67108864", "busy_timeout=5000")
_SELECTED: Final = "FROM spool WHERE seq IN (SELECT value FROM json_each(?))"  # no ?-limit
_T = TypeVar("_T")
# What SQLite says of a file that is not a database or whose pages are damaged
# (https://www.sqlite.org/rescode.html#corrupt): quarantined, never retried.
_CORRUPT_SQLITE_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
QUARANTINE_PREFIX: Final = "corrupt-"

log = structlog.get_logger("hookline.spool")


class SpoolError(HooklineError):
    """The spool cannot take (or give back) events: over its cap, disk full, unwritable."""

    http_status = 503
    reason = "spool_unavailable"


@dataclass(frozen=True, slots=True)
class SpooledEvent:
    seq: int
    event_id: str
    routing_key: str
    body: bytes


def is_corrupt(exc: BaseException) -> bool:
    """Whether SQLite says the file is not a database or its pages are damaged."""
    return getattr(exc, "sqlite_errorcode", None) in _CORRUPT_SQLITE_CODES


def _failure(path: Path, exc: sqlite3.Error | OSError) -> SpoolError:
    name, text = getattr(exc, "sqlite_errorname", ""), str(exc)
    what = (
        "disk full"
        if name == "SQLITE_FULL" or "database or disk is full" in text
        else "read-only"
        if name.startswith("SQLITE_READONLY") or "readonly" in text
        else "sqlite error"
        if isinstance(exc, sqlite3.Error)
        else "unusable"
    )
    return SpoolError(f"spool {path}: {what} ({text})")


def _lock(lock_path: Path) -> int | None:
    """Take the exclusive lock on ``lock_path``: its fd, or None when a live process holds it.
    Non-blocking (LOCK_NB) local metadata calls, so the async API calls it on the loop."""
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # An owner closing an empty spool unlinks the lock before releasing it: if we locked
        # that dying inode, two processes could both believe they own spool-<n>. Start again.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)


def _claim(db: Path) -> int | None:
    """Lock an existing spool file: the lock's fd, or None (owner alive, or the file gone)."""
    if (fd := _lock(db.with_suffix(".lock"))) is not None and not db.exists():
        os.close(fd)  # drained and deleted since it was listed: nothing to adopt
        return None
    return fd


class Spool:
    """One process's spool file. Build it with ``await Spool.open(...)`` or ``Spool.adopt``."""

    def __init__(self, path: Path, lock_fd: int, *, max_events: int, max_bytes: int) -> None:
        self.path, self._lock_fd = path, lock_fd
        self.max_events, self.max_bytes = max_events, max_bytes
        self.commits = 0  # transactions that wrote puts: far fewer than puts (group commit)
        # One thread: SQLite work is serialized in submission order, and never on the loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookline-spool")
        self._conn: sqlite3.Connection | None = None
        self._count = self._bytes = self._pending_bytes = 0
        self._pending: list[tuple[tuple[str, str, bytes, float], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        max_events: int = 1_000_000,
        max_bytes: int = 1 << 30,
        max_pages: int | None = None,
    ) -> Spool:
        """Claim the first free ``<data_dir>/spool/spool-<n>.db`` (new, or left by a dead
        process: its rows are ours to replay). ``max_pages``: test hook, to fill the disk."""
        directory = data_dir / SPOOL_DIR
        try:
            directory.mkdir(parents=True, exist_ok=True)
            n = 0  # ends: each held lock is a live process
            while (fd := _lock(directory / f"spool-{n}.lock")) is None:
                n += 1
        except OSError as exc:
            raise _failure(directory, exc) from exc
        spool = cls(directory / f"spool-{n}.db", fd, max_events=max_events, max_bytes=max_bytes)
        return await spool._start(max_pages)

    @classmethod
    async def adopt(cls, path: Path) -> Spool | None:
        """Own an orphan spool file (None if its owner lives or it is gone); drain, close()."""
        try:
            fd = _claim(path)
        except OSError as exc:
            raise _failure(path, exc) from exc
        return (
            None
            if fd is None
            else await cls(path, fd, max_events=1_000_000, max_bytes=1 << 30)._start(None)
        )

    @staticmethod
    def orphans(data_dir: Path) -> list[Path]:
        """Spool files under ``data_dir`` whose owner is gone (their lock can be taken now)."""
        found = []
        for db in sorted((data_dir / SPOOL_DIR).glob("spool-*.db")):
            with contextlib.suppress(OSError):
                if (fd := _claim(db)) is not None:
                    os.close(fd)
                    found.append(db)
        return found

    async def _start(self, max_pages: int | None) -> Spool:
        try:
            await self._run(self._connect, max_pages)
        finally:
            if self._conn is None:  # it would not open (_connect let go of the lock): end thread
                self._executor.shutdown(wait=False)
        return self

    async def _run(self, func: Callable[..., _T], *args: Any) -> _T:
        try:  # submitted now (FIFO), executed in the writer thread
            job = asyncio.get_running_loop().run_in_executor(
                self._executor, self._guarded, func, *args
            )
        except RuntimeError as exc:  # the executor is shut down: close() ran
            raise SpoolError(f"spool {self.path}: closed") from exc
        return await job

    def _guarded(self, func: Callable[..., _T], *args: Any) -> _T:
        # The one place sqlite and OS errors become SpoolErrors (503), a half transaction undone.
        try:
            return func(*args)
        except (sqlite3.Error, OSError) as exc:
            if self._conn is not None and self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # SQLITE_FULL may have rolled back
                    self._conn.execute("ROLLBACK")
            raise _failure(self.path, exc) from exc

    def _connect(self, max_pages: int | None) -> None:
        try:
            try:
                self._open_db(max_pages)
            except sqlite3.DatabaseError as exc:
                if not is_corrupt(exc):
                    raise
                self._quarantine(exc)
                self._open_db(max_pages)  # a fresh, empty spool in its place
            # SQLite syncs the directory for a new WAL, not for a new database: sync it ourselves.
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:  # let go of the lock: open() raises, nobody owns this spool
            self._release(False)
            raise

    def _open_db(self, max_pages: int | None) -> None:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self._conn = conn = sqlite3.connect(self.path, isolation_level=None)
        if (mode := conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]) != "wal":
            raise SpoolError(f"spool {self.path}: WAL mode refused (got {mode!r})")
        for pragma in (*_PRAGMAS, *([f"max_page_count={int(max_pages)}"] if max_pages else [])):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute(_SCHEMA)
        self._count, self._bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM spool"
        ).fetchone()

    def _quarantine(self, exc: sqlite3.DatabaseError) -> None:
        """Move a spool file SQLite calls corrupt (and its WAL) aside, under a name the orphan
        sweep does not match, so that this process gets a working spool and nobody else tries
        it again. Renamed, never deleted: what is readable in it can still be recovered."""
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{QUARANTINE_PREFIX}{self.path.stem}-{stamp}.db")
        for suffix in ("", "-wal", "-shm"):  # renamed together: SQLite pairs them by name
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}{suffix}", f"{target}{suffix}")
        log.error(
            "spool_quarantined",
            path=str(self.path),
            moved_to=str(target),
            error=f"{getattr(exc, 'sqlite_errorname', 'SQLITE_ERROR')}: {exc}",
        )

    def _write(self, rows: list[tuple[str, str, bytes, float]]) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO spool (event_id, routing_key, body, spooled_at) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute("COMMIT")

    def _peek(self, limit: int, after: int) -> list[SpooledEvent]:
        rows = (
            self._db()
            .execute(
                "SELECT seq, event_id, routing_key, body FROM spool "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )
        return [SpooledEvent(seq, event_id, key, bytes(body)) for seq, event_id, key, body in rows]

    def _delete(self, seqs: list[int]) -> tuple[int, int]:
        conn, ids = self._db(), orjson.dumps(seqs)
        conn.execute("BEGIN IMMEDIATE")
        removed, freed = conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) {_SELECTED}", (ids,)
        ).fetchone()
        conn.execute(f"DELETE {_SELECTED}", (ids,))
        conn.execute("COMMIT")
        return removed, freed

    def _release(self, delete_if_empty: bool) -> None:
        # Close the database, then the lock; delete the files if empty (the count is final here).
        empty = delete_if_empty and self._conn is not None and self._count == 0
        try:
            if self._conn is not None:
                self._conn.close()  # the last connection checkpoints the WAL into the database
                self._conn = None
            if empty:
                for name in (
                    f"{self.path}-wal",
                    f"{self.path}-shm",
                    self.path,
                    self.path.with_suffix(".lock"),
                ):  # the lock last, still held
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name)
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock: a non-empty file is now an orphan
                self._lock_fd = -1

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"spool {self.path}: closed")
        return self._conn

    async def put(self, event: Event) -> None:
        """Return once ``event`` is committed and fsynced; raise SpoolError if it is not."""
        if self._closed:
            raise SpoolError(f"spool {self.path}: closed, event {event.id} not spooled")
        body = event.to_json()
        # Pending (not yet committed) puts count against the caps, so the caps are exact.
        cap = (
            f"max_events={self.max_events}"
            if self._count + len(self._pending) >= self.max_events
            else f"max_bytes={self.max_bytes}"
            if self._bytes + self._pending_bytes + len(body) > self.max_bytes
            else None
        )
        if cap:
            raise SpoolError(f"spool {self.path}: full, {cap} reached; {event.id} not spooled")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(((event.id, event.routing_key, body, time.time()), future))
        self._pending_bytes += len(body)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        # Group commit: what queued up during the previous commit goes in one transaction.
        while self._pending:
            batch, self._pending = self._pending, []
            size, error = sum(len(row[2]) for row, _ in batch), None
            try:
                await self._run(self._write, [row for row, _ in batch])
                self.commits += 1
                self._count, self._bytes = self._count + len(batch), self._bytes + size
            except Exception as exc:  # every caller must hear about it, whatever it is
                error = exc
            self._pending_bytes -= size
            for _, future in batch:  # done: a cancelled caller (its row is spooled all the same)
                if not future.done():
                    future.set_result(None) if error is None else future.set_exception(error)

    async def peek(self, limit: int = 500, *, after: int = 0) -> list[SpooledEvent]:
        """Up to ``limit`` spooled events whose ``seq`` is above ``after``, oldest first."""
        return await self._run(self._peek, limit, after)

    async def delete(self, seqs: Sequence[int]) -> None:
        """Remove these events (published and confirmed) in one transaction."""
        if seqs:
            removed, freed = await self._run(self._delete, list(seqs))
            self._count, self._bytes = self._count - removed, self._bytes - freed

    def count(self) -> int:
        """Committed events in the spool (exact, kept in memory)."""
        return self._count

    def size_bytes(self) -> int:
        """Sum of the committed event bodies, in bytes (what max_bytes caps)."""
        return self._bytes

    async def close(self) -> None:
        """Commit what is pending, release the lock; delete the files when empty. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        try:
            await self._run(self._release, True)
        finally:
            self._executor.shutdown(wait=False)  # the thread ends once its queue is empty
