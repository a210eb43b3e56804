"""Callback endpoints as pure ASGI apps: bytes in, verify, normalize, make safe, answer.

Everything provider-specific is pure code in gateway.providers; this module moves bytes between
ASGI and that code and decides the answer (docs/architecture.md#http-ingress). Callback routes run
outside Starlette's routing, request and response objects (gateway.http.dispatch sends them
here directly): on a 2-core box that machinery cost about a third of the CPU of a callback.
Each route does what RequestContextMiddleware does for the other routes: X-Request-Id, the
request_id log context, exactly one log line, the metrics, a plain 500 for a bug.

The answer of a route is a small pluggable piece (``gateway.http.replies.Answer``): given the
tenant, the event that was made safe and the scope, it returns the HTTP reply. Voice and
messaging answers await a worker (gateway.http.twiml_answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import structlog
from starlette.types import Receive, Scope, Send

from gateway.acceptance import Outcome
from gateway.broker.base import Publisher
from gateway.clock import Clock
from gateway.durability import Durability
from gateway.errors import (
    HooklineError,
    PayloadTooLarge,
    PublishError,
    RejectedCallback,
)
from gateway.http.middleware import (
    ClientDisconnected,
    client_went_away,
    incoming_request_id,
    log_fields,
    log_request,
    new_request_id,
    safe_fields,
)
from gateway.http.replies import (
    INTERNAL_ERROR,
    NO_CONTENT,
    SERVICE_UNAVAILABLE,
    Answer,
    HttpReply,
    text_reply,
    twiml_reply,
)
from gateway.http.urls import public_base, public_url, request_target
from gateway.metrics import GatewayMetrics
from gateway.providers.kaleyra import KaleyraVerifier
from gateway.providers.kaleyra_events import normalize as normalize_kaleyra
from gateway.providers.request import RawRequest
from gateway.providers.twilio import TwilioVerifier
from gateway.providers.twilio_events import normalize
from gateway.settings import Settings
from gateway.tenants import EMPTY_TWIML, Tenant
from schemas.events import CALL_INCOMING, CALL_STATUS, MESSAGE_INCOMING, MESSAGE_STATUS, Event

logger = structlog.get_logger("hookline.http")

# A rejection's public answer is the status's fixed reason phrase, never a detail: a 403 must
# not reveal which tenants exist, and no answer echoes what the caller sent (the detailed
# reason is in the log line).
_PUBLIC_MESSAGES: Final = {status.value: status.phrase for status in HTTPStatus}


@dataclass(frozen=True, slots=True)
class Ingress:
    """What every endpoint needs, built once by create_app."""

    settings: Settings
    twilio: TwilioVerifier
    kaleyra: KaleyraVerifier
    publisher: Publisher
    durability: Durability
    clock: Clock

    async def accept(self, event: Event, idempotency_token: str | None) -> Outcome:
        """Make the event safe (published or spooled); raise when neither is possible."""
        acceptor = self.durability.acceptor
        if acceptor is None:  # the lifespan has not run: a wiring bug, not a client error
            raise PublishError("gateway not started: no acceptor")
        return await acceptor.accept(event, idempotency_token)


def _header_map(scope: Scope) -> tuple[dict[str, str], str | None]:
    """Lower-case headers (the last of repeated ones) and the FIRST Content-Length, which is
    the one Starlette's ``request.headers.get`` returns."""
    headers: dict[str, str] = {}
    declared: str | None = None
    for name, value in scope["headers"]:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if declared is None and key == "content-length":
            declared = text
        headers[key] = text
    return headers, declared


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes before buffering them."""
    # ASCII digits only: str.isdigit() admits superscripts and other scripts int() refuses.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif kind == "http.disconnect":
            raise ClientDisconnected("client disconnected before the body was read")


async def raw_request(scope: Scope, receive: Receive, ingress: Ingress) -> RawRequest:
    """The callback as the provider sent it, with the public URL it signed."""
    headers, declared = _header_map(scope)
    path, query = request_target(scope)
    client = scope.get("client")
    trusted = client is not None and ingress.settings.is_trusted_proxy(client[0])
    settings = ingress.settings
    base = public_base(
        scope,
        headers,
        public_url=settings.public_url,
        trusted=trusted,
        forwarded_hosts=settings.forwarded_hosts,
    )
    body = await read_body(receive, declared, ingress.settings.max_body_bytes)
    return RawRequest(
        method=scope["method"],
        url=public_url(base, path, query),
        headers=headers,
        body=body,
        query=query,
    )


@dataclass(frozen=True, slots=True)
class Received:
    """A verified, normalized callback: whose it is, its event, its retry key if any."""

    tenant: Tenant
    event: Event
    idempotency_key: str | None


# Provider-specific part of an endpoint: verify the raw request and build its event, given the
# route's path parameters.
CallbackReader = Callable[[Mapping[str, str], RawRequest, Ingress], Received]


class CallbackRoute:
    """One callback kind as an ASGI app: verify, normalize, make safe, then answer."""

    __slots__ = ("answer", "ingress", "kind", "metrics", "provider", "read")

    def __init__(
        self,
        provider: str,
        kind: str,
        ingress: Ingress,
        read: CallbackReader,
        answer: Answer,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.provider, self.kind, self.ingress = provider, kind, ingress
        self.read, self.answer, self.metrics = read, answer, metrics

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, path_params: Mapping[str, str]
    ) -> None:
        started = time.perf_counter()
        request_id = (incoming_request_id(scope) or new_request_id()).encode("ascii")
        # In the scope too, so that an answer step adds to this request's one log line.
        fields = log_fields(scope)
        fields.update(provider=self.provider, kind=self.kind)
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id.decode("ascii"))
        status = 0
        try:
            reply = await self._reply(scope, receive, path_params, fields)
            status = reply.status
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*reply.raw_headers, (b"x-request-id", request_id)],
                }
            )
            await send({"type": "http.response.body", "body": reply.body})
        except ClientDisconnected:
            client_went_away(scope, started, fields, self.metrics)
        except Exception:
            logger.exception("request_failed", path=scope.get("path"), **safe_fields(fields))
            if not status:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"x-request-id", request_id),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": INTERNAL_ERROR.body})
        else:
            log_request(scope, status, started, fields, self.metrics)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def _reply(
        self, scope: Scope, receive: Receive, path_params: Mapping[str, str], fields: dict[str, Any]
    ) -> HttpReply:
        ingress = self.ingress
        try:
            received = self.read(path_params, await raw_request(scope, receive, ingress), ingress)
            event = received.event
            fields.update(tenant=received.tenant.id, sid=event.subject, event_id=event.id)
            outcome = await ingress.accept(event, received.idempotency_key)
        except RejectedCallback as exc:
            return rejection(exc, fields)
        except HooklineError as exc:  # neither the broker nor the spool took it: retry later
            fields.update(reason=exc.reason, error=str(exc), outcome="failed")
            return SERVICE_UNAVAILABLE
        fields["outcome"] = outcome
        return await self.answer(received.tenant, event, scope)


def callback_endpoint(
    provider: str,
    kind: str,
    ingress: Ingress,
    read: CallbackReader,
    answer: Answer,
    metrics: GatewayMetrics | None = None,
) -> CallbackRoute:
    """An endpoint for one callback kind: verify, normalize, make safe, then answer."""
    return CallbackRoute(provider, kind, ingress, read, answer, metrics)


def twilio_reader(kind: str) -> CallbackReader:
    """Twilio: the tenant comes from the signed AccountSid."""

    def read(_params: Mapping[str, str], raw: RawRequest, ingress: Ingress) -> Received:
        verified = ingress.twilio.verify(raw)
        event = normalize(kind, verified.tenant, verified.params, ingress.clock.now())
        return Received(verified.tenant, event, verified.idempotency_token)

    return read


def kaleyra_reader(kind: str) -> CallbackReader:
    """Kaleyra: the tenant is the ``{tenant}`` path segment, proven by its callback secret."""

    def read(params: Mapping[str, str], raw: RawRequest, ingress: Ingress) -> Received:
        verified = ingress.kaleyra.verify(params["tenant"], raw)
        event = normalize_kaleyra(kind, verified.tenant, verified.params, ingress.clock.now())
        return Received(verified.tenant, event, verified.idempotency_key)

    return read


def rejection(exc: HooklineError, fields: dict[str, object]) -> HttpReply:
    """The 4xx answer for a refused callback; the log line carries the detailed reason."""
    fields.update(reason=exc.reason, error=str(exc))
    status = exc.http_status
    return text_reply(status, _PUBLIC_MESSAGES.get(status, "Rejected"))


async def status_answer(_tenant: Tenant, _event: Event, _scope: Scope) -> HttpReply:
    # Twilio ignores the body of a status callback answer; 204 says so explicitly.
    return NO_CONTENT


async def voice_answer(tenant: Tenant, _event: Event, _scope: Scope) -> HttpReply:
    # Without a TwiML RPC client (see gateway.http.twiml_answers), the tenant's fallback TwiML.
    return twiml_reply(tenant.fallback_voice_twiml)


_EMPTY_TWIML: Final = twiml_reply(EMPTY_TWIML)


async def messaging_answer(_tenant: Tenant, _event: Event, _scope: Scope) -> HttpReply:
    return _EMPTY_TWIML


# Path, methods, kind (docs/architecture.md#kaleyra): delivery reports by GET (dlrurl) or POST.
KALEYRA_ROUTES: Final = (
    ("/kaleyra/{tenant}/sms/status", ["GET", "POST"], MESSAGE_STATUS),
    ("/kaleyra/{tenant}/sms/incoming", ["POST"], MESSAGE_INCOMING),
)

TWILIO_ROUTES: Final = (
    ("/twilio/voice", CALL_INCOMING, voice_answer),
    ("/twilio/voice/status", CALL_STATUS, status_answer),
    ("/twilio/messaging", MESSAGE_INCOMING, messaging_answer),
    ("/twilio/messaging/status", MESSAGE_STATUS, status_answer),
)
