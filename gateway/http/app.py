"""The ASGI application factory: ``create_app(settings)``.

Nothing connects at import time; the publisher is opened in the lifespan and closed after the
last request (https://www.starlette.io/lifespan/).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway.broker.base import Publisher
from gateway.broker.factory import create_publisher, create_rpc_client
from gateway.broker.rpc import RpcClient
from gateway.clock import Clock, SystemClock
from gateway.durability import Durability
from gateway.flows.position import PositionSeal
from gateway.http.admin import AdminListener, create_admin_app
from gateway.http.dispatch import CallbackDispatch, RouteSpec
from gateway.http.endpoints import (
    KALEYRA_ROUTES,
    TWILIO_ROUTES,
    Ingress,
    callback_endpoint,
    kaleyra_reader,
    status_answer,
    twilio_reader,
)
from gateway.http.flow import FLOW_ROUTE, flow_endpoint
from gateway.http.middleware import RequestContextMiddleware
from gateway.http.twiml_answers import TwimlAnswers
from gateway.log import configure_logging
from gateway.metrics import MULTIPROC_ENV, REFRESH_SECONDS, GatewayMetrics, Metrics
from gateway.providers.kaleyra import KaleyraVerifier
from gateway.providers.twilio import TwilioVerifier
from gateway.settings import Settings, load_settings

logger = structlog.get_logger("hookline.http")


def create_app(
    settings: Settings,
    *,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
    rpc: RpcClient | None = None,
    shared_admin_port: bool = False,
    metrics: Metrics | None = None,
) -> Starlette:
    """Build the gateway app. ``publisher``, ``clock`` and the TwiML ``rpc`` client are
    injectable (tests; ``hookline run`` shares one embedded broker with its workers).

    The app's lifespan also serves the admin app (``app.state.admin_app``: /readyz,
    /metrics) on ``settings.admin_listen`` when that is set; ``shared_admin_port`` lets the
    processes of ``serve --workers N`` share that port. ``metrics`` is the registry to fill
    (``hookline run`` shares it with its workers; a multiprocess one for ``serve --workers N``).
    """
    tenant_ids = [tenant.id for tenant in settings.tenants]
    publisher = publisher or create_publisher(settings.amqp_url, tenant_ids)
    metrics = metrics or Metrics()
    gateway_metrics = GatewayMetrics(metrics)
    twiml = TwimlAnswers(rpc or create_rpc_client(settings.amqp_url), gateway_metrics)
    answers = {"/twilio/voice": twiml.voice, "/twilio/messaging": twiml.messaging}
    durability = Durability(
        publisher,
        settings.data_dir,
        publish_timeout=settings.publish_timeout_s,
        spool_max_events=settings.spool_max_events,
        spool_max_bytes=settings.spool_max_bytes,
    )
    ingress = Ingress(
        settings=settings,
        twilio=TwilioVerifier(settings.tenants),
        kaleyra=KaleyraVerifier(settings.tenants),
        publisher=publisher,
        durability=durability,
        clock=clock or SystemClock(),
    )

    def readiness() -> tuple[bool, dict[str, object]]:
        state = durability.broker_state
        spool = durability.spool
        return state == "up", {"broker": state, "spooled": spool.count() if spool else 0}

    admin_app = create_admin_app(readiness, metrics)
    admin = (
        AdminListener(
            admin_app, *settings.admin_listen, settings.client_limits, shared=shared_admin_port
        )
        if settings.admin_listen
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if admin is not None:
            await admin.start()
        acceptor = await durability.start()
        acceptor.on_confirmed = gateway_metrics.publish_confirm.observe
        # Other processes answer scrapes too: keep this one's scrape-time values current.
        refresher = (
            asyncio.create_task(_refresh_forever(metrics))
            if metrics.multiprocess_dir is not None
            else None
        )
        # Start-up objects (settings, tenants, key states, modules) live as long as the
        # process: move them out of the collector's generations so that the collections the
        # request path triggers do not scan them again and again.
        # https://docs.python.org/3/library/gc.html#gc.freeze
        gc.collect()
        gc.freeze()
        await twiml.rpc.start()
        spool = durability.spool
        if not settings.config_found:
            logger.warning(
                "config_missing",
                config=str(settings.config_path),
                detail="no config file and HOOKLINE_CONFIG unset: no tenants, "
                "every callback is refused (403)",
            )
        logger.info(
            "gateway_started",
            tenants=len(tenant_ids),
            pid=os.getpid(),
            broker=durability.broker_state,
            spool=str(spool.path) if spool else None,
            spooled=spool.count() if spool else 0,
            admin=f"{admin.host}:{admin.port}" if admin else None,
        )
        try:
            yield
        finally:
            if admin is not None:
                await admin.close()
            await twiml.rpc.close()
            counts = await durability.close()
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
                metrics.refresh()
                metrics.process_exited()
            logger.info("gateway_stopped", pid=os.getpid(), **counts)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    metrics.gauge(
        "hookline_broker_up",
        "1 while the broker confirms publishes, else 0.",
        lambda: float(durability.broker_state == "up"),
        mode="livemin",
    )
    metrics.gauge(
        "hookline_spool_events",
        "Events waiting in this process's spool.",
        lambda: float(durability.spool.count() if durability.spool else 0),
    )
    metrics.gauge(
        "hookline_spool_parked_events",
        "Spooled events set aside: returned as unroutable, or unreadable.",
        lambda: float(durability.replayer.parked if durability.replayer else 0),
    )
    metrics.gauge(
        "hookline_publish_uncertain_total",
        "Publishes sent but not confirmed (live and replayed): possible duplicates.",
        lambda: float(durability.uncertain),
        kind="counter",
    )
    metrics.gauge(
        "hookline_twiml_worker_answers_total",
        "Voice/messaging callbacks answered with a worker's TwiML.",
        lambda: float(twiml.replied),
        kind="counter",
    )
    metrics.gauge(
        "hookline_twiml_fallbacks_total",
        "Voice/messaging callbacks answered with the fallback (no worker reply).",
        lambda: float(twiml.fallbacks),
        kind="counter",
    )
    metrics.gauge(
        "hookline_twiml_late_replies_total",
        "Worker replies dropped because they came after their deadline.",
        lambda: float(twiml.rpc.late_replies),
        kind="counter",
    )

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return PlainTextResponse("Not Found", status_code=404)

    callbacks: list[RouteSpec] = [
        (
            path,
            ["POST"],
            callback_endpoint(
                "twilio",
                kind,
                ingress,
                twilio_reader(kind),
                answers.get(path, answer),
                gateway_metrics,
            ),
        )
        for path, kind, answer in TWILIO_ROUTES
    ]
    callbacks += [
        (
            path,
            methods,
            callback_endpoint(
                "kaleyra", kind, ingress, kaleyra_reader(kind), status_answer, gateway_metrics
            ),
        )
        for path, methods, kind in KALEYRA_ROUTES
    ]
    # The callback paths stay declared here so that other methods get Starlette's 405 (with
    # Allow); the methods they serve never reach Starlette (CallbackDispatch answers them).
    routes = [
        Route(path, _served_by_dispatch, methods=list(methods))
        for path, methods, _route in callbacks
    ]
    # Bot-call steps are few (one per step of a call) and go through Starlette's routing.
    seal = PositionSeal(settings.flow_secret) if settings.flow_secret else None
    routes.append(Route(FLOW_ROUTE, flow_endpoint(ingress, seal), methods=["POST"]))
    # Only the liveness probe beside the callbacks: the rest is on the admin listener.
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found})
    # No slash redirects: Starlette would build the Location from the Host header, and a
    # provider must get an answer at the URL it signed, not a 307 elsewhere.
    app.router.redirect_slashes = False
    app.add_middleware(RequestContextMiddleware, metrics=gateway_metrics)
    app.add_middleware(CallbackDispatch, routes=callbacks)  # outermost: before Starlette's
    app.state.ingress = ingress
    app.state.admin_app = admin_app
    return app


async def _refresh_forever(metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        metrics.refresh()


async def _served_by_dispatch(_request: Request) -> Response:
    raise RuntimeError("callback routes are served by gateway.http.dispatch.CallbackDispatch")


def app_from_environ() -> Starlette:
    """Factory for the processes of ``serve --workers N``: settings from os.environ; they
    share the admin listener's port and, through PROMETHEUS_MULTIPROC_DIR (set by the CLI),
    one set of metrics."""
    settings = load_settings(os.environ)
    configure_logging(settings.log_format, settings.log_level)
    directory = os.environ.get(MULTIPROC_ENV)
    metrics = Metrics(Path(directory)) if directory else None
    return create_app(settings, shared_admin_port=True, metrics=metrics)
