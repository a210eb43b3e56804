"""Durable acceptance: publish within the deadline or spool; retries acknowledged once."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from gateway.acceptance import (
    MAX_IDEMPOTENCY_TOKEN_CHARS,
    Acceptor,
    DeadlineSweep,
    DedupeWindow,
    dedupe_keys,
)
from gateway.broker.memory import FailingPublisher, MemoryBroker, MemoryPublisher
from gateway.errors import HooklineError, PublishError
from schemas.events import Event
from tests.support.events import make_event


class ListSpool:
    """A spool fake for unit tests: keeps events in a list, can be told to fail."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.fail = False

    async def put(self, event: Event) -> None:
        if self.fail:
            raise HooklineError("spool full (test)")
        self.events.append(event)

    def count(self) -> int:
        return len(self.events)


class StalledPublisher(MemoryPublisher):
    """Connected, but never confirms: every publish hangs (a blocked or stalled broker)."""

    async def publish(self, event: Event) -> None:
        await asyncio.Event().wait()


async def started(publisher: MemoryPublisher) -> MemoryPublisher:
    await publisher.start()
    return publisher


async def test_confirmed_publish_is_published() -> None:
    """A broker that confirms gets the event; the spool stays empty."""
    broker = MemoryBroker()
    spool = ListSpool()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme"])), spool)
    assert await acceptor.accept(make_event()) == "published"
    assert broker.queue_length("hookline.tenant.acme") == 1 and spool.events == []
    assert acceptor.counts.as_dict() == {
        "published": 1,
        "spooled": 0,
        "duplicates": 0,
        "refused": 0,
        "uncertain": 0,
    }


async def test_unroutable_event_is_spooled_and_not_counted_uncertain() -> None:
    """An event no queue is bound for is returned, surely undelivered: spooled, not uncertain."""
    spool = ListSpool()
    acceptor = Acceptor(await started(MemoryPublisher(MemoryBroker(), ["other"])), spool)
    # Tenant acme, whose queue this broker lacks; an incoming call is not metered either.
    event = dataclasses.replace(make_event(), kind="call.incoming")
    assert await acceptor.accept(event) == "spooled"
    assert spool.events == [event]
    assert (acceptor.counts.spooled, acceptor.counts.uncertain) == (1, 0)


async def test_retry_with_same_id_is_acknowledged_without_second_publish() -> None:
    """The same event twice (a provider retry) is published once, the retry is a duplicate."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme"])), ListSpool())
    assert await acceptor.accept(make_event()) == "published"
    assert await acceptor.accept(make_event()) == "duplicate"
    assert broker.queue_length("hookline.tenant.acme") == 1


async def test_same_idempotency_token_is_a_duplicate() -> None:
    """A request carrying an already-seen I-Twilio-Idempotency-Token is not published again."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme"])), ListSpool())
    assert await acceptor.accept(make_event(1), "token-1") == "published"
    assert await acceptor.accept(make_event(2), "token-1") == "duplicate"
    assert await acceptor.accept(make_event(3), "token-2") == "published"
    assert broker.queue_length("hookline.tenant.acme") == 2


def for_tenant(event: Event, tenant: str) -> Event:
    return dataclasses.replace(event, tenant=tenant)


async def test_another_tenants_idempotency_token_never_suppresses_a_callback() -> None:
    """Tenant A's callback with token K does not make B's callback with K a duplicate."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme", "globex"])), ListSpool())
    assert await acceptor.accept(for_tenant(make_event(1), "globex"), "K") == "published"
    assert await acceptor.accept(make_event(2), "K") == "published"
    assert broker.queue_length("hookline.tenant.acme") == 1


async def test_a_token_equal_to_another_tenants_event_id_suppresses_nothing() -> None:
    """A token chosen as B's future event id (ids are deterministic) does not dedupe B."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme", "globex"])), ListSpool())
    victim = make_event(7)
    assert await acceptor.accept(for_tenant(make_event(1), "globex"), victim.id) == "published"
    # Even the attacker's own tenant: a header token never stands for an event id.
    assert (
        await acceptor.accept(for_tenant(make_event(2), "globex"), make_event(3).id) == "published"
    )
    assert await acceptor.accept(victim) == "published"
    assert broker.queue_length("hookline.tenant.acme") == 1


async def test_same_event_id_of_two_tenants_is_two_events() -> None:
    """Dedupe keys are scoped by tenant: the same id under two tenants publishes twice."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme", "globex"])), ListSpool())
    assert await acceptor.accept(make_event(1)) == "published"
    assert await acceptor.accept(for_tenant(make_event(1), "globex")) == "published"
    assert await acceptor.accept(make_event(1)) == "duplicate"


async def test_oversized_idempotency_token_is_not_a_key() -> None:
    """A token over the limit is ignored (the event id still dedupes); keys stay 16 bytes."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme"])), ListSpool())
    huge = "x" * (MAX_IDEMPOTENCY_TOKEN_CHARS + 1)
    assert await acceptor.accept(make_event(1), huge) == "published"
    assert await acceptor.accept(make_event(2), huge) == "published"
    assert await acceptor.accept(make_event(1), huge) == "duplicate"
    assert len(acceptor.dedupe) == 2
    assert len(dedupe_keys(make_event(1), huge)) == 1
    assert {len(key) for key in dedupe_keys(make_event(1), "x" * 200)} == {16}


