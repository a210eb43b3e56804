"""What the callback dispatch (gateway.http.dispatch) saves over Starlette's router.

    .venv/bin/python -m benchmarks.dispatch [--requests 100000] [--repeats 5]

The callback routes are ASGI apps; they can be served by gateway.http.dispatch.CallbackDispatch
in front of Starlette (what hookline does) or mounted as ordinary Starlette routes
(``Route(path, asgi_app)``). This measures only that choice: the CPU to find and call a
callback route that does nothing, with hookline's route table (six callback routes, the flow
route and /healthz), under uvloop, median of the repeats, interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Mapping
from typing import Any

import uvloop
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.http.dispatch import CallbackDispatch

CALLBACK_PATHS = (
    ("/twilio/voice", ["POST"]),
    ("/twilio/voice/status", ["POST"]),
    ("/twilio/messaging", ["POST"]),
    ("/twilio/messaging/status", ["POST"]),
    ("/kaleyra/{tenant}/sms/status", ["GET", "POST"]),
    ("/kaleyra/{tenant}/sms/incoming", ["POST"]),
)


class NoopRoute:
    """A callback route that answers nothing: only the routing is measured."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, params: Mapping[str, str] | None = None
    ) -> None:
        return None


async def noop(scope: Scope, receive: Receive, send: Send) -> None:
    return None


def starlette_routed() -> ASGIApp:
    routes = [Route(path, NoopRoute(), methods=methods) for path, methods in CALLBACK_PATHS]
    routes += [
        Route("/twilio/voice/flow", noop, methods=["POST"]),
        Route("/healthz", noop, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.router.redirect_slashes = False
    return app.router


def dispatched() -> ASGIApp:
    rest = Starlette(
        routes=[
            Route("/twilio/voice/flow", noop, methods=["POST"]),
            Route("/healthz", noop, methods=["GET"]),
        ]
    )
    # NoopRoute stands in for gateway.http.endpoints.CallbackRoute (same call signature).
    specs: list[Any] = [(path, methods, NoopRoute()) for path, methods in CALLBACK_PATHS]
    return CallbackDispatch(rest.router, specs)


async def per_request(app: ASGIApp, path: str, requests: int) -> float:
    """CPU microseconds per request."""
    base: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Any) -> None:
        return None

    started = time.process_time()
    for _ in range(requests):
        await app(dict(base), receive, send)
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    async def run() -> None:
        for path in ("/twilio/messaging/status", "/kaleyra/acme/sms/status"):
            results: dict[str, list[float]] = {"starlette": [], "dispatch": []}
            for _ in range(args.repeats):
                results["starlette"].append(
                    await per_request(starlette_routed(), path, args.requests)
                )
                results["dispatch"].append(await per_request(dispatched(), path, args.requests))
            routed = statistics.median(results["starlette"])
            direct = statistics.median(results["dispatch"])
            print(
                f"{path:32} Starlette router {routed:5.2f} us, dispatch {direct:5.2f} us "
                f"(saves {routed - direct:.2f} us per callback)"
            )

    uvloop.run(run())


if __name__ == "__main__":
    main()
