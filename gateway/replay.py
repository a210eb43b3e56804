"""Drain the local spool to the broker: oldest first, with confirms, deleting only the confirmed.

Delivery between spool and broker is at-least-once. A row is deleted only after the broker
confirmed its event, so a crash (or a failed delete) between the confirm and the delete
replays that event once more. Replayed events keep their ids (deterministic, see
docs/architecture.md#events): the duplicate carries the same ``id`` / AMQP ``message_id``,
and consumers deduplicate by it.

Order is oldest first at publish time. A batch is published concurrently (bounded), so an event
that fails is retried on the next pass and may then arrive after newer ones; consumers already
cope with out-of-order provider callbacks (status callbacks carry no global order).

An event the broker returns as unroutable (no queue bound for it: a tenant's queue or binding
is missing) is a verdict on that event alone. It stays spooled, nothing is lost, but it is set
aside and tried again after 1 s, 2 s, 4 s ... up to 5 min, while the events behind it go on:
otherwise one misconfigured tenant would hold up every tenant's replay. A row whose body is
not an event this version can read is set aside the same way (and logged as an error): kept,
never published half-understood, and not in the way of the rows after it.

Only the Publisher protocol is used here: no aio-pika, no Starlette.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.broker.base import Publisher
from gateway.errors import PublishError, UnroutableEvent
from gateway.spool import Spool, SpooledEvent, SpoolError
from schemas.events import Event

log = structlog.get_logger("hookline.spool")

#: First and longest delay before an unroutable spooled event is tried again (doubling).
UNROUTABLE_RETRY_S: Final = (1.0, 300.0)


class Replayer:
    """Publishes what a Spool holds through a Publisher; ``run`` is the background task."""

    def __init__(
        self,
        spool: Spool,
        publisher: Publisher,
        *,
        batch: int = 500,
        idle_interval: float = 1.0,
        concurrency: int = 64,
        unroutable_retry_s: tuple[float, float] = UNROUTABLE_RETRY_S,
    ) -> None:
        first, longest = unroutable_retry_s
        if batch < 1 or concurrency < 1 or idle_interval <= 0 or not 0 < first <= longest:
            raise ValueError(
                f"Replayer needs batch >= 1, concurrency >= 1, idle_interval > 0 "
                f"and 0 < first <= longest retry of an unroutable event; got "
                f"{batch}, {concurrency}, {idle_interval}, {unroutable_retry_s}"
            )
        self.spool = spool
        self.publisher = publisher
        self.batch = batch
        self.idle_interval = idle_interval
        self.concurrency = concurrency
        self.unroutable_retry_s = unroutable_retry_s
        #: The first PublishError of the last drain_once (None if it had none): for the logs.
        #: An unroutable event is not one: it says nothing about the broker's health.
        self.last_error: PublishError | None = None
        #: Replayed publishes that failed after being sent: the broker may still deliver them,
        #: and they stay spooled to be replayed again (a duplicate with the same id).
        self.uncertain = 0
        #: Unroutable events set aside, by seq: (monotonic time of the next attempt, delay).
        self._parked: dict[int, tuple[float, float]] = {}
        self._wakeup = asyncio.Event()
        self._stalled = False  # warn once per stall, not at every idle tick

    @property
    def parked(self) -> int:
        """Spooled events the broker returned as unroutable, waiting for their next attempt."""
        return len(self._parked)

    def wake(self) -> None:
        """Cut the idle sleep short (a put() just spooled something, the broker came back)."""
        self._wakeup.set()

    async def drain_once(self) -> int:
        """Publish up to one batch, oldest first; delete the confirmed; return how many.

        At the first refusal no further publish starts; up to ``concurrency`` already in
        flight finish, and those confirmed are deleted too. Unconfirmed rows stay. An event
        returned as unroutable stays too, but is set aside (retried after a growing delay)
        and the batch goes on: one tenant without a queue must not hold up the others.
        """
        confirmed, _last, _stopped = await self._pass(after=0)
        return confirmed

    async def _pass(self, after: int) -> tuple[int, int | None, bool]:
        """One batch of the rows after seq ``after``: (confirmed, last seq read or None when
        there were none, whether a refusal stopped it)."""
        items = await self.spool.peek(self.batch, after=after)
        confirmed: list[int] = []
        failures: list[BaseException] = []
        slots = asyncio.Semaphore(self.concurrency)

        async def publish(item: SpooledEvent) -> None:
            try:
                try:
                    event = Event.from_json(item.body)
                except ValueError as exc:  # e.g. written by another version of hookline
                    # An error: a person must look at it.
                    self._park(item, exc, log.error, "spool_event_unreadable")
                    return
                await self.publisher.publish(event)
                confirmed.append(item.seq)
                self._parked.pop(item.seq, None)
            except UnroutableEvent as exc:
                # A warning: a missing queue may be deliberate, and may come back.
                self._park(item, exc, log.warning, "spool_event_unroutable")
            except BaseException as exc:
                failures.append(exc)
                if isinstance(exc, PublishError):
                    self.uncertain += 1
                raise
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        now = time.monotonic()
        try:
            for item in items:
                parked = self._parked.get(item.seq)
                if parked is not None and parked[0] > now:
                    continue  # unroutable a moment ago: not yet due for another attempt
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
            raise unexpected[0]  # a bug: the caller decides, nothing is lost
        self.last_error = next((e for e in errors if isinstance(e, PublishError)), None)
        return len(confirmed), items[-1].seq if items else None, bool(failures)

    def _park(
        self, item: SpooledEvent, exc: Exception, level: Callable[..., Any], what: str
    ) -> None:
        first, longest = self.unroutable_retry_s
        previous = self._parked.get(item.seq)
        delay = first if previous is None else min(previous[1] * 2, longest)
        self._parked[item.seq] = (time.monotonic() + delay, delay)
        level(
            what,
            event_id=item.event_id,
            routing_key=item.routing_key,
            retry_in_s=delay,
            parked=len(self._parked),
            error=str(exc),
            path=str(self.spool.path),
        )

    async def drain(self) -> int:
        """Passes over the whole spool until every row was tried once, or a refusal stopped
        a pass that confirmed nothing; the total confirmed. Set-aside rows not yet due are
        skipped, so a spool of only unroutable events costs reads, not publishes."""
        total, after = 0, 0
        while self.spool.count() > 0:
            confirmed, last, stopped = await self._pass(after)
            total += confirmed
            if stopped:
                if confirmed == 0:
                    break
                after = 0  # the refused rows are the oldest now: start over from them
            elif last is None:
                break  # read to the end
            else:
                after = last
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
                    log.error(
                        "spool_replay_failed",
                        path=str(self.spool.path),
                        error=str(exc),
                        exc_info=True,
                    )
                elapsed = time.monotonic() - started
                if replayed:
                    log.info(
                        "spool_replayed",
                        count=replayed,
                        remaining=self.spool.count(),
                        parked=self.parked,
                        rate=round(replayed / max(elapsed, 1e-9), 1),
                        path=str(self.spool.path),
                    )
                if replayed and self.spool.count() > self.parked:
                    continue  # more arrived, or a partial batch: go again at once
                stalled = self.last_error is not None and self.spool.count() > 0
                if stalled and not self._stalled:
                    log.warning(
                        "spool_replay_stalled",
                        remaining=self.spool.count(),
                        error=str(self.last_error),
                        path=str(self.spool.path),
                    )
                self._stalled = stalled
            await self._idle(self._idle_for())

    def _idle_for(self) -> float:
        """The idle interval; longer when all that is left waits out an unroutable delay."""
        if self._parked and self.spool.count() <= self.parked and self.last_error is None:
            due = min(next_at for next_at, _delay in self._parked.values())
            return max(self.idle_interval, due - time.monotonic())
        return self.idle_interval

    async def _idle(self, interval: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancel that arrives just as
        # the wake-up fires (wake() then cancel() in one tick), and run() would never end.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await self._wakeup.wait()
        self._wakeup.clear()


async def replay_orphans(
    data_dir: Path, publisher: Publisher, *, batch: int = 500, concurrency: int = 64
) -> int:
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
