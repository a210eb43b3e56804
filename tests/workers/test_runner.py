"""The consumer runtime on the embedded broker and on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from gateway.errors import PoisonMessage, TransientError
from gateway.metrics import Metrics, WorkerMetrics
from schemas.topology import DEAD_QUEUE, USAGE_QUEUE, retry_queue
from tests.support.logs import CapturedLogs
from tests.support.net import free_port
from tests.support.rabbit import TcpProxy
from tests.support.workers import (
    Broker,
    MemoryHarness,
    RabbitHarness,
    RecordingHandler,
    consumer_error,
    eventually,
    running,
)
from workers.amqp_transport import AmqpTransport
from workers.handler import Delivery, Result, RpcReply
from workers.runner import Runner

QUEUE = USAGE_QUEUE


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    if request.param == "memory":
        broker: Broker = MemoryHarness()
    else:
        broker = await RabbitHarness(request.getfixturevalue("amqp_url")).start()
    await broker.purge(QUEUE, DEAD_QUEUE, retry_queue(QUEUE, 1))
    try:
        yield broker
    finally:
        await broker.purge(QUEUE, DEAD_QUEUE, retry_queue(QUEUE, 1))
        await broker.close()


async def test_success_is_acked_and_logged(harness: Broker, captured_logs: CapturedLogs) -> None:
    """Handled messages are acked (gone from the queue), each with one log line."""
    handler = RecordingHandler(QUEUE)
    runner = Runner(handler, harness.transport("test"))
    async with running(runner):
        for index in range(5):
            await harness.publish(QUEUE, {"n": index}, message_id=f"m{index}")
        await eventually(lambda: runner.counts.get("acked") == 5)
    assert await harness.queue_length(QUEUE) == 0
    assert sorted(d.message_id or "" for d in handler.deliveries) == [f"m{i}" for i in range(5)]
    lines = captured_logs.events("message_handled")
    assert {line["message_id"] for line in lines} == {f"m{i}" for i in range(5)}
    assert all(
        line["outcome"] == "acked"
        and line["attempt"] == 1
        and line["worker"] == "test"
        and isinstance(line["latency_ms"], float)
        for line in lines
    )
    assert handler.started == handler.closed == 1


async def test_batches_fill_up_to_batch_size(harness: Broker) -> None:
    """A batch handler gets several deliveries at once, never more than batch_size."""
    handler = RecordingHandler(QUEUE, batch_size=4, batch_wait_s=0.2)
    runner = Runner(handler, harness.transport("test"))
    async with running(runner):
        for index in range(10):
            await harness.publish(QUEUE, {"n": index})
        await eventually(lambda: runner.counts.get("acked") == 10)
    sizes = [len(batch) for batch in handler.batches]
    assert max(sizes) <= 4 and sum(sizes) == 10
    assert max(sizes) > 1  # waiting batch_wait_s let a batch fill


async def test_poison_is_dead_lettered_at_once(harness: Broker) -> None:
    """A PoisonMessage goes to hookline.dead at the first attempt, the reason in headers."""
    handler = RecordingHandler(
        QUEUE, behave=consumer_error(PoisonMessage("body is not an event", reason="unparsable"))
    )
    runner = Runner(handler, harness.transport("test"))
    async with running(runner):
        await harness.publish(QUEUE, {"bad": True}, message_id="poison-1")
        await eventually(lambda: runner.counts.get("dead_lettered") == 1)
    dead = await harness.read_all(DEAD_QUEUE)
    assert len(dead) == 1 and len(handler.deliveries) == 1
    headers = dead[0].headers
    assert dead[0].message_id == "poison-1" and dead[0].body == {"bad": True}
    assert headers["x-hookline-reason"] == "unparsable"
    assert headers["x-hookline-queue"] == QUEUE
    assert headers["x-hookline-attempt"] == 1
    assert headers["x-hookline-worker"] == "test"
    assert "not an event" in str(headers["x-hookline-error"])
    assert await harness.queue_length(QUEUE) == 0


async def test_transient_retries_with_backoff_then_dead_letters(harness: Broker) -> None:
    """Transient failures come back after the delay, without blocking others, then go dead."""

    def behave(delivery: Delivery) -> Result:
        return TransientError("database down") if delivery.message_id == "flaky" else None

    handler = RecordingHandler(QUEUE, behave=behave)
    runner = Runner(handler, harness.transport("test"), retry_delays_s=(1, 1))
    async with running(runner):
        await harness.publish(QUEUE, {"n": 0}, message_id="flaky")
        await harness.publish(QUEUE, {"n": 1}, message_id="fine")
        await eventually(lambda: runner.counts.get("dead_lettered") == 1, within=10)
    attempts = [(d.message_id, d.attempt) for d in handler.deliveries]
    # The good message was handled right after the first failure, not after its retries.
    assert attempts[:2] == [("flaky", 1), ("fine", 1)]
    assert [a for m, a in attempts if m == "flaky"] == [1, 2, 3]
    dead = await harness.read_all(DEAD_QUEUE)
    assert len(dead) == 1
    assert dead[0].headers["x-hookline-reason"] == "attempts_exhausted"
    assert dead[0].headers["x-hookline-attempt"] == 3
    assert runner.counts == {"retried": 2, "acked": 1, "dead_lettered": 1}


async def test_settled_messages_are_counted_per_queue_and_outcome(harness: Broker) -> None:
    """hookline_worker_messages_total counts acked, retried and dead-lettered messages by
    worker, queue and outcome; hookline_worker_handle_seconds times each handled one."""

    def behave(delivery: Delivery) -> Result:
        if delivery.message_id == "poison":
            return PoisonMessage("not an event")
        return TransientError("database down") if delivery.message_id == "flaky" else None

    metrics = Metrics()
    runner = Runner(
        RecordingHandler(QUEUE, behave=behave),
        harness.transport("test"),
        retry_delays_s=(1,),
        metrics=WorkerMetrics(metrics),
    )
    async with running(runner):
        for message_id in ("fine", "flaky", "poison"):
            await harness.publish(QUEUE, {"n": 0}, message_id=message_id)
        await eventually(lambda: runner.counts.get("dead_lettered") == 2, within=10)
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.render().decode().splitlines()
        if not line.startswith("#")
    }
    labels = f'queue="{QUEUE}",worker="test"'
    assert values[f'hookline_worker_messages_total{{outcome="acked",{labels}}}'] == 1
    assert values[f'hookline_worker_messages_total{{outcome="retried",{labels}}}'] == 1
    assert values[f'hookline_worker_messages_total{{outcome="dead_lettered",{labels}}}'] == 2
    assert values[f"hookline_worker_handle_seconds_count{{{labels}}}"] == 4


async def test_backoff_delay_is_respected(harness: Broker) -> None:
    """The retry arrives no sooner than its delay."""
    seen: list[float] = []

    def behave(delivery: Delivery) -> Result:
        seen.append(time.monotonic())
        return TransientError("later") if delivery.attempt == 1 else None

    runner = Runner(
        RecordingHandler(QUEUE, behave=behave), harness.transport("test"), retry_delays_s=(1,)
    )
    async with running(runner):
        await harness.publish(QUEUE, {"n": 0})
        await eventually(lambda: runner.counts.get("acked") == 1, within=10)
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.95


async def test_crashing_handler_counts_as_transient(harness: Broker) -> None:
    """An unexpected exception retries the batch instead of dead-lettering it at once."""
    handler = RecordingHandler(QUEUE, raise_error=RuntimeError("bug"))
    runner = Runner(handler, harness.transport("test"), retry_delays_s=(1,))
    async with running(runner):
        await harness.publish(QUEUE, {"n": 0})
        await eventually(lambda: runner.counts.get("dead_lettered") == 1, within=10)
    assert runner.counts["retried"] == 1
    dead = await harness.read_all(DEAD_QUEUE)
    assert "RuntimeError: bug" in str(dead[0].headers["x-hookline-error"])


async def test_reply_goes_to_reply_to(harness: Broker) -> None:
    """A RpcReply is published to reply_to with the request's correlation_id, then acked."""
    reply_queue = "hookline.test-replies"
    if isinstance(harness, MemoryHarness):
        harness.broker.declare_private(reply_queue)
    else:
        assert isinstance(harness, RabbitHarness)
        await harness.client.declare_queue(reply_queue, (), {})
    try:
        handler = RecordingHandler(
            QUEUE, behave=lambda d: RpcReply(b'{"ok": 1}', "application/json")
        )
        runner = Runner(handler, harness.transport("test"))
        async with running(runner):
            await harness.publish(QUEUE, {"q": 1}, reply_to=reply_queue, correlation_id="c-7")
            await eventually(lambda: runner.counts.get("replied") == 1)
            await eventually(lambda: harness.queue_length(reply_queue))
        replies = await harness.read_all(reply_queue)
        assert [r.body for r in replies] == [{"ok": 1}]
    finally:
        if isinstance(harness, RabbitHarness):
            await harness.client.delete_queue(reply_queue)


