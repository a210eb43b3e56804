"""The replayer: oldest first, confirmed-only deletes, survives failures, cancellable."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.broker.memory import FailingPublisher, MemoryBroker, MemoryPublisher
from gateway.errors import PublishError
from gateway.replay import Replayer, replay_orphans
from gateway.spool import Spool
from schemas.events import Event
from schemas.topology import tenant_queue
from tests.support.rabbit import wait_until

QUEUE = tenant_queue("acme")


def make_event(n: int) -> Event:
    return Event(
        id=f"evt-{n:06d}",
        kind="message.status",
        tenant="acme",
        provider="twilio",
        source="twilio/AC0123",
        subject=f"SM{n:032x}",
        time=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        data={"n": n, "status": "delivered", "raw": {"MessageStatus": "delivered"}},
    )


def ids(n: range | list[int]) -> list[str]:
    return [f"evt-{i:06d}" for i in n]


class FlakyPublisher:
    """Confirms the first ``ok`` publishes, then refuses every one (or only those in ``refuse``)."""

    def __init__(
        self,
        broker: MemoryBroker,
        ok: int = 10**9,
        refuse: set[str] | None = None,
        fail_first: int = 0,
    ) -> None:
        self.inner = MemoryPublisher(broker, ["acme"])
        self.ok, self.refuse, self.fail_first = ok, refuse or set(), fail_first
        self.attempts: list[str] = []

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    @property
    def ready(self) -> bool:
        return self.inner.ready

    async def publish(self, event: Event) -> None:
        self.attempts.append(event.id)
        number = len(self.attempts)
        await asyncio.sleep(0)  # a confirm takes a round trip: let other publishes interleave
        if number > self.ok or number <= self.fail_first or event.id in self.refuse:
            raise PublishError(f"event {event.id} not published: nacked (test)")
        await self.inner.publish(event)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[Spool]:
    spool = await Spool.open(tmp_path)
    yield spool
    await spool.close()


async def fill(spool: Spool, count: int) -> None:
    await asyncio.gather(*(spool.put(make_event(n)) for n in range(count)))


async def started(broker: MemoryBroker) -> MemoryPublisher:
    publisher = MemoryPublisher(broker, ["acme"])
    await publisher.start()
    return publisher


async def test_drain_publishes_oldest_first_and_empties_the_spool(spool: Spool) -> None:
    """drain() publishes every event in spool order, keeping ids, and deletes them all."""
    broker = MemoryBroker()
    await fill(spool, 1200)
    replayer = Replayer(spool, await started(broker), batch=500)
    assert await replayer.drain() == 1200
    assert spool.count() == 0
    assert await spool.peek() == []
    delivered = broker.drain(QUEUE)
    assert [event.id for event in delivered] == ids(range(1200))
    assert delivered[7] == make_event(7)


async def test_drain_once_takes_one_batch(spool: Spool) -> None:
    """drain_once() publishes at most one batch, the oldest, and deletes exactly those."""
    broker = MemoryBroker()
    await fill(spool, 25)
    replayer = Replayer(spool, await started(broker), batch=10)
    assert await replayer.drain_once() == 10
    assert [event.id for event in broker.drain(QUEUE)] == ids(range(10))
    assert [item.event_id for item in await spool.peek()] == ids(range(10, 25))
    assert spool.count() == 15


async def test_failing_publisher_deletes_nothing(spool: Spool) -> None:
    """With the broker down nothing is confirmed, so nothing is deleted and the error is kept."""
    await fill(spool, 100)
    publisher = FailingPublisher()
    replayer = Replayer(spool, publisher, concurrency=8)
    assert await replayer.drain_once() == 0
    assert await replayer.drain() == 0
    assert spool.count() == 100
    assert [item.event_id for item in await spool.peek()] == ids(range(100))
    assert isinstance(replayer.last_error, PublishError)
    # It stops starting publishes at the first failure: at most `concurrency` were in flight.
    assert 1 <= len(publisher.attempts) <= 2 * 8


async def test_failure_after_k_publishes_leaves_exactly_the_unconfirmed(spool: Spool) -> None:
    """A broker that confirms k publishes and then refuses leaves exactly the other events."""
    broker = MemoryBroker()
    await fill(spool, 100)
    publisher = FlakyPublisher(broker, ok=30)
    await publisher.start()
    replayer = Replayer(spool, publisher, concurrency=16)
    assert await replayer.drain() == 30
    assert [event.id for event in broker.drain(QUEUE)] == ids(range(30))
    assert [item.event_id for item in await spool.peek()] == ids(range(30, 100))
    assert spool.count() == 70
    assert len(publisher.attempts) < 30 + 2 * 16  # stopped soon after the first refusal


async def test_sequential_replay_stops_at_the_first_failure(spool: Spool) -> None:
    """With concurrency=1 the publish after the first refusal is never attempted."""
    broker = MemoryBroker()
    await fill(spool, 20)
    publisher = FlakyPublisher(broker, ok=5)
    await publisher.start()
    assert await Replayer(spool, publisher, concurrency=1).drain_once() == 5
    assert publisher.attempts == ids(range(6))
    assert spool.count() == 15


async def test_only_confirmed_events_are_deleted(spool: Spool) -> None:
    """A refused event stays spooled while its neighbours go; the next pass delivers it."""
    broker = MemoryBroker()
    await fill(spool, 10)
    publisher = FlakyPublisher(broker, refuse={"evt-000004"})
    await publisher.start()
    replayer = Replayer(spool, publisher, concurrency=64)
    confirmed = await replayer.drain_once()
    remaining = [item.event_id for item in await spool.peek()]
    assert "evt-000004" in remaining
    assert confirmed == 10 - len(remaining)
    assert sorted(event.id for event in broker.drain(QUEUE)) == sorted(
        set(ids(range(10))) - set(remaining)
    )
    publisher.refuse.clear()
    assert await replayer.drain() == len(remaining)
    assert [event.id for event in broker.drain(QUEUE)] == remaining
    assert spool.count() == 0


async def test_cancelled_drain_still_deletes_what_was_confirmed(spool: Spool) -> None:
    """Cancelling drain_once mid-batch deletes the confirmed rows and keeps the rest."""
    broker = MemoryBroker()
    await fill(spool, 10)
    gate = asyncio.Event()

    class SlowAfterThree(FlakyPublisher):
        async def publish(self, event: Event) -> None:
            if len(self.attempts) >= 3:
                self.attempts.append(event.id)
                await gate.wait()  # never set: a confirm that never comes
            await super().publish(event)

    publisher = SlowAfterThree(broker)
    await publisher.start()
    task = asyncio.create_task(Replayer(spool, publisher, concurrency=4).drain_once())
    await wait_until(lambda: len(publisher.attempts) >= 6)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [event.id for event in broker.drain(QUEUE)] == ids(range(3))
    assert [item.event_id for item in await spool.peek()] == ids(range(3, 10))


async def test_run_waits_for_ready_then_drains_and_cancels_cleanly(spool: Spool) -> None:
    """run() waits while not ready, drains once ready, logs spool_replayed, ends on cancel."""
    broker = MemoryBroker()
    await fill(spool, 50)
    publisher = MemoryPublisher(broker, ["acme"])  # not started: ready is False
    replayer = Replayer(spool, publisher, idle_interval=0.02)
    with capture_logs() as logs:
        task = asyncio.create_task(replayer.run())
        await asyncio.sleep(0.1)
        assert spool.count() == 50

        await publisher.start()
        replayer.wake()
        await wait_until(lambda: spool.count() == 0)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
    assert [event.id for event in broker.drain(QUEUE)] == ids(range(50))
    replayed = [line for line in logs if line["event"] == "spool_replayed"]
    assert sum(line["count"] for line in replayed) == 50
    assert replayed[-1]["remaining"] == 0
    assert replayed[-1]["rate"] > 0


async def test_run_ends_on_cancel_even_right_after_a_wake(spool: Spool) -> None:
    """wake() and cancel() in the same tick still end run() (no swallowed cancellation)."""
    replayer = Replayer(spool, FailingPublisher(), idle_interval=30.0)
    task = asyncio.create_task(replayer.run())
    await asyncio.sleep(0.01)  # run() is idle, waiting for a wake-up
    replayer.wake()
    await asyncio.sleep(0)  # the wake-up completes its waiter; run() has not resumed yet
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=2)
    assert task in done, "run() swallowed the cancellation and kept going"
    assert task.cancelled()


async def test_run_survives_publish_errors(spool: Spool) -> None:
    """run() keeps going through a stretch of refused publishes, warns once, then drains."""
    broker = MemoryBroker()
    await fill(spool, 20)
    publisher = FlakyPublisher(broker, fail_first=40)
    await publisher.start()
    replayer = Replayer(spool, publisher, idle_interval=0.01, concurrency=4)
    with capture_logs() as logs:
        task = asyncio.create_task(replayer.run())
        await wait_until(lambda: spool.count() == 0 or task.done())
        assert not task.done(), "run() died"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert sorted(event.id for event in broker.drain(QUEUE)) == ids(range(20))
    assert len([line for line in logs if line["event"] == "spool_replay_stalled"]) >= 1
    assert len(publisher.attempts) > 40


async def test_replay_orphans_drains_and_deletes_dead_owners_files(tmp_path: Path) -> None:
    """replay_orphans adopts every orphan, publishes its events and removes the emptied file."""
    broker = MemoryBroker()
    live, dead = await Spool.open(tmp_path), [await Spool.open(tmp_path) for _ in range(2)]
    await live.put(make_event(99))
    for n in range(20):
        await dead[n // 10].put(make_event(n))
    for spool in dead:
        await spool.close()  # non-empty: left behind as orphans
    assert Spool.orphans(tmp_path) == [spool.path for spool in dead]
    assert await replay_orphans(tmp_path, await started(broker)) == 20
    assert [event.id for event in broker.drain(QUEUE)] == ids(range(20))
    assert Spool.orphans(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "spool").glob("*.db")) == [live.path.name]
    assert live.count() == 1  # a live owner's spool is never touched
    await live.close()


async def test_drain_rate_figure(spool: Spool) -> None:
    """Measures the drain rate to a MemoryPublisher (printed, not asserted)."""
    broker = MemoryBroker()
    await fill(spool, 20_000)
    replayer = Replayer(spool, await started(broker))
    began = time.perf_counter()
    assert await replayer.drain() == 20_000
    rate = 20_000 / (time.perf_counter() - began)
    assert len(broker.drain(QUEUE)) == 20_000
    print(f"\ndrain: {rate:,.0f} events/s to a MemoryPublisher (batch 500, concurrency 64)")


def ghost_event(n: int) -> Event:
    """An event of a tenant the broker has no queue for: returned as unroutable."""
    return Event(
        id=f"ghost-{n:06d}",
        kind="call.incoming",
        tenant="ghost",
        provider="twilio",
        source="twilio/AC0456",
        subject=f"SM{n:032x}",
        time=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        data={"n": n},
    )


async def test_unroutable_retries_back_off_while_run_idles(spool: Spool) -> None:
    """run() retries an unroutable event after 0.2 s, then 0.4 s, 0.4 s ... not at every idle
    tick, and replays what arrives meanwhile at once."""
    broker = MemoryBroker()
    await spool.put(ghost_event(0))
    publisher = FlakyPublisher(broker)
    await publisher.start()
    replayer = Replayer(spool, publisher, idle_interval=0.01, unroutable_retry_s=(0.2, 0.4))
    with capture_logs() as logs:
        task = asyncio.create_task(replayer.run())
        await asyncio.sleep(0.5)  # attempts at 0, 0.2 and 0.6 s: two by now
        await spool.put(make_event(1))
        replayer.wake()
        await wait_until(lambda: spool.count() == 1)
        await asyncio.sleep(0.3)  # the third attempt at 0.6 s
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [event.id for event in broker.drain(QUEUE)] == ids([1])
    # About 0.8 s of run() at an idle tick of 0.01 s: 3 attempts (4 on a slow machine), not 80.
    attempts = publisher.attempts.count("ghost-000000")
    assert 3 <= attempts <= 4
    delays = [line["retry_in_s"] for line in logs if line["event"] == "spool_event_unroutable"]
    assert delays == [0.2] + [0.4] * (attempts - 1)
    assert not [line for line in logs if line["event"] == "spool_replay_stalled"]
    assert (spool.count(), replayer.parked) == (1, 1)


async def test_a_broker_refusal_still_stops_the_pass_past_unroutable_events(spool: Spool) -> None:
    """Set-aside events do not hide a broker that refuses everything: the pass stops there."""
    for n in range(5):
        await spool.put(ghost_event(n))
    await fill(spool, 5)
    publisher = FlakyPublisher(MemoryBroker(), refuse=set(ids(range(5))))
    await publisher.start()
    replayer = Replayer(spool, publisher, concurrency=1)
    assert await replayer.drain() == 0
    assert (spool.count(), replayer.parked) == (10, 5)
    assert isinstance(replayer.last_error, PublishError)
    assert publisher.attempts == [f"ghost-{n:06d}" for n in range(5)] + ids([0])


async def test_an_unreadable_row_is_set_aside_and_kept(spool: Spool) -> None:
    """A row that is not an event (another version wrote it, say) is logged as an error and
    kept, and the rows after it are replayed."""
    await fill(spool, 3)
    with contextlib.closing(sqlite3.connect(spool.path)) as db, db:  # a second writer, WAL
        db.execute("UPDATE spool SET body = ? WHERE event_id = ?", (b"{not json", ids([1])[0]))
    broker = MemoryBroker()
    replayer = Replayer(spool, await started(broker))
    with capture_logs() as logs:
        assert await replayer.drain() == 2
    assert [event.id for event in broker.drain(QUEUE)] == ids([0, 2])
    assert [item.event_id for item in await spool.peek()] == ids([1])
    [line] = [line for line in logs if line["event"] == "spool_event_unreadable"]
    assert (line["log_level"], line["event_id"]) == ("error", ids([1])[0])
    assert "not JSON" in line["error"]


def test_rejects_nonsense_settings(tmp_path: Path) -> None:
    """batch, concurrency, idle_interval and the unroutable delays must be positive."""
    for kwargs in (
        {"batch": 0},
        {"concurrency": 0},
        {"idle_interval": 0.0},
        {"unroutable_retry_s": (0.0, 1.0)},
        {"unroutable_retry_s": (2.0, 1.0)},
    ):
        with pytest.raises(ValueError, match="Replayer needs"):
            Replayer(None, FailingPublisher(), **kwargs)  # type: ignore[arg-type]
