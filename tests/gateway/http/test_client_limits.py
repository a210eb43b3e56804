"""On a real uvicorn socket: clients that hang up, stall or send too much cost a bounded amount."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.settings import ClientLimits, Settings
from gateway.tenants import StaticTenantRegistry
from tests.support.gateway import PUBLIC_URL, default_tenants
from tests.support.logs import CapturedLogs
from tests.support.server import serving

STATUS_PATH = "/twilio/messaging/status"


@asynccontextmanager
async def served(
    tmp_path: Path, limits: ClientLimits | None = None, **overrides: Any
) -> AsyncIterator[tuple[str, int]]:
    """The gateway on an ephemeral loopback port; yields (host, port)."""
    tenants = default_tenants()
    settings = Settings(
        tenants=StaticTenantRegistry(tenants), public_url=PUBLIC_URL, data_dir=tmp_path, **overrides
    )
    publisher = MemoryPublisher(MemoryBroker(), [tenant.id for tenant in tenants])
    app = create_app(settings, publisher=publisher, clock=FakeClock())
    async with serving(app, limits=limits) as base:
        host, _, port = base.removeprefix("http://").rpartition(":")
        yield host, int(port)


async def wait_for_lines(
    logs: CapturedLogs, event: str, count: int = 1, timeout_s: float = 5.0
) -> list[dict[str, Any]]:
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
            writer.write(
                f"POST {STATUS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: "
                "application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                "AccountSid=AC".encode()
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        line, *_ = await wait_for_lines(captured_logs, "client_disconnected", 3)
    assert line["level"] == "info" and line["path"] == STATUS_PATH
    assert "exception" not in line
    assert captured_logs.events("request_failed") == []
    assert [entry for entry in captured_logs.lines() if entry["level"] == "error"] == []


FAST = ClientLimits(
    header_timeout_s=0.3,
    body_timeout_s=0.3,
    max_header_bytes=4096,
    max_headers=20,
    max_connections=8,
)


async def answer_of(reader: asyncio.StreamReader, within_s: float = 3.0) -> tuple[int, bytes]:
    """(status, whole answer) of a connection the server closes after answering."""
    data = await asyncio.wait_for(reader.read(), within_s)
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data


async def test_a_silent_connection_is_closed_at_the_header_deadline(tmp_path: Path) -> None:
    """A client that connects and says nothing gets 408 and a closed connection, in time."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        started = asyncio.get_running_loop().time()
        status, answer = await answer_of(reader)
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
    assert status == 408 and answer.endswith(b"Request Timeout")
    assert 0.25 <= elapsed < 1.5


async def test_a_head_sent_slowly_is_cut_at_the_header_deadline(
    tmp_path: Path, captured_logs: CapturedLogs
) -> None:
    """Slowloris: a header line every 0.1 s never completes the head; refused at the deadline."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST {STATUS_PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            for n in range(30):
                if reader.at_eof():
                    break
                writer.write(f"X-Slow-{n}: y\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.1)
        [line] = await wait_for_lines(captured_logs, "client_refused")
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
    assert (line["status"], line["reason"]) == (408, "header_timeout")
    assert elapsed < 1.5


async def test_a_body_never_finished_is_cut_at_the_body_deadline(
    tmp_path: Path, captured_logs: CapturedLogs
) -> None:
    """Head sent, body promised and not sent: 408 at the body deadline, the request's one line
    says the client went away, nothing is published."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST {STATUS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: "
            "application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
            "AccountSid=AC".encode()
        )
        status, _answer = await answer_of(reader)
        writer.close()
        await wait_for_lines(captured_logs, "client_disconnected")
    assert status == 408
    assert captured_logs.events("callback_accepted") == []


async def test_an_oversized_head_is_431_and_costs_no_memory(
    tmp_path: Path, captured_logs: CapturedLogs
) -> None:
    """Unfinished megabytes of one header: refused (431) once past max_header_bytes and the
    connection closed, instead of buffered for as long as the client likes."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST {STATUS_PATH} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode())
        sent = 0
        with contextlib.suppress(ConnectionError):
            while sent < 8 * 1024 * 1024 and not reader.at_eof():
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536
                await asyncio.sleep(0)
        [line] = await wait_for_lines(captured_logs, "client_refused")
        writer.close()
    assert (line["status"], line["reason"]) == (431, "header_limit")
    assert sent < 2 * 1024 * 1024  # cut off long before 8 MB got through


async def test_a_large_head_in_one_read_is_431(tmp_path: Path) -> None:
    """A complete head over the limit, arriving in one read, is refused too."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 8000}\r\n\r\n".encode())
        status, _answer = await answer_of(reader)
        writer.close()
    assert status == 431


async def test_too_many_header_fields_is_431(tmp_path: Path) -> None:
    """More header fields than max_headers: 431, connection closed."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        fields = "".join(f"X-F{n}: v\r\n" for n in range(25))
        writer.write(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{fields}\r\n".encode())
        status, _answer = await answer_of(reader)
        writer.close()
    assert status == 431


async def test_requests_within_the_limits_are_served_on_a_kept_alive_connection(
    tmp_path: Path,
) -> None:
    """The limits leave normal traffic alone: three requests on one connection, the last one
    after a pause longer than the header deadline (the keep-alive clock governs idle time)."""
    async with served(tmp_path, FAST) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        for pause in (0, 0, 0.5):
            await asyncio.sleep(pause)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_connections_beyond_the_cap_are_answered_503_at_once(tmp_path: Path) -> None:
    """With max_connections open and idle, one more request is answered 503 right away."""
    limits = ClientLimits(header_timeout_s=5, body_timeout_s=5, max_connections=4)
    async with served(tmp_path, limits) as (host, port):
        idle = [await asyncio.open_connection(host, port) for _ in range(4)]
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
        writer.close()
        for _reader, idle_writer in idle:
            idle_writer.close()
    assert head.startswith(b"HTTP/1.1 503")
