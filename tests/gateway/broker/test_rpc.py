"""The TwiML RPC client's failure outcomes, on the real RabbitMQ and the embedded broker."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from gateway.broker.memory import MemoryBroker, MemoryMessage
from gateway.broker.rpc import QUERY_HEADER, MemoryRpcClient
from gateway.broker.rpc_amqp import AmqpRpcClient
from schemas.events import Event
from schemas.topology import DEADLINE_HEADER, ERROR_HEADER, TWIML_QUEUE, twiml_queue
from tests.support.net import free_port
from tests.support.rabbit import RabbitClient, TcpProxy, wait_until
from tests.support.twiml_stack import EchoHandler
from workers.amqp_transport import AmqpTransport
from workers.runner import Runner
from workers.transport import MemoryTransport


def event(n: int = 1) -> Event:
    return Event(
        id=f"00000000-0000-5000-8000-{n:012d}",
        kind="call.incoming",
        tenant="acme",
        provider="twilio",
        source="twilio/AC1",
        subject=f"CA{n:032d}",
        time=datetime(2026, 11, 23, tzinfo=UTC),
        data={"raw": {}},
    )


async def test_memory_round_trip_carries_query_and_deadline() -> None:
    """On the embedded broker the request reaches the worker with its query and deadline."""
    broker = MemoryBroker()
    client = MemoryRpcClient(broker)
    await client.start()
    seen: list[MemoryMessage] = []

    async def worker() -> None:
        async for message in broker.consume_messages(TWIML_QUEUE):
            seen.append(message)
            assert message.reply_to is not None
            broker.publish(
                MemoryMessage(
                    exchange="",
                    routing_key=message.reply_to,
                    body=b"<Response/>",
                    message_id="r",
                    type="reply",
                    content_type="text/xml",
                    correlation_id=message.correlation_id,
                )
            )

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    try:
        before = time.time() * 1000
        result = await client.request(event(), query="hl_step=hangup", timeout_s=1.0)
    finally:
        task.cancel()
        await client.close()
    assert result.outcome == "replied" and result.body == b"<Response/>"
    headers = seen[0].headers
    assert headers[QUERY_HEADER] == "hl_step=hangup"
    deadline = headers[DEADLINE_HEADER]
    assert isinstance(deadline, int) and before + 900 <= deadline <= before + 1100 + 50


async def test_memory_error_reply_is_a_worker_error_at_once() -> None:
    """A reply with x-hookline-error is the worker_error outcome, not a body to serve."""
    broker = MemoryBroker()
    client = MemoryRpcClient(broker)
    await client.start()

    async def worker() -> None:
        async for message in broker.consume_messages(TWIML_QUEUE):
            assert message.reply_to is not None
            broker.publish(
                MemoryMessage(
                    exchange="",
                    routing_key=message.reply_to,
                    body=b"",
                    message_id="r",
                    type="reply",
                    content_type="text/plain",
                    headers={ERROR_HEADER: "unexpected_kind"},
                    correlation_id=message.correlation_id,
                )
            )

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    try:
        started = time.monotonic()
        result = await client.request(event(), query="", timeout_s=2.0)
    finally:
        task.cancel()
        await client.close()
    assert result.outcome == "worker_error" and result.body is None
    assert "unexpected_kind" in result.detail and time.monotonic() - started < 0.5


async def test_memory_full_queue_is_refused_at_once() -> None:
    """A full hookline.twiml refuses the request: the fallback comes without waiting."""
    broker = MemoryBroker()
    client = MemoryRpcClient(broker)
    await client.start()
    stream = broker.consume_messages(TWIML_QUEUE)
    waiting = asyncio.create_task(anext(stream))  # a consumer that is stuck on its first one
    await asyncio.sleep(0)
    limit = twiml_queue().arguments["x-max-length"]
    assert isinstance(limit, int)
    for n in range(limit):
        broker.publish(
            MemoryMessage(
                exchange="", routing_key=TWIML_QUEUE, body=b"{}", message_id=str(n), type="test"
            )
        )
    try:
        result = await client.request(event(), query="", timeout_s=1.0)
    finally:
        waiting.cancel()
        await client.close()
    assert result.outcome == "refused"


async def test_memory_late_reply_is_counted() -> None:
    """A reply for a request that timed out is dropped and counted."""
    broker = MemoryBroker()
    client = MemoryRpcClient(broker)
    await client.start()
    runner = Runner(EchoHandler(delay_s=0.3), MemoryTransport(broker))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await runner.ready.wait()
    try:
        result = await client.request(event(), query="", timeout_s=0.1)
        await wait_until(lambda: client.late_replies == 1)
    finally:
        stop.set()
        await task
        await client.close()
    assert result.outcome == "timeout"


@pytest.mark.broker
async def test_returned_request_falls_back_at_once(amqp_url: str) -> None:
    """With no hookline.twiml queue the mandatory publish comes back: 'returned', no wait."""
    client = AmqpRpcClient(amqp_url, consumer_poll_s=0.05)
    await client.start()
    rabbit = await RabbitClient(amqp_url).connect()
    try:
        await rabbit.delete_queue(TWIML_QUEUE)
        await wait_until(lambda: client.consumers is None)  # the poll sees it gone
        started = time.monotonic()
        result = await client.request(event(), query="", timeout_s=2.0)
        assert result.outcome == "returned" and time.monotonic() - started < 1.0
    finally:
        queue = twiml_queue()
        await rabbit.declare_queue(queue.name, (), dict(queue.arguments))
        await rabbit.close()
        await client.close()


@pytest.mark.broker
async def test_broken_connection_fails_waiting_requests_fast(
    amqp_url: str, broker_proxy: TcpProxy
) -> None:
    """Requests waiting when the connection drops get 'connection_lost' at once, not after
    their deadline; new ones get 'unavailable' until the client is reconnected."""
    client = AmqpRpcClient(broker_proxy.url, consumer_poll_s=0.05)
    await client.start()
    runner = Runner(EchoHandler(delay_s=5), AmqpTransport(amqp_url, "twiml"), drain_timeout_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await runner.ready.wait()
    try:
        await wait_until(lambda: client.consumers == 1)
        pending = asyncio.create_task(client.request(event(), query="", timeout_s=5.0))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        broker_proxy.sever()
        result = await pending
        assert result.outcome == "connection_lost"
        assert time.monotonic() - started < 1.0
        after = await client.request(event(2), query="", timeout_s=1.0)
        assert after.outcome in ("unavailable", "connection_lost")
    finally:
        stop.set()
        await task
        await client.close()


async def test_unreachable_broker_at_start_is_unavailable_not_fatal() -> None:
    """A gateway whose broker is down still starts; requests answer 'unavailable' at once."""
    client = AmqpRpcClient(f"amqp://guest:guest@127.0.0.1:{free_port()}/", connect_timeout=0.5)
    await client.start()
    try:
        started = time.monotonic()
        result = await client.request(event(), query="", timeout_s=2.0)
        assert result.outcome == "unavailable" and time.monotonic() - started < 0.1
    finally:
        await client.close()


@pytest.mark.broker
async def test_stalled_broker_still_answers_by_the_deadline(broker_proxy: TcpProxy) -> None:
    """A broker that stops answering (no confirm, no reply) costs the deadline, no more."""
    client = AmqpRpcClient(broker_proxy.url, consumer_poll_s=60)
    await client.start()
    try:
        client.consumers = 1  # as if a worker were there: the request must be sent and wait
        broker_proxy.pause()
        started = time.monotonic()
        result = await client.request(event(), query="", timeout_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        broker_proxy.resume()
        await client.close()
    assert result.outcome == "timeout" and 0.5 <= elapsed < 0.6