async def test_stop_drains_in_flight_work(harness: Broker) -> None:
    """Setting stop (what SIGTERM does) lets delivered messages finish and be acked."""
    handler = RecordingHandler(QUEUE, delay_s=0.5, concurrency=3)
    runner = Runner(handler, harness.transport("test"))
    async with running(runner) as stop:
        for index in range(3):
            await harness.publish(QUEUE, {"n": index})
        await eventually(lambda: len(handler.batches) == 3)
        stop.set()
    assert runner.counts == {"acked": 3}
    assert await harness.queue_length(QUEUE) == 0


async def test_concurrency_runs_batches_in_parallel(harness: Broker) -> None:
    """With concurrency N, N slow messages are in the handler at the same time."""
    inside, peak = 0, 0

    class Slow(RecordingHandler):
        async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            try:
                await asyncio.sleep(0.3)
                return [None] * len(batch)
            finally:
                inside -= 1

    runner = Runner(Slow(QUEUE, concurrency=10), harness.transport("test"))
    async with running(runner):
        for index in range(10):
            await harness.publish(QUEUE, {"n": index})
        await eventually(lambda: runner.counts.get("acked") == 10)
    assert peak > 1 and runner.prefetch == 10


async def test_wrong_result_count_is_transient() -> None:
    """A handler returning the wrong number of results retries the batch, never acks it."""
    harness = MemoryHarness()

    class Short(RecordingHandler):
        async def handle(self, batch: object) -> list[Result]:
            return []

    runner = Runner(Short(QUEUE), harness.transport("test"), retry_delays_s=(1,))
    async with running(runner):
        await harness.publish(QUEUE, {"n": 0})
        await eventually(lambda: runner.counts.get("retried") == 1)
    await asyncio.sleep(0)


@pytest.mark.broker
async def test_worker_waits_for_an_unreachable_broker(
    broker_proxy: TcpProxy, captured_logs: CapturedLogs
) -> None:
    """A worker started while RabbitMQ refuses connections retries with back-off, then runs."""
    broker_proxy.accepting = False
    handler = RecordingHandler(QUEUE)
    runner = Runner(handler, AmqpTransport(broker_proxy.url, "test"))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await eventually(lambda: captured_logs.events("worker_connect_failed"))
        assert not runner.ready.is_set()
        broker_proxy.accepting = True
        await asyncio.wait_for(runner.ready.wait(), 10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert handler.started == handler.closed == 1


async def test_stop_while_the_broker_is_unreachable_ends_cleanly() -> None:
    """Stopping a worker that never reached its broker returns at once, without an error."""
    runner = Runner(
        RecordingHandler(QUEUE),
        AmqpTransport(f"amqp://guest:guest@127.0.0.1:{free_port()}/", "test"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert not runner.ready.is_set()
