"""Test helpers for broker users: issue a tenant's login with the real command, probe what a
login may do on the real broker, and delete every user a test made."""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel

from gateway.broker.management import ManagementApi
from gateway.broker_users import management_api, tenant_credentials
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant

ChannelAction = Callable[[AbstractChannel], Awaitable[Any]]


def tenant_id(prefix: str) -> str:
    """A fresh tenant id: users are broker-wide, so no two tests share one."""
    return f"{prefix}-{secrets.token_hex(4)}"


def broker_settings(amqp_url: str, api_url: str, tenant_ids: Sequence[str]) -> Settings:
    return Settings(
        amqp_url=amqp_url,
        rabbitmq_api_url=api_url,
        tenants=StaticTenantRegistry([Tenant(tid, tid) for tid in tenant_ids]),
    )


async def credentials(
    settings: Settings, tenant: str, *, rotate: bool = False, delete: bool = False
) -> dict[str, Any]:
    """What `hookline tenant credentials` prints, parsed."""
    out = io.StringIO()
    status = await tenant_credentials(settings, tenant, out, rotate=rotate, delete=delete)
    if status != 0:
        raise RuntimeError(f"tenant_credentials returned {status}")
    [line] = out.getvalue().splitlines()
    result: dict[str, Any] = orjson.loads(line)
    return result


async def delete_users(settings: Settings, usernames: Sequence[str]) -> None:
    api: ManagementApi = management_api(settings)
    for username in usernames:
        await api.delete_user(username)


async def outcome(url: str, action: ChannelAction, *, confirms: bool = True) -> str:
    """Run ``action`` on a fresh channel of a fresh connection as the URL's user: "ok", or
    "refused" when the broker closed the channel with ACCESS_REFUSED (403)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=confirms)
        closed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def on_close(_sender: object, exc: BaseException | None = None) -> None:
            if not closed.done():
                closed.set_result(exc)

        channel.close_callbacks.add(on_close)
        try:
            await asyncio.wait_for(action(channel), 5)
            if not confirms:
                # Without confirms a refused publish is only known when the broker closes the
                # channel: one synchronous round trip after it surfaces that close.
                await asyncio.wait_for(channel.declare_queue("", exclusive=True), 5)
        except (aiormq.exceptions.AMQPChannelError, aiormq.exceptions.ChannelInvalidStateError):
            # Why the channel closed: the broker's Channel.Close, whichever call noticed it.
            reason = await asyncio.wait_for(closed, 5)
            if isinstance(reason, aiormq.exceptions.ChannelAccessRefused):
                return "refused"
            raise
        return "ok"
    finally:
        await connection.close()


async def login_refused(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except aiormq.exceptions.ProbableAuthenticationError:
        return True
    await connection.close()
    return False
