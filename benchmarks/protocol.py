"""CPU cost of the client limits (gateway.http.limits) in uvicorn's HTTP protocol.

    .venv/bin/python -m benchmarks.protocol [--requests 50000] [--repeats 5]

Feeds the same signed-size callback request (a Twilio status callback's head and a 600-byte
form body, in one read, as providers send them) into uvicorn's httptools protocol and into
hookline's GuardedHttpToolsProtocol on one kept-alive connection with an in-memory transport,
answered by a minimal ASGI app, under uvloop. Prints the CPU per request of each, median of
the repeats, and the difference: what the limits cost a request that arrives in one read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.http.limits import GuardedHttpToolsProtocol
from gateway.http.serving import server_config
from gateway.settings import ClientLimits

BODY = b"&".join(f"Field{n}=value-{n:04d}".encode() for n in range(30))
REQUEST = (
    b"POST /twilio/messaging/status HTTP/1.1\r\nHost: hooks.example.com\r\n"
    b"User-Agent: TwilioProxy/1.1\r\nAccept: */*\r\n"
    b"Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
    b"X-Twilio-Signature: 0123456789abcdefghijABCDEFGHIJ0123456789ab=\r\n"
    b"I-Twilio-Idempotency-Token: 3c2b1a09-8f7e-4d6c-b5a4-9382716f5e4d\r\n"
    b"X-Home-Region: us1\r\nConnection: keep-alive\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
)


class Transport(asyncio.Transport):
    """Collects what the protocol writes; counts complete answers."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.answered = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).startswith(b"HTTP/1.1 204"):
            self.answers += 1
            self.answered.set()

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None

    def close(self) -> None:
        return None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def run(protocol_class: type[HttpToolsProtocol], requests: int) -> float:
    """CPU seconds per request, over ``requests`` sequential requests on one connection."""
    config: uvicorn.Config = server_config(app, "127.0.0.1", 8080, ClientLimits(), lifespan="off")
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    started = time.process_time()
    for _ in range(requests):
        transport.answered.clear()
        protocol.data_received(REQUEST)
        await transport.answered.wait()
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    if transport.answers != requests:
        raise RuntimeError(f"expected {requests} answers, got {transport.answers}")
    return elapsed / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"uvicorn": [], "guarded": []}
    for _ in range(args.repeats):  # interleaved: drift on a noisy machine hits both alike
        results["uvicorn"].append(uvloop.run(run(HttpToolsProtocol, args.requests)))
        results["guarded"].append(uvloop.run(run(GuardedHttpToolsProtocol, args.requests)))
    base = statistics.median(results["uvicorn"]) * 1e6
    guarded = statistics.median(results["guarded"]) * 1e6
    print(f"{'protocol':10} {'CPU us/request':>15}")
    print(f"{'uvicorn':10} {base:15.2f}")
    print(f"{'guarded':10} {guarded:15.2f}  ({guarded / base:.2f}x, +{guarded - base:.2f} us)")


if __name__ == "__main__":
    main()
