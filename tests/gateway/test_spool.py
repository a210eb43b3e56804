"""The durable spool: order, durability across SIGKILL, group commit, ownership, limits."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.spool import Spool, SpoolError, _failure
from schemas.events import Event

ROOT = Path(__file__).resolve().parents[2]


def make_event(n: int, pad: int = 0) -> Event:
    return Event(
        id=f"evt-{n:06d}",
        kind="message.status",
        tenant="acme",
        provider="twilio",
        source="twilio/AC0123",
        subject=f"SM{n:032x}",
        time=datetime(2026, 11, 23, 8, 0, n % 60, tzinfo=UTC),
        data={
            "n": n,
            "status": "delivered",
            "pad": "x" * pad,
            "raw": {"Body": "héllo ✓ \u0000 \U0001f600", "MessageStatus": "delivered"},
        },
    )


def spool_files(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (data_dir / "spool").iterdir())


def ids(numbers: range | tuple[int, ...]) -> list[str]:
    return [f"evt-{n:06d}" for n in numbers]


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    spool = await Spool.open(tmp_path)
    yield spool
    await spool.close()


async def peek_ids(spool: Spool, limit: int = 500) -> list[str]:
    return [item.event_id for item in await spool.peek(limit)]


async def test_put_peek_delete_keep_order_and_counts(spool: Spool) -> None:
    """peek returns events oldest first; delete removes exactly the given seqs; counts follow."""
    events = [make_event(n) for n in range(10)]
    for event in events:
        await spool.put(event)
    assert (spool.count(), spool.size_bytes()) == (10, sum(len(e.to_json()) for e in events))

    peeked = await spool.peek()
    assert [item.event_id for item in peeked] == ids(range(10))
    assert [item.seq for item in peeked] == sorted(item.seq for item in peeked)
    assert await peek_ids(spool, 3) == ids(range(3))

    await spool.delete([peeked[0].seq, peeked[4].seq, peeked[9].seq, 999_999])  # unknown: no-op
    await spool.delete([])
    kept = (1, 2, 3, 5, 6, 7, 8)
    assert await peek_ids(spool) == ids(kept)
    assert (spool.count(), spool.size_bytes()) == (7, sum(len(events[n].to_json()) for n in kept))


async def test_bodies_round_trip_byte_exact(spool: Spool) -> None:
    """The stored body is the event's to_json() byte for byte and parses back to the same event."""
    event = make_event(7, pad=5000)
    await spool.put(event)
    (item,) = await spool.peek()
    assert isinstance(item.body, bytes) and item.body == event.to_json()
    assert (item.event_id, item.routing_key) == (event.id, "acme.twilio.message.status")
    assert Event.from_json(item.body) == event


async def test_put_is_on_disk_when_it_returns(spool: Spool) -> None:
    """A separate plain sqlite3 connection sees the row as soon as put() returned, in WAL mode."""
    await spool.put(make_event(1))
    reader = sqlite3.connect(spool.path)
    rows = reader.execute("SELECT event_id, routing_key, body FROM spool").fetchall()
    mode = reader.execute("PRAGMA journal_mode").fetchone()[0]
    reader.close()
    assert (rows, mode) == (
        [("evt-000001", "acme.twilio.message.status", make_event(1).to_json())],
        "wal",
    )


# Eight concurrent writers; "ok <id>" is printed only once that put() returned.
CHILD = """
import asyncio, itertools, sys
from pathlib import Path
from gateway.spool import Spool
from tests.gateway.test_spool import make_event

async def writer(spool, w):
    for i in itertools.count():
        await spool.put(make_event(w * 1_000_000 + i))
        print(f"ok evt-{w * 1_000_000 + i:06d}", flush=True)

async def main():
    spool = await Spool.open(Path(sys.argv[1]))
    await asyncio.gather(*(writer(spool, w) for w in range(8)))

asyncio.run(main())
"""


