"""In-process cost of hookline's callback route, without an HTTP server or a broker.

    .venv/bin/python -m benchmarks.route [--callbacks 30000] [--concurrency 64]

Drives the ASGI app directly (uvloop, 64 callbacks at a time) with distinct, validly signed
message-status callbacks and prints the CPU per callback of: a bare Starlette endpoint that reads
the body (the baseline), and hookline's route with a publisher that only encodes the event, at
log level warning and at info (one JSON line per callback, written to a file). The difference to
the ingress bench is what the HTTP server, the sockets and the AMQP I/O cost.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.app import create_app
from gateway.log import configure_logging, reset_logging
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry
from schemas.events import Event
from tests.support.samples import message_status
from tests.support.twilio_signing import signed_form_request, twilio_tenant

PATH = "/twilio/messaging/status"
PUBLIC = "http://127.0.0.1"
WARMUP = 2000
Request_ = tuple[list[tuple[bytes, bytes]], bytes]


class EncodingPublisher:
    """Takes every event at once after encoding it, as a publisher must."""

    ready = True

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def publish(self, event: Event) -> None:
        event.to_json()


def signed_requests(count: int) -> tuple[list[Any], list[Request_]]:
    tenants = []
    for i in range(10):
        account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        tenants.append((twilio_tenant(f"bench-{i}", account, token), account, token))
    requests: list[Request_] = []
    for n in range(count):
        _tenant, account, token = tenants[n % 10]
        body, headers = signed_form_request(f"{PUBLIC}{PATH}", message_status(account, n=n), token)
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        raw += [
            (b"host", b"127.0.0.1:8080"),
            (b"content-length", str(len(body)).encode()),
            (b"user-agent", b"wrk"),
        ]
        requests.append((raw, body))
    return [t for t, _, _ in tenants], requests


async def drive(
    app: Callable[..., Awaitable[None]], requests: Sequence[Request_], concurrency: int
) -> tuple[float, dict[int, int]]:
    """CPU seconds per callback, and the answers by status."""
    statuses: dict[int, int] = {}

    async def one(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "server": ("127.0.0.1", 8080),
            "client": ("127.0.0.1", 40000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)

    began = time.process_time()
    for start in range(0, len(requests), concurrency):
        await asyncio.gather(*(one(*r) for r in requests[start : start + concurrency]))
    return (time.process_time() - began) / len(requests), statuses


async def bare_cost(requests: Sequence[Request_], concurrency: int) -> float:
    async def endpoint(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    app = Starlette(routes=[Route(PATH, endpoint, methods=["POST"])])
    cost, _ = await drive(app, requests, concurrency)
    return cost


async def hookline_cost(
    tenants: list[Any],
    warmup: Sequence[Request_],
    requests: Sequence[Request_],
    concurrency: int,
    level: str,
    log_file: Path,
) -> tuple[float, dict[int, int]]:
    configure_logging("json", level, stream=log_file.open("w"))
    try:
        settings = Settings(
            tenants=StaticTenantRegistry(tenants),
            public_url=PUBLIC,
            data_dir=Path(tempfile.mkdtemp(prefix="hookline-bench-route-")),
        )
        app = create_app(settings, publisher=EncodingPublisher())
        async with app.router.lifespan_context(app):
            stack = app.build_middleware_stack()
            await drive(stack, warmup, concurrency)
            return await drive(stack, requests, concurrency)
    finally:
        reset_logging()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    tenants, signed = signed_requests(WARMUP + args.callbacks)
    warmup, requests = signed[:WARMUP], signed[WARMUP:]
    log_file = Path(tempfile.gettempdir()) / "hookline-bench-route.log"

    async def run() -> None:
        await bare_cost(warmup, args.concurrency)  # imports, caches
        bare = await bare_cost(requests, args.concurrency)
        print(f"bare Starlette endpoint:    {bare * 1e6:6.1f} us CPU per callback (1.00x)")
        for level in ("warning", "info"):
            cost, statuses = await hookline_cost(
                tenants, warmup, requests, args.concurrency, level, log_file
            )
            if statuses != {204: len(requests)}:
                raise SystemExit(f"hookline answered {statuses}, expected 204 to every callback")
            print(
                f"hookline route, log {level:7s} {cost * 1e6:6.1f} us CPU per callback "
                f"({cost / bare:.2f}x)"
            )

    uvloop.run(run())
    print(
        f"{args.callbacks} callbacks, {args.concurrency} at a time, in one process; "
        f"info lines written to {log_file}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