def test_dedupe_window_memory_is_bounded_whatever_the_tokens() -> None:
    """Filling the window with 1 MB tokens costs what it costs with short ones: 16-byte keys."""
    import tracemalloc

    window = DedupeWindow(size=512)
    tracemalloc.start()
    try:
        for n in range(1024):
            for key in dedupe_keys(make_event(n), str(n) * (MAX_IDEMPOTENCY_TOKEN_CHARS // 8)):
                window.add(key)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(window) == 512
    assert held < 512 * 400  # bytes per entry, key and LRU node together


async def test_concurrent_duplicates_share_one_publish() -> None:
    """Two copies in flight at once: one publish, the other waits for it and is a duplicate."""
    broker = MemoryBroker()
    acceptor = Acceptor(await started(MemoryPublisher(broker, ["acme"])), ListSpool())
    outcomes = await asyncio.gather(*(acceptor.accept(make_event()) for _ in range(5)))
    assert sorted(outcomes) == ["duplicate"] * 4 + ["published"]
    assert broker.queue_length("hookline.tenant.acme") == 1


async def test_failed_publish_is_spooled() -> None:
    """When the broker refuses, the event goes to the spool and the answer is still safe."""
    spool = ListSpool()
    acceptor = Acceptor(FailingPublisher(), spool)
    assert await acceptor.accept(make_event()) == "spooled"
    assert [e.id for e in spool.events] == [make_event().id]


async def test_no_spool_means_refusal() -> None:
    """Without a spool an unconfirmed event is refused (503), never acknowledged."""
    acceptor = Acceptor(FailingPublisher(), None)
    with pytest.raises(PublishError):
        await acceptor.accept(make_event())
    assert acceptor.counts.refused == 1


async def test_spool_failure_is_refused_and_retry_can_succeed() -> None:
    """If the spool cannot take it either, accept raises; a later retry is not a duplicate."""
    spool = ListSpool()
    spool.fail = True
    acceptor = Acceptor(FailingPublisher(), spool)
    with pytest.raises(HooklineError):
        await acceptor.accept(make_event())
    spool.fail = False
    assert await acceptor.accept(make_event()) == "spooled"


async def test_stalled_broker_answers_within_the_deadline_then_bypasses() -> None:
    """A publish that never confirms is spooled after the deadline; the next skip the wait."""
    broker = MemoryBroker()
    spool = ListSpool()
    acceptor = Acceptor(
        await started(StalledPublisher(broker, ["acme"])),
        spool,
        publish_timeout=0.2,
        breaker_seconds=30,
    )
    begun = time.monotonic()
    assert await acceptor.accept(make_event(1)) == "spooled"
    first = time.monotonic() - begun
    assert 0.2 <= first < 0.5
    assert acceptor.broker_state == "degraded"
    begun = time.monotonic()
    assert await acceptor.accept(make_event(2)) == "spooled"
    assert time.monotonic() - begun < 0.1
    acceptor.close_breaker()
    assert acceptor.broker_state == "up"


async def test_on_spooled_hook_is_called() -> None:
    """Spooling nudges the replayer through the on_spooled hook."""
    calls: list[int] = []
    acceptor = Acceptor(FailingPublisher(), ListSpool(), on_spooled=lambda: calls.append(1))
    await acceptor.accept(make_event())
    assert calls == [1]


def test_dedupe_window_is_bounded_lru() -> None:
    """The window forgets the least recently seen key beyond its size."""
    window = DedupeWindow(size=2)
    window.add(b"a")
    window.add(b"b")
    assert b"a" in window  # refreshes a
    window.add(b"c")
    assert b"b" not in window and b"a" in window and b"c" in window and len(window) == 2
    with pytest.raises(ValueError, match="at least 1"):
        DedupeWindow(0)


async def _wait_under(sweep: DeadlineSweep, seconds: float) -> str:
    deadline = sweep.start()
    try:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if not sweep.timed_out(deadline):
                raise
            return "timed out"
        finally:
            deadline.finished = True
    except asyncio.CancelledError:
        return "cancelled"
    return "done"


async def test_deadline_sweep_times_out_only_what_outlives_it() -> None:
    """One sweep: waits longer than its deadline time out, shorter ones finish untouched."""
    sweep = DeadlineSweep(0.05)
    results = await asyncio.gather(*(_wait_under(sweep, s) for s in (0.0, 0.01, 0.2, 0.3, 0.02)))
    assert results == ["done", "done", "timed out", "timed out", "done"]


async def test_deadline_sweep_leaves_other_cancellations_alone() -> None:
    """A task cancelled from elsewhere before its deadline sees a cancel, not a timeout."""
    sweep = DeadlineSweep(1.0)
    task = asyncio.create_task(_wait_under(sweep, 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task == "cancelled"
