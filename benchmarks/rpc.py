"""TwiML RPC round trip on this machine: p50/p99 at 50 and 200 concurrent calls.

    .venv/bin/python -m benchmarks.rpc [--requests 2000] [--concurrency 50,200] [--amqp-url URL]

Three targets, each driven closed-loop (``concurrency`` requests always in flight, ``requests``
in all, after 200 warm-up requests), against the real RabbitMQ in a throwaway vhost:

* ``bare``: the floor: plain aio-pika, one publish (no confirm) to a classic queue, a consumer
  that echoes to one reply queue, futures by correlation id; no hookline code;
* ``rpc``: hookline's ``AmqpRpcClient`` (confirmed mandatory publish, per-message TTL, deadline)
  answered by the worker runtime (``workers.runner``) running an echo handler;
* ``http``: the same plus the gateway: a signed POST /twilio/voice through the ASGI app
  (signature check, event published with confirms to hookline.events, RPC, TwiML answer).

Everything runs in one process and one event loop (as ``hookline run`` does), so the figures
include the client, the worker and the broker sharing this machine's cores. Ratios are
against ``bare`` at the same concurrency in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aio_pika

from gateway.broker.rpc_amqp import AmqpRpcClient
from gateway.log import configure_logging
from schemas.events import Event
from tests.support.routing import ACME_SID, ACME_TOKEN, routed_tenant
from tests.support.samples import call_incoming
from tests.support.twiml_stack import EchoHandler, twiml_stack, worker

Call = Callable[[int], Awaitable[None]]
# Every request of the run gets a new number: a repeated CallSid would be answered from the
# gateway's idempotency window instead of being published again.
_numbers = itertools.count(1)


def bench_event(n: int) -> Event:
    return Event(
        id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{n}")),
        kind="call.incoming",
        tenant="acme",
        provider="twilio",
        source=f"twilio/{ACME_SID}",
        subject=f"CA{n:032x}",
        time=datetime.now(UTC),
        data={"raw": {}},
    )


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


async def drive(call: Call, requests: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (ms) of ``requests`` calls, ``concurrency`` in flight; and the wall time."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def lane() -> None:
        for _ in counter:
            started = time.perf_counter()
            await call(next(_numbers))
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def bare_target(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    requests = await channel.declare_queue("bench.bare", auto_delete=True)
    replies = await channel.declare_queue("", exclusive=True)
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(message.body, correlation_id=message.correlation_id),
            routing_key=message.reply_to or "",
        )
        await message.ack()

    async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    await channel.set_qos(prefetch_count=256)
    await requests.consume(on_request)
    await replies.consume(on_reply, no_ack=True)

    async def call(n: int) -> None:
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[correlation_id] = future
        await channel.default_exchange.publish(
            aio_pika.Message(b"<Response/>", correlation_id=correlation_id, reply_to=replies.name),
            routing_key=requests.name,
        )
        await asyncio.wait_for(future, 10)

    return call, connection.close


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def measure(url: str, requests: int, levels: list[int]) -> None:
    results: dict[tuple[str, int], tuple[float, float, float]] = {}
    for concurrency in levels:
        call, close = await bare_target(url)
        await drive(call, 200, concurrency)
        latencies, wall = await drive(call, requests, concurrency)
        await close()
        results[("bare", concurrency)] = _summary(latencies, wall)

        tenant = routed_tenant(answer_timeout_ms=10_000)
        rpc = AmqpRpcClient(url, consumer_poll_s=0.2)
        async with twiml_stack([tenant], url, rpc=rpc) as stack, worker(stack, EchoHandler()):

            async def rpc_call(n: int, rpc: AmqpRpcClient = rpc) -> None:
                result = await rpc.request(bench_event(n), query="", timeout_s=10)
                if result.outcome != "replied":
                    raise RuntimeError(f"request {n}: {result.outcome} {result.detail}")

            async def http_call(n: int) -> None:
                response = await stack.post_signed(
                    "/twilio/voice", call_incoming(ACME_SID, n), ACME_TOKEN
                )
                if response.status_code != 200 or "<Say>CA" not in response.text:
                    raise RuntimeError(f"call {n}: {response.status_code} {response.text[:80]}")

            for name, target in (("rpc", rpc_call), ("http", http_call)):
                await drive(target, 200, concurrency)
                latencies, wall = await drive(target, requests, concurrency)
                results[(name, concurrency)] = _summary(latencies, wall)
    _print(results, requests)


def _summary(latencies: list[float], wall: float) -> tuple[float, float, float]:
    return percentile(latencies, 50), percentile(latencies, 99), len(latencies) / wall


def _print(results: dict[tuple[str, int], tuple[float, float, float]], requests: int) -> None:
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (shared with other work: figures are noisy)"
    )
    print(
        f"{requests} requests per target and level after 200 warm-up, closed loop; "
        "one process, one event loop; ratio = / bare at the same concurrency"
    )
    print(f"{'target':<6} {'conc':>5} {'p50 ms':>14} {'p99 ms':>14} {'req/s':>16}")
    for (name, concurrency), (p50, p99, rate) in results.items():
        base = results[("bare", concurrency)]
        print(
            f"{name:<6} {concurrency:>5} {p50:>7.2f} ({p50 / base[0]:>4.1f}x) "
            f"{p99:>7.2f} ({p99 / base[1]:>4.1f}x) {rate:>8,.0f} ({rate / base[2]:>4.2f}x)"
        )


async def run(requests: int, levels: list[int], base_url: str) -> None:
    vhost = f"hookline-bench-{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        await measure(base_url.rstrip("/") + "/" + vhost, requests, levels)
    finally:
        rabbitmqctl("delete_vhost", vhost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="50,200")
    parser.add_argument(
        "--amqp-url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="broker URL without vhost (guest's permissions are set on it)",
    )
    args = parser.parse_args()
    configure_logging("json", "warning")
    levels = [int(level) for level in args.concurrency.split(",")]
    asyncio.run(run(args.requests, levels, args.amqp_url))


if __name__ == "__main__":
    main()