async def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """Every put a SIGKILLed writer saw return is in its orphaned spool file: zero lost."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    acknowledged: set[str] = set()
    try:
        async with asyncio.timeout(60):
            while len(acknowledged) < 400:
                line = (await proc.stdout.readline()).decode()
                assert line.startswith("ok "), f"the child failed: {line!r}"
                acknowledged.add(line.split()[1])
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: puts are in flight right now
        rest = await proc.stdout.read()
        await proc.wait()
    acknowledged |= {line.split()[1] for line in rest.decode().splitlines()}  # whole lines
    assert proc.returncode == -signal.SIGKILL

    (orphan,) = Spool.orphans(tmp_path)
    adopted = await Spool.adopt(orphan)
    assert adopted is not None
    stored = {item.event_id for item in await adopted.peek(limit=1_000_000)}
    assert acknowledged - stored == set() and adopted.count() == len(stored), "events lost"
    print(f"\nSIGKILL: {len(acknowledged)} acknowledged, {len(stored)} on disk, 0 lost")
    await adopted.close()


async def test_group_commit_takes_far_fewer_commits_than_puts(spool: Spool) -> None:
    """1000 concurrent puts all complete in a handful of transactions (one fsync per burst)."""
    began = time.perf_counter()
    await asyncio.gather(*(spool.put(make_event(n)) for n in range(1000)))
    elapsed = time.perf_counter() - began
    assert spool.count() == 1000 and spool.commits <= 20, f"{spool.commits} commits, 1000 puts"
    assert await peek_ids(spool, 1000) == ids(range(1000))
    print(f"\ngroup commit: 1000 puts in {spool.commits} commits, {1000 / elapsed:,.0f} puts/s")


async def test_put_latency_and_throughput_figures(spool: Spool) -> None:
    """Measures put() latency alone (p50) and puts/s with 64 concurrent writers (printed)."""
    latencies = []
    for n in range(200):
        began = time.perf_counter()
        await spool.put(make_event(n))
        latencies.append(time.perf_counter() - began)

    async def writer(w: int) -> None:
        for i in range(50):
            await spool.put(make_event(10_000 + w * 100 + i))

    commits, began = spool.commits, time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(64)))
    rate = 64 * 50 / (time.perf_counter() - began)
    assert spool.count() == 200 + 64 * 50
    print(
        f"\nput p50 {statistics.median(latencies) * 1000:.2f} ms alone; 64 writers: "
        f"{rate:,.0f} puts/s in {spool.commits - commits} commits"
    )


async def test_two_owners_get_two_files_and_cannot_adopt_each_other(tmp_path: Path) -> None:
    """Two open() on one data dir own two files; a live owner's file is not adoptable."""
    first, second = await Spool.open(tmp_path), await Spool.open(tmp_path)
    assert {first.path.name, second.path.name} == {"spool-0.db", "spool-1.db"}
    assert Spool.orphans(tmp_path) == []
    assert await Spool.adopt(first.path) is None
    await first.close()
    await second.close()


async def test_close_deletes_an_empty_spool(tmp_path: Path) -> None:
    """close() of an empty spool removes its .db, -wal, -shm and .lock; close is idempotent."""
    spool = await Spool.open(tmp_path)
    await spool.put(make_event(1))
    await spool.delete([item.seq for item in await spool.peek()])
    assert {"spool-0.db", "spool-0.lock"} <= set(spool_files(tmp_path))
    await spool.close()
    await spool.close()
    assert spool_files(tmp_path) == [] and not spool.path.exists()


async def test_non_empty_spool_outlives_close_and_is_adopted(tmp_path: Path) -> None:
    """A closed non-empty spool stays as an orphan; adopt() gets every row; drained, it goes."""
    spool = await Spool.open(tmp_path)
    await asyncio.gather(*(spool.put(make_event(n)) for n in range(5)))
    await spool.close()
    assert spool.path.exists()
    assert Spool.orphans(tmp_path) == [spool.path]

    adopted = await Spool.adopt(spool.path)
    assert adopted is not None and adopted.count() == 5
    assert Spool.orphans(tmp_path) == [] and await Spool.adopt(spool.path) is None  # owned
    assert adopted.size_bytes() == sum(len(make_event(n).to_json()) for n in range(5))
    assert await peek_ids(adopted) == ids(range(5))
    await adopted.delete([item.seq for item in await adopted.peek()])
    await adopted.close()
    assert spool_files(tmp_path) == []
    assert await Spool.adopt(spool.path) is None  # gone: nothing to adopt


