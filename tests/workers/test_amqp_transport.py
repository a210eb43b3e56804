"""The worker runtime on RabbitMQ stops when told to, even while the broker is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from schemas.topology import USAGE_QUEUE
from tests.support.rabbit import TcpProxy
from workers.amqp_transport import AmqpTransport
from workers.handler import Delivery, Result
from workers.runner import Runner

pytestmark = pytest.mark.broker


class AckEverything:
    """A handler on hookline.usage that acks whatever it gets."""

    name = "test-stop"
    queue = USAGE_QUEUE
    batch_size = 1
    batch_wait_s = 0.0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        return [None] * len(batch)


async def test_stop_ends_the_runner_while_the_broker_is_gone(broker_proxy: TcpProxy) -> None:
    """SIGTERM during an outage (the robust connection reconnecting): the runner ends within the
    transport's bounds instead of waiting for a broker that does not come back."""
    runner = Runner(AckEverything(), AmqpTransport(broker_proxy.url, "test-stop"))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(runner.ready.wait(), 15)
    broker_proxy.accepting = False
    broker_proxy.sever()
    await asyncio.sleep(1.0)  # the connection is lost and aio-pika is reconnecting
    started = time.monotonic()
    stop.set()
    await asyncio.wait_for(task, 20)
    assert time.monotonic() - started < 10
