"""CPU of hookline's AMQP publisher alone: confirmed, persistent publishes to the real RabbitMQ.

    .venv/bin/python -m benchmarks.publisher [--events 30000] [--concurrency 64] [--amqp-url URL]

Publishes N distinct status events for 10 tenants through FastAmqpPublisher (the gateway's
publisher: mandatory, persistent, one confirm per event, into the tenant's quorum queue and
hookline.usage), ``concurrency`` at a time in a closed loop on uvloop, after a warm-up, and
prints publishes/s and this process's CPU (user + sys) per confirmed publish, encoding
included. This is the publish path's share of the ingress bench's CPU per callback. Works in
a throwaway vhost (made and deleted with rabbitmqctl), so it leaves nothing behind.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import uvloop

from benchmarks.rabbit import Vhost
from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.log import configure_logging
from schemas.events import Event

TENANTS = [f"bench-{n}" for n in range(10)]
WARMUP = 2000


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def status_events(count: int) -> list[Event]:
    now = datetime.now(UTC)
    return [
        Event(
            id=str(uuid.uuid4()),
            kind="message.status",
            tenant=TENANTS[n % 10],
            provider="twilio",
            source="twilio/AC0123",
            subject=f"SM{n:032x}",
            time=now,
            data={
                "status": "delivered",
                "segments": 1,
                "raw": {"MessageStatus": "delivered", "To": "+14155550100"},
            },
        )
        for n in range(count)
    ]


async def publish_all(
    publisher: FastAmqpPublisher, events: Sequence[Event], concurrency: int
) -> None:
    pending: Iterator[Event] = iter(events)

    async def worker() -> None:
        for event in pending:  # shared: each event is taken by exactly one worker
            await publisher.publish(event)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def measure(url: str, count: int, concurrency: int) -> tuple[float, float]:
    """(publishes per second, CPU seconds per publish) of ``count`` confirmed publishes."""
    publisher = FastAmqpPublisher(url, TENANTS, confirm_timeout=10.0)
    await publisher.start()
    try:
        events = status_events(WARMUP + count)
        await publish_all(publisher, events[:WARMUP], concurrency)
        cpu, wall = cpu_seconds(), time.perf_counter()
        await publish_all(publisher, events[WARMUP:], concurrency)
        cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    finally:
        await publisher.close()
    return count / wall, cpu / count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args(argv)
    configure_logging("console", "warning")  # the publisher's connect and close lines: noise here
    vhost = Vhost(args.amqp_url)
    vhost.create()
    try:
        rate, cost = uvloop.run(measure(vhost.url, args.events, args.concurrency))
    finally:
        vhost.delete()
    print(
        f"{args.events:,} confirmed publishes, {args.concurrency} in flight: {rate:,.0f}/s, "
        f"{cost * 1e6:.1f} us CPU per publish (encoding included) in the publishing process"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
