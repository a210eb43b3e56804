"""Drain the local spool to the broker: oldest first, with confirms, deleting only the confirmed.

Delivery between spool and broker is at-least-once. A row is deleted only after the broker
confirmed its event, so a crash (or a failed delete) between the confirm and the delete
replays that event once more. Replayed events keep their ids (deterministic, DESIGN section
5): the duplicate carries the same ``id`` / AMQP ``message_id``, and consumers deduplicate by it.

Order is oldest first at publish time. A batch is published concurrently (bounded), so an event
that fails is retried on the next pass and may then arrive after newer ones; consumers already
cope with out-of-order provider callbacks (status callbacks carry no global order).

Only the Publisher protocol is used here: no aio-pika, no Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import structlog

from gateway.broker.base import Publisher
from gateway.errors import PublishError
from gateway.spool import Spool, SpooledEvent, SpoolError
from schemas.events import Event

log = structlog.get_logger("hookline.spool")


class Replayer:
    """Publishes what a Spool holds through a Publisher; ``run`` is the background task."""

    def __init__(self, spool: Spool, publisher: Publisher, *, batch: int = 500,
                 idle_interval: float = 1.0, concurrency: int = 64) -> None:
        if batch < 1 or concurrency < 1 or idle_interval <= 0:
            raise ValueError(f"Replayer needs batch >= 1, concurrency >= 1, idle_interval > 0; "
                             f"got {batch}, {concurrency}, {idle_interval}")
        self.spool = spool
        self.publisher = publisher
        self.batch = batch
        self.idle_interval = idle_interval
        self.concurrency = concurrency
        #: The first PublishError of the last drain_once (None if it had none): for the logs.
        self.last_error: PublishError | None = None
        #: Replayed publishes that failed after being sent: the broker may still deliver them,
        #: and they stay spooled to be replayed again (a duplicate with the same id).
        self.uncertain = 0
        self._wakeup = asyncio.Event()
        self._stalled = False  # warn once per stall, not at every idle tick

    def wake(self) -> None:
        """Cut the idle sleep short (a put() just spooled something, the broker came back)."""
        self._wakeup.set()

    async def drain_once(self) -> int:
        """Publish up to one batch, oldest first; delete the confirmed; return how many.

        At the first refusal no further publish starts; up to ``concurrency`` already in
        flight finish, and those confirmed are deleted too. Unconfirmed rows stay.
        """
        items = await self.spool.peek(self.batch)
        confirmed: list[int] = []
        failures: list[BaseException] = []
        slots = asyncio.Semaphore(self.concurrency)

        async def publish(item: SpooledEvent) -> None:
            try:
                await self.publisher.publish(Event.from_json(item.body))
                confirmed.append(item.seq)
            except BaseException as exc:
                failures.append(exc)
                if isinstance(exc, PublishError):
                    self.uncertain += 1
                raise
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for item in items:
                await slots.acquire()
                if failures:  # the broker refused one: start no more publishes
                    break
                # Tasks start in creation order, so publishes leave in seq order.
                tasks.append(asyncio.create_task(publish(item)))
            await asyncio.gather(*tasks, return_exceptions=True)
        except asyncio.CancelledError:
            # Shutdown: stop the in-flight publishes, but still delete what was confirmed,
            # rather than replay it later (a harmless duplicate, yet avoidable).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(SpoolError):
                await self.spool.delete(confirmed)
            raise
        await self.spool.delete(confirmed)
        errors = [exc for exc in failures if not isinstance(exc, asyncio.CancelledError)]
        if unexpected := [exc for exc in errors if not isinstance(exc, PublishError)]:
            raise unexpected[0]  # a bug or a corrupt row: the caller decides, nothing is lost
        self.last_error = next((e for e in errors if isinstance(e, PublishError)), None)
        return len(confirmed)

    async def drain(self) -> int:
        """drain_once until the spool is empty or a batch confirms nothing; the total."""
        total = 0
        while self.spool.count() > 0:
            confirmed = await self.drain_once()
            total += confirmed
            if confirmed == 0:
                break
        return total

    async def run(self) -> None:
        """Background loop: drain while the publisher is ready; survive broker failures."""
        while True:
            if self.publisher.ready and self.spool.count() > 0:
                started = time.monotonic()
                try:
                    replayed = await self.drain()
                except Exception as exc:  # never die: a dead replayer strands the spool
                    replayed = 0
                    log.error("spool_replay_failed", path=str(self.spool.path), error=str(exc),
                              exc_info=True)
                elapsed = time.monotonic() - started
                if replayed:
                    log.info("spool_replayed", count=replayed, remaining=self.spool.count(),
                             rate=round(replayed / max(elapsed, 1e-9), 1),
                             path=str(self.spool.path))
                if replayed and self.spool.count() > 0:
                    continue  # more arrived, or a partial batch: go again at once
                stalled = self.last_error is not None and self.spool.count() > 0
                if stalled and not self._stalled:
                    log.warning("spool_replay_stalled", remaining=self.spool.count(),
                                error=str(self.last_error), path=str(self.spool.path))
                self._stalled = stalled
            await self._idle()

    async def _idle(self) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives just as
        # the wake-up fires (wake() then cancel() in one tick), and run() would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.idle_interval):
                await self._wakeup.wait()
        self._wakeup.clear()


async def replay_orphans(data_dir: Path, publisher: Publisher, *, batch: int = 500,
                         concurrency: int = 64) -> int:
    """Adopt every orphan spool under ``data_dir``, drain it, close it (deleted when empty).

    For start-up and ``hookline spool replay``: what dead processes left reaches the broker.
    Returns how many events were confirmed; a spool that cannot be emptied stays an orphan.
    """
    total = 0
    for path in Spool.orphans(data_dir):
        spool = await Spool.adopt(path)
        if spool is None:  # adopted by another process meanwhile
            continue
        try:
            total += await Replayer(spool, publisher, batch=batch, concurrency=concurrency).drain()
        finally:
            await spool.close()
    return total
