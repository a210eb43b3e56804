"""A gateway app with its TwiML RPC client, plus (optionally) a worker runner, on either broker."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.broker.rpc import MemoryRpcClient, RpcClient
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant
from schemas.events import Event
from tests.support.gateway import PUBLIC_URL
from tests.support.rabbit import wait_until
from tests.support.twilio_signing import signed_form_request
from workers.amqp_transport import AmqpTransport
from workers.handler import Delivery, Handler, Result, RpcReply
from workers.runner import Runner
from workers.transport import MemoryTransport, Transport


@dataclass
class Stack:
    http: httpx.AsyncClient
    rpc: RpcClient
    broker: MemoryBroker | None
    amqp_url: str | None
    #: The admin listener's app (/readyz, /metrics), over ASGI.
    admin: httpx.AsyncClient

    def transport(self, worker: str = "twiml") -> Transport:
        if self.broker is not None:
            return MemoryTransport(self.broker)
        assert self.amqp_url is not None
        return AmqpTransport(self.amqp_url, worker)

    async def post_signed(
        self, path: str, params: Mapping[str, str], token: str, query: str = ""
    ) -> httpx.Response:
        target = f"{path}?{query}" if query else path
        body, headers = signed_form_request(f"{PUBLIC_URL}{target}", dict(params), token)
        return await self.http.post(target, content=body, headers=headers)


@contextlib.asynccontextmanager
async def twiml_stack(
    tenants: Sequence[Tenant], amqp_url: str | None, rpc: RpcClient | None = None
) -> AsyncIterator[Stack]:
    """The app (lifespan running) on memory:// when ``amqp_url`` is None, else on RabbitMQ."""
    registry = StaticTenantRegistry(tenants)
    with tempfile.TemporaryDirectory(prefix="hookline-test-") as data_dir:
        settings = Settings(
            tenants=registry,
            public_url=PUBLIC_URL,
            data_dir=Path(data_dir),
            amqp_url=amqp_url or "memory://",
        )
        broker = MemoryBroker() if amqp_url is None else None
        if broker is not None:
            rpc = rpc or MemoryRpcClient(broker)
            app = create_app(
                settings,
                publisher=MemoryPublisher(broker, registry_ids(tenants)),
                rpc=rpc,
                clock=FakeClock(),
            )
        else:
            from gateway.broker.rpc_amqp import AmqpRpcClient

            rpc = rpc or AmqpRpcClient(settings.amqp_url, consumer_poll_s=0.05)
            app = create_app(settings, rpc=rpc, clock=FakeClock())
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
        http = httpx.AsyncClient(
            transport=transport, base_url="http://gateway.internal", timeout=30
        )
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.state.admin_app), base_url="http://admin.internal"
        )
        async with app.router.lifespan_context(app), http, admin:
            yield Stack(http, rpc, broker, amqp_url, admin)


def registry_ids(tenants: Sequence[Tenant]) -> list[str]:
    return [tenant.id for tenant in tenants]


@dataclass
class EchoHandler:
    """A TwiML worker stand-in that says the CallSid back (distinct answers per call)."""

    delay_s: float = 0.0
    name: str = "twiml"
    queue: str = "hookline.twiml"
    batch_size: int = 1
    batch_wait_s: float = 0.0
    concurrency: int = 256
    retry_delays_s: tuple[int, ...] = ()
    answered: int = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        out: list[Result] = []
        for delivery in batch:
            event = Event.from_json(delivery.body)
            self.answered += 1
            out.append(
                RpcReply(f"<Response><Say>{event.subject}</Say></Response>".encode(), "text/xml")
            )
        return out


@contextlib.asynccontextmanager
async def worker(stack: Stack, handler: Handler) -> AsyncIterator[Runner]:
    """Run ``handler`` on the stack's broker until the block ends."""
    runner = Runner(handler, stack.transport(handler.name))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.wait_for(runner.ready.wait(), 10)
    # The RabbitMQ client learns of consumers by polling: wait until it has seen this one.
    await wait_until(lambda: getattr(stack.rpc, "consumers", 1) not in (0, None))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
