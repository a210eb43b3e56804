"""On a real uvicorn socket: clients that hang up, stall or send too much cost a bounded amount."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry
from tests.support.gateway import PUBLIC_URL, default_tenants
from tests.support.logs import CapturedLogs
from tests.support.server import serving

STATUS_PATH = "/twilio/messaging/status"


@asynccontextmanager
async def served(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[str, int]]:
    """The gateway on an ephemeral loopback port; yields (host, port)."""
    tenants = default_tenants()
    settings = Settings(tenants=StaticTenantRegistry(tenants), public_url=PUBLIC_URL,
                        data_dir=tmp_path, **overrides)
    publisher = MemoryPublisher(MemoryBroker(), [tenant.id for tenant in tenants])
    app = create_app(settings, publisher=publisher, clock=FakeClock())
    async with serving(app) as base:
        host, _, port = base.removeprefix("http://").rpartition(":")
        yield host, int(port)


async def wait_for_lines(logs: CapturedLogs, event: str, count: int = 1,
                         timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The log lines named ``event`` once there are ``count`` of them (logs are polled)."""
    async with asyncio.timeout(timeout_s):
        while len(lines := logs.events(event)) < count:  # noqa: ASYNC110 - a log, not an event
            await asyncio.sleep(0.02)
    return lines


async def test_client_hanging_up_mid_body_is_one_info_line(
    tmp_path: Path, captured_logs: CapturedLogs
) -> None:
    """A partial body then a hang-up: one info line, counted, no traceback, no error line."""
    async with served(tmp_path) as (host, port):
        for _ in range(3):
            _reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST {STATUS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         "application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                         "AccountSid=AC".encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        line, *_ = await wait_for_lines(captured_logs, "client_disconnected", 3)
    assert line["level"] == "info" and line["path"] == STATUS_PATH
    assert "exception" not in line
    assert captured_logs.events("request_failed") == []
    assert [entry for entry in captured_logs.lines() if entry["level"] == "error"] == []
