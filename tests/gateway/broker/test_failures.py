"""Broker connection failures read as one plain sentence, from every place that connects, on
the real RabbitMQ: a wrong password, a vhost that does not exist, a port nobody listens on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from gateway.broker.failures import connect_failure
from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.probe import probe_broker
from gateway.broker.rpc_amqp import AmqpRpcClient
from gateway.broker.tail import tail_events
from gateway.errors import HooklineError
from tests.support.logs import CapturedLogs
from tests.support.net import free_port
from workers.amqp_transport import AmqpTransport

SECRET = "no-such-password-7f3a"


def with_parts(
    url: str, *, password: str | None = None, vhost: str | None = None, port: int | None = None
) -> str:
    """``url`` with its password, vhost or port replaced."""
    parts = urlsplit(url)
    user = parts.username or "guest"
    netloc = (
        f"{user}:{password or parts.password or 'guest'}@{parts.hostname}:"
        f"{port or parts.port or 5672}"
    )
    return urlunsplit(
        parts._replace(netloc=netloc, path=parts.path if vhost is None else "/" + vhost)
    )


async def publisher_start(url: str) -> None:
    publisher = FastAmqpPublisher(url, ["acme"], connect_timeout=3.0)
    try:
        await publisher.start()
    finally:
        await publisher.close()


async def worker_open(url: str) -> None:
    transport = AmqpTransport(url, "test", connect_timeout=3.0)
    try:
        await transport.open("hookline.usage", 1, lambda _inbound: None)
    finally:
        await transport.close()


async def tail_start(url: str) -> None:
    async with contextlib.aclosing(tail_events(url, "acme")) as events:
        async for _event in events:
            break


async def probe(url: str) -> None:
    await probe_broker(url, 3.0)


CONNECTORS: dict[str, Callable[[str], Awaitable[None]]] = {
    "gateway publisher": publisher_start,
    "hookline check": probe,
    "worker": worker_open,
    "tail": tail_start,
}


async def failure_of(connect: Callable[[str], Awaitable[None]], url: str) -> str:
    with pytest.raises(HooklineError) as failed:
        await asyncio.wait_for(connect(url), 15)
    return str(failed.value)


@pytest.mark.broker
@pytest.mark.parametrize("who", sorted(CONNECTORS))
async def test_wrong_password_is_a_refused_login(amqp_url: str, who: str) -> None:
    """A wrong password reads 'login refused for user ...', never the password itself."""
    message = await failure_of(CONNECTORS[who], with_parts(amqp_url, password=SECRET))
    user = urlsplit(amqp_url).username
    assert f"login refused for user {user!r} at " in message, message
    assert SECRET not in message and "Error" not in message


@pytest.mark.broker
@pytest.mark.parametrize("who", sorted(CONNECTORS))
async def test_missing_vhost_is_named(amqp_url: str, who: str) -> None:
    """A vhost that does not exist reads "vhost 'x' does not exist", not a protocol frame."""
    message = await failure_of(CONNECTORS[who], with_parts(amqp_url, vhost="hookline-nope"))
    assert "vhost 'hookline-nope' does not exist at " in message, message
    assert "Frame" not in message and "Connection.Close" not in message


@pytest.mark.parametrize("who", sorted(CONNECTORS))
async def test_refused_port_is_named(who: str) -> None:
    """Nothing listening reads 'connection refused at host:port', without a library's text."""
    port = free_port()
    url = f"amqp://guest:{SECRET}@127.0.0.1:{port}/"
    message = await failure_of(CONNECTORS[who], url)
    assert message.startswith(
        ("connection refused at 127.0.0.1:", "worker test: connection refused at 127.0.0.1:")
    ), message
    assert f"127.0.0.1:{port}" in message and SECRET not in message and "Errno" not in message


async def test_rpc_client_logs_one_plain_line_per_attempt(captured_logs: CapturedLogs) -> None:
    """The RPC client against a refused port logs one hookline warning, and no library line."""
    client = AmqpRpcClient(f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/", connect_timeout=2.0)
    await client.start()
    await client.close()
    [failed] = captured_logs.events("rpc_connect_failed")
    assert str(failed["error"]).startswith("connection refused at 127.0.0.1:")
    assert SECRET not in captured_logs.stream.getvalue()
    assert "aiormq" not in captured_logs.stream.getvalue()
    assert "aio_pika" not in captured_logs.stream.getvalue()


def test_the_password_never_appears() -> None:
    """Whatever a library puts in its message, the URL's password is masked in the sentence."""
    url = f"amqp://hook:{SECRET}@broker.internal:5672/prod"
    odd = RuntimeError(f"failed on amqp://hook:{SECRET}@broker.internal:5672/prod")
    sentence = connect_failure(odd, url)
    assert SECRET not in sentence and "broker.internal:5672" in sentence
    assert connect_failure(TimeoutError(), url, 5.0).startswith(
        "no answer from the broker at broker.internal:5672 within 5 s"
    )
