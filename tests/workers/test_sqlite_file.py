"""Opening a shared SQLite file: processes that start together all get a WAL connection."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from workers.sqlite_file import connect_wal

PROCESSES = 4
ROUNDS = 25


def _open_each(
    paths: list[Path],
    barrier: Barrier,
    errors: multiprocessing.Queue[str],
    opener: Callable[[Path], None],
) -> None:
    for path in paths:
        barrier.wait(timeout=30)  # every process opens the same fresh file at the same moment
        try:
            opener(path)
        except sqlite3.Error as exc:
            errors.put(f"{path.name}: {exc}")


def _connect_wal(path: Path) -> None:
    db = connect_wal(path, 30_000)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode {mode!r}")
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE IF NOT EXISTS t (x)")
        db.execute("COMMIT")
    finally:
        db.close()


def _race(tmp_path: Path, opener: Callable[[Path], None]) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    paths = [tmp_path / f"round{n}" / "shared.db" for n in range(ROUNDS)]
    barrier = ctx.Barrier(PROCESSES)
    errors: multiprocessing.Queue[str] = ctx.Queue()
    procs = [
        ctx.Process(target=_open_each, args=(paths, barrier, errors, opener))
        for _ in range(PROCESSES)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    found = []
    while not errors.empty():
        found.append(errors.get())
    return found


def test_simultaneous_opens_of_a_fresh_file_all_succeed(tmp_path: Path) -> None:
    """Four processes open 25 fresh files together; none sees "database is locked"."""
    assert _race(tmp_path, _connect_wal) == []
    for n in range(ROUNDS):
        with sqlite3.connect(tmp_path / f"round{n}" / "shared.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_lock_held_past_the_timeout_is_reported(tmp_path: Path) -> None:
    """A file kept exclusively locked longer than the busy timeout fails with SQLITE_BUSY."""
    path = tmp_path / "held.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            connect_wal(path, 200)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_lock_released_within_the_timeout_is_waited_for(tmp_path: Path) -> None:
    """A lock let go after 300 ms, well inside the timeout, only delays the open."""
    path = tmp_path / "briefly-held.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    timer = threading.Timer(0.3, release)
    timer.start()
    try:
        db = connect_wal(path, 10_000)
    finally:
        timer.join()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
