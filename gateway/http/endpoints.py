"""Starlette endpoints: turn an HTTP request into a RawRequest, verify, normalize, publish.

Everything provider-specific is pure code in gateway.providers; this module only moves bytes
between Starlette and that code and decides the HTTP answer (DESIGN section 4, contract).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Scope

from gateway.acceptance import Outcome
from gateway.broker.base import Publisher
from gateway.clock import Clock
from gateway.durability import Durability
from gateway.errors import HooklineError, PayloadTooLarge, PublishError, RejectedCallback
from gateway.http.middleware import log_fields
from gateway.http.twiml import TWIML_MEDIA_TYPE, Answer
from gateway.http.urls import public_base, public_url, request_target
from gateway.providers.kaleyra import KaleyraVerifier
from gateway.providers.kaleyra_events import normalize as normalize_kaleyra
from gateway.providers.request import RawRequest
from gateway.providers.twilio import TwilioVerifier
from gateway.providers.twilio_events import normalize
from gateway.settings import Settings
from gateway.tenants import EMPTY_TWIML, Tenant
from schemas.events import CALL_INCOMING, CALL_STATUS, MESSAGE_INCOMING, MESSAGE_STATUS, Event

logger = structlog.get_logger("hookline.http")

# The public answer of a 403 never says why: it must not reveal which tenants exist.
_PUBLIC_MESSAGES: Final = {403: "Forbidden"}


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


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes before buffering them."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def raw_request(request: Request, ingress: Ingress) -> RawRequest:
    """The callback as the provider sent it, with the public URL it signed."""
    scope = request.scope
    headers = {
        name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
    }
    path, query = request_target(scope)
    client = scope.get("client")
    trusted = client is not None and ingress.settings.is_trusted_proxy(client[0])
    base = public_base(scope, headers, public_url=ingress.settings.public_url, trusted=trusted)
    body = await read_body(request, ingress.settings.max_body_bytes)
    return RawRequest(
        method=scope["method"], url=public_url(base, path, query), headers=headers, body=body,
        query=query,
    )


@dataclass(frozen=True, slots=True)
class Received:
    """A verified, normalized callback: whose it is, its event, its retry key if any."""

    tenant: Tenant
    event: Event
    idempotency_key: str | None


# Provider-specific part of an endpoint: verify the raw request and build its event.
Reader = Callable[[Request, RawRequest, Ingress], Received]


def callback_endpoint(
    provider: str, kind: str, ingress: Ingress, read: Reader, answer: Answer,
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint for one callback kind: verify, normalize, make safe, then answer."""

    async def endpoint(request: Request) -> Response:
        fields = log_fields(request.scope)
        fields.update(provider=provider, kind=kind)
        try:
            received = read(request, await raw_request(request, ingress), ingress)
            event = received.event
            fields.update(tenant=received.tenant.id, sid=event.subject, event_id=event.id)
            outcome = await ingress.accept(event, received.idempotency_key)
        except RejectedCallback as exc:
            return rejection(exc, fields)
        except HooklineError as exc:  # neither the broker nor the spool took it: retry later
            fields.update(reason=exc.reason, error=str(exc), outcome="failed")
            return PlainTextResponse("Service Unavailable", status_code=503)
        fields["outcome"] = outcome
        return await answer(received.tenant, event, request.scope)

    return endpoint


def twilio_reader(kind: str) -> Reader:
    """Twilio: the tenant comes from the signed AccountSid."""

    def read(_request: Request, raw: RawRequest, ingress: Ingress) -> Received:
        verified = ingress.twilio.verify(raw)
        event = normalize(kind, verified.tenant, verified.params, ingress.clock.now())
        return Received(verified.tenant, event, verified.idempotency_token)

    return read


def kaleyra_reader(kind: str) -> Reader:
    """Kaleyra: the tenant is the ``{tenant}`` path segment, proven by its callback secret."""

    def read(request: Request, raw: RawRequest, ingress: Ingress) -> Received:
        verified = ingress.kaleyra.verify(request.path_params["tenant"], raw)
        event = normalize_kaleyra(kind, verified.tenant, verified.params, ingress.clock.now())
        return Received(verified.tenant, event, verified.idempotency_key)

    return read


def rejection(exc: HooklineError, fields: dict[str, object]) -> Response:
    """The 4xx answer for a refused callback; the log line carries the detailed reason."""
    fields.update(reason=exc.reason, error=str(exc))
    status = exc.http_status
    return PlainTextResponse(_PUBLIC_MESSAGES.get(status, str(exc)), status_code=status)


async def status_answer(_tenant: Tenant, _event: Event, _scope: Scope) -> Response:
    # Twilio ignores the body of a status callback answer; 204 says so explicitly.
    return Response(status_code=204)


async def voice_answer(tenant: Tenant, _event: Event, _scope: Scope) -> Response:
    # Without a TwiML RPC client (see gateway.http.twiml), the tenant's fallback TwiML.
    return Response(tenant.fallback_voice_twiml, media_type=TWIML_MEDIA_TYPE)


async def messaging_answer(_tenant: Tenant, _event: Event, _scope: Scope) -> Response:
    return Response(EMPTY_TWIML, media_type=TWIML_MEDIA_TYPE)


# Path, methods, kind. DESIGN section 4: delivery reports by GET (legacy dlrurl) or POST.
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