async def test_open_takes_over_a_dead_owners_file(tmp_path: Path) -> None:
    """open() claims the first free file, including one a dead owner left, rows and all."""
    old = await Spool.open(tmp_path)
    await old.put(make_event(1))
    await old.close()
    new = await Spool.open(tmp_path)
    assert (new.path, new.count()) == (old.path, 1)
    await new.put(make_event(2))
    assert await peek_ids(new) == ids((1, 2))
    await new.close()


async def test_over_max_events_is_a_503_spool_error(tmp_path: Path) -> None:
    """The put beyond max_events raises SpoolError (503, spool_unavailable) naming the file."""
    spool = await Spool.open(tmp_path, max_events=3)
    await asyncio.gather(*(spool.put(make_event(n)) for n in range(3)))
    with pytest.raises(SpoolError, match="max_events=3") as raised:
        await spool.put(make_event(3))
    assert (raised.value.http_status, raised.value.reason) == (503, "spool_unavailable")
    assert str(spool.path) in str(raised.value) and spool.count() == 3
    await spool.close()


async def test_over_max_bytes_is_a_spool_error(tmp_path: Path) -> None:
    """A put that would take the bodies over max_bytes raises, even among concurrent puts."""
    size = len(make_event(0).to_json())
    spool = await Spool.open(tmp_path, max_bytes=2 * size + 1)
    results = await asyncio.gather(
        *(spool.put(make_event(n)) for n in range(3)), return_exceptions=True
    )
    assert results[:2] == [None, None] and isinstance(results[2], SpoolError)
    assert "max_bytes" in str(results[2]) and spool.count() == 2
    await spool.close()


async def test_unusable_data_dir_fails_open_naming_the_path(tmp_path: Path) -> None:
    """A data dir below a regular file (fails even as root) gives a SpoolError naming it."""
    (blocker := tmp_path / "not-a-dir").write_text("x")
    with pytest.raises(SpoolError, match=str(blocker / "data" / "spool")) as raised:
        await Spool.open(blocker / "data")
    assert raised.value.http_status == 503


async def test_disk_full_is_a_spool_error_and_reads_still_work(tmp_path: Path) -> None:
    """SQLITE_FULL becomes SpoolError; committed rows stay readable; a delete makes room again."""
    spool = await Spool.open(tmp_path, max_pages=16)
    stored = 0
    with pytest.raises(SpoolError, match="disk full") as raised:
        for n in range(1000):
            await spool.put(make_event(n, pad=1500))
            stored += 1
    assert f"spool {spool.path}: disk full (database or disk is full)" == str(raised.value)
    assert 0 < stored == spool.count()
    items = await spool.peek(1000)
    assert [item.event_id for item in items] == ids(range(stored))
    await spool.delete([items[0].seq, items[1].seq])
    await spool.put(make_event(5000, pad=100))
    assert spool.count() == stored - 1
    await spool.close()


async def test_a_read_only_database_is_named_as_such(tmp_path: Path) -> None:
    """A real SQLITE_READONLY error is reported as "read-only" with the path."""
    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(sqlite3.OperationalError) as raised:
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES (1)")
    assert str(_failure(path, raised.value)).startswith(f"spool {path}: read-only")


async def test_closed_spool_refuses_work(tmp_path: Path) -> None:
    """After close(), put, peek and delete raise SpoolError instead of touching the file."""
    spool = await Spool.open(tmp_path)
    await spool.put(make_event(1))
    await spool.close()
    for attempt in (spool.put(make_event(2)), spool.peek(), spool.delete([1])):
        with pytest.raises(SpoolError, match="closed"):
            await attempt


async def test_close_commits_puts_still_pending(tmp_path: Path) -> None:
    """close() while puts are queued commits them before releasing the file."""
    spool = await Spool.open(tmp_path)
    puts = [asyncio.create_task(spool.put(make_event(n))) for n in range(50)]
    await asyncio.sleep(0)  # queued, not yet committed
    await spool.close()
    await asyncio.gather(*puts)  # each one resolved, none failed
    adopted = await Spool.adopt(spool.path)
    assert adopted is not None and adopted.count() == 50
    await adopted.close()
