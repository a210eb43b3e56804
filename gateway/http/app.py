"""The ASGI application factory: ``create_app(settings)``.

Nothing connects at import time; the publisher is opened in the lifespan and closed after the
last request (https://www.starlette.io/lifespan/).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.broker.base import Publisher
from gateway.broker.factory import create_publisher
from gateway.clock import Clock, SystemClock
from gateway.http.endpoints import TWILIO_ROUTES, Ingress, twilio_endpoint
from gateway.http.middleware import RequestContextMiddleware
from gateway.log import configure_logging
from gateway.providers.twilio import TwilioVerifier
from gateway.settings import Settings, load_settings

logger = structlog.get_logger("hookline.http")


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """Build the gateway app. ``publisher`` and ``clock`` are injectable for tests."""
    tenant_ids = [tenant.id for tenant in settings.tenants]
    ingress = Ingress(
        settings=settings,
        verifier=TwilioVerifier(settings.tenants),
        publisher=publisher or create_publisher(settings.amqp_url, tenant_ids),
        clock=clock or SystemClock(),
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await ingress.publisher.start()
        logger.info("gateway_started", tenants=len(tenant_ids), pid=os.getpid())
        try:
            yield
        finally:
            await ingress.publisher.close()
            logger.info("gateway_stopped", pid=os.getpid())

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_request: Request) -> Response:
        if ingress.publisher.ready:
            return JSONResponse({"status": "ready", "broker": "up"})
        return JSONResponse({"status": "not ready", "broker": "down"}, status_code=503)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("Not Found", status_code=404)

    routes = [
        Route(path, twilio_endpoint(kind, ingress, answer), methods=["POST"])
        for path, kind, answer in TWILIO_ROUTES
    ]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    # No slash redirects: Starlette would build the Location from the Host header, and a
    # provider must get an answer at the URL it signed, not a 307 elsewhere.
    app.router.redirect_slashes = False
    app.add_middleware(RequestContextMiddleware)
    app.state.ingress = ingress
    return app


def app_from_environ() -> Starlette:
    """Factory for ``uvicorn --factory`` worker processes: settings from os.environ."""
    settings = load_settings(os.environ)
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
