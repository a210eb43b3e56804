"""Spool figures on this machine: durable put rate and replay rate to the real RabbitMQ.

    .venv/bin/python -m benchmarks.spool_replay [--events 20000] [--amqp-url URL]

Spools N status events (64 concurrent writers, each put fsynced by group commit), then drains
them with the gateway's Replayer to RabbitMQ with publisher confirms, and prints events/s for
both. Works in a throwaway vhost (made and deleted with rabbitmqctl), so it leaves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.replay import Replayer
from gateway.spool import Spool
from tests.support.events import make_event


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


async def run(events: int, base_url: str) -> None:
    vhost = f"hookline-bench-{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        await measure(events, base_url.rstrip("/") + "/" + vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


async def measure(events: int, amqp_url: str) -> None:
    tenant = "bench"
    with tempfile.TemporaryDirectory() as data_dir:
        spool = await Spool.open(Path(data_dir))
        batch = [replace(make_event(n), tenant=tenant) for n in range(events)]
        started = time.perf_counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(events):
            queue.put_nowait(n)

        async def writer() -> None:
            while not queue.empty():
                await spool.put(batch[queue.get_nowait()])

        await asyncio.gather(*(writer() for _ in range(64)))
        put_seconds = time.perf_counter() - started
        publisher = FastAmqpPublisher(amqp_url, [tenant], confirm_timeout=30)
        await publisher.start()
        started = time.perf_counter()
        replayed = await Replayer(spool, publisher).drain()
        replay_seconds = time.perf_counter() - started
        await publisher.close()
        await spool.close()
    print(
        f"spooled  {events} events in {put_seconds:.2f} s: {events / put_seconds:,.0f} events/s "
        f"({spool.commits} commits)"
    )
    print(
        f"replayed {replayed} events in {replay_seconds:.2f} s: "
        f"{replayed / replay_seconds:,.0f} events/s (confirmed, persistent, quorum queues)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--amqp-url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="broker URL without vhost (guest's permissions are set on it)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.events, args.amqp_url))


if __name__ == "__main__":
    main()
