"""Pure ASGI middleware: request context for logs, one log line per request, no 500 leaks.

Pure ASGI rather than BaseHTTPMiddleware: it adds no task or stream wrapping on the hot path
(https://www.starlette.io/middleware/#pure-asgi-middleware).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any, Final

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics

# A caller-supplied X-Request-Id is kept only if it is short and harmless in a log line.
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
LOG_STATE_KEY: Final = "hookline_log"
_QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})

logger = structlog.get_logger("hookline.http")  # cached on first use (gateway.log)


class ClientDisconnected(Exception):
    """The client went away before its body arrived: nothing to answer, nothing of ours failed.

    Not a HooklineError (no status, no ack decision): it is counted
    (``hookline_client_disconnects_total``) and logged once at info without a traceback, since
    a client hanging up mid-body is the client's business, not an error of the gateway's.
    """


def log_fields(scope: Scope) -> dict[str, Any]:
    """The dict an endpoint fills (tenant, kind, sid, event_id, reason) for the request's line."""
    fields: dict[str, Any] = scope.setdefault("state", {}).setdefault(LOG_STATE_KEY, {})
    return fields


class RequestContextMiddleware:
    """Binds request_id to the log context and writes exactly one line per HTTP request.

    Endpoints add fields through ``log_fields(scope)``. A response of 2xx logs
    ``callback_accepted``, 4xx ``callback_rejected`` with the reason, and an exception that
    escaped everything logs ``request_failed`` and answers a plain 500 (a bug, never expected).
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = incoming_request_id(scope) or new_request_id()
        fields = log_fields(scope)
        status = 0
        header_sent = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, header_sent
            if message["type"] == "http.response.start":
                status = message["status"]
                header_sent = True
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("ascii")),
                ]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except ClientDisconnected:
            client_went_away(scope, started, fields, self.metrics)
        except Exception:
            logger.exception("request_failed", path=scope.get("path"), **safe_fields(fields))
            if not header_sent:
                status = 500
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
        else:
            log_request(scope, status, started, fields, self.metrics)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)


# Request ids: a random 64-bit prefix per process and a counter, 32 hex digits like uuid4().hex.
# Unique across processes and restarts without a getrandom() system call per request (ids
# correlate log lines; they are not secrets).
_ID_PREFIX: Final = os.urandom(8).hex()
_id_counter = itertools.count(int.from_bytes(os.urandom(4), "big"))


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _REQUEST_ID.fullmatch(text) else None
    return None


def safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if key != "event"}


def log_request(
    scope: Scope,
    status: int,
    started: float,
    fields: dict[str, Any],
    metrics: GatewayMetrics | None,
) -> None:
    seconds = time.perf_counter() - started
    latency_ms = round(seconds * 1000, 3)
    path = scope.get("path", "")
    bound = logger.bind()  # the cached bound logger: no proxy lookup per call
    if path in _QUIET_PATHS:  # probes poll every few seconds: not worth a line each
        bound.debug("probe_answered", path=path, status=status, latency_ms=latency_ms)
        return
    if 200 <= status < 300:
        event, outcome = "callback_accepted", fields.pop("outcome", "accepted")
    elif status < 500:
        event, outcome = "callback_rejected", "rejected"
        fields.setdefault("reason", _default_reason(status))
    else:
        event, outcome = "callback_failed", fields.pop("outcome", "failed")
    log = bound.warning if outcome in ("rejected", "failed") else bound.info
    log(
        event,
        method=scope.get("method"),
        path=path,
        status=status,
        outcome=outcome,
        latency_ms=latency_ms,
        **safe_fields(fields),
    )
    if metrics is not None:
        metrics.callback(
            str(fields.get("provider", "none")),
            str(fields.get("kind", "none")),
            str(outcome),
            seconds,
        )
        if outcome == "rejected":
            metrics.rejected(str(fields["reason"]))


def client_went_away(
    scope: Scope, started: float, fields: dict[str, Any], metrics: GatewayMetrics | None
) -> None:
    """The one line of a request whose client hung up before sending its whole body."""
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    logger.bind().info(
        "client_disconnected",
        method=scope.get("method"),
        path=scope.get("path", ""),
        outcome="disconnected",
        latency_ms=latency_ms,
        **safe_fields(fields),
    )
    if metrics is not None:
        metrics.disconnected(str(fields.get("provider", "none")), str(fields.get("kind", "none")))


def _default_reason(status: int) -> str:
    return {404: "route_not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
