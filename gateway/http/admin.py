"""The admin listener: everything operational, apart from what providers call.

The public listener serves the provider callbacks and ``GET /healthz``, nothing else: an
unauthenticated ``/metrics`` there let anyone tell which tenant ids and AccountSids exist from
the rejection counters, which the identical 403 was meant to hide. ``/readyz`` and
``/metrics`` (and the admin API to come) are served on a second socket,
HOOKLINE_ADMIN_LISTEN (default ``127.0.0.1:9180``, loopback only), by the same process: the
gateway's lifespan starts it beside the public server and stops it before draining.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.http.middleware import RequestContextMiddleware
from gateway.http.serving import bind, server_config
from gateway.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway.metrics import Metrics
from gateway.settings import ClientLimits

logger = structlog.get_logger("hookline.http")


def create_admin_app(
    readiness: Callable[[], tuple[bool, dict[str, object]]], metrics: Metrics
) -> Starlette:
    """The admin listener's app: ``readiness()`` gives (ready, details) for /readyz."""

    async def readyz(_request: Request) -> Response:
        ready, details = readiness()
        body = {"status": "ready" if ready else "not ready", **details}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(_request: Request) -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("Not Found", status_code=404)

    app = Starlette(
        routes=[
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={404: not_found},
    )
    app.router.redirect_slashes = False
    app.add_middleware(RequestContextMiddleware)
    return app


class AdminListener:
    """Serves the admin app on its own socket inside the gateway's event loop."""

    def __init__(
        self, app: Starlette, host: str, port: int, limits: ClientLimits, *, shared: bool = False
    ) -> None:
        self._app, self.host, self.port = app, host, port
        self._limits, self._shared = limits, shared
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        """Bind and serve; ConfigError (one clear sentence) when the address is taken."""
        sock = bind(self.host, self.port, shared=self._shared)
        config = server_config(self._app, self.host, self.port, self._limits, lifespan="off")
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        self.port = sock.getsockname()[1]
        logger.info("admin_listening", host=self.host, port=self.port)

    async def close(self) -> None:
        server, sock = self._server, self._socket
        self._server = self._socket = None
        if server is not None:
            await server.shutdown(sockets=[sock] if sock is not None else None)
