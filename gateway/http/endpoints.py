"""Starlette endpoints: turn an HTTP request into a RawRequest, verify, normalize, publish.

Everything provider-specific is pure code in gateway.providers; this module only moves bytes
between Starlette and that code and decides the HTTP answer (DESIGN section 4, contract).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from gateway.broker.base import Publisher
from gateway.clock import Clock
from gateway.errors import HooklineError, PayloadTooLarge, PublishError, RejectedCallback
from gateway.http.middleware import log_fields
from gateway.http.urls import public_base, public_url, request_target
from gateway.providers.request import RawRequest
from gateway.providers.twilio import TwilioVerifier
from gateway.providers.twilio_events import normalize
from gateway.settings import Settings
from gateway.tenants import EMPTY_TWIML, Tenant
from schemas.events import CALL_INCOMING, CALL_STATUS, MESSAGE_INCOMING, MESSAGE_STATUS

logger = structlog.get_logger("hookline.http")

TWIML_MEDIA_TYPE: Final = "text/xml"

# The public answer of a 403 never says why: it must not reveal which tenants exist.
_PUBLIC_MESSAGES: Final = {403: "Forbidden"}


@dataclass(frozen=True, slots=True)
class Ingress:
    """What every endpoint needs, built once by create_app."""

    settings: Settings
    verifier: TwilioVerifier
    publisher: Publisher
    clock: Clock


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


def twilio_endpoint(
    kind: str, ingress: Ingress, answer: Callable[[Tenant], Response]
) -> Callable[[Request], object]:
    """An endpoint for one Twilio callback kind: verify, normalize, publish, then answer."""

    async def endpoint(request: Request) -> Response:
        fields = log_fields(request.scope)
        fields.update(provider="twilio", kind=kind)
        try:
            raw = await raw_request(request, ingress)
            verified = ingress.verifier.verify(raw)
            tenant = verified.tenant
            fields["tenant"] = tenant.id
            event = normalize(kind, tenant, verified.params, ingress.clock.now())
            fields.update(sid=event.subject, event_id=event.id)
            await ingress.publisher.publish(event)
        except RejectedCallback as exc:
            return rejection(exc, fields)
        except PublishError as exc:
            fields.update(reason=exc.reason, error=str(exc), outcome="failed")
            return PlainTextResponse("Service Unavailable", status_code=503)
        fields["outcome"] = "published"
        return answer(tenant)

    return endpoint


def rejection(exc: HooklineError, fields: dict[str, object]) -> Response:
    """The 4xx answer for a refused callback; the log line carries the detailed reason."""
    fields.update(reason=exc.reason, error=str(exc))
    status = exc.http_status
    return PlainTextResponse(_PUBLIC_MESSAGES.get(status, str(exc)), status_code=status)


def status_answer(_tenant: Tenant) -> Response:
    # Twilio ignores the body of a status callback answer; 204 says so explicitly.
    return Response(status_code=204)


def voice_answer(tenant: Tenant) -> Response:
    # Until the TwiML workers answer, a caller hears the tenant's fallback TwiML.
    return Response(tenant.fallback_voice_twiml, media_type=TWIML_MEDIA_TYPE)


def messaging_answer(_tenant: Tenant) -> Response:
    return Response(EMPTY_TWIML, media_type=TWIML_MEDIA_TYPE)


TWILIO_ROUTES: Final = (
    ("/twilio/voice", CALL_INCOMING, voice_answer),
    ("/twilio/voice/status", CALL_STATUS, status_answer),
    ("/twilio/messaging", MESSAGE_INCOMING, messaging_answer),
    ("/twilio/messaging/status", MESSAGE_STATUS, status_answer),
)
