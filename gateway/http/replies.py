"""HTTP answers of the callback routes, built without Starlette's Response objects.

A callback route (gateway.http.endpoints) sends an ``HttpReply`` straight over ASGI; its headers
are those Starlette's Response would send (content-length, a charset on text types). ``Answer`` is
the pluggable last step of a route: what Twilio hears once the event is safe (an empty 204,
the fallback TwiML, or a worker's TwiML over RPC, gateway.http.twiml_answers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from starlette.types import Scope

from gateway.tenants import Tenant
from schemas.events import Event

TWIML_MEDIA_TYPE: Final = "text/xml"


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An HTTP answer; ``raw_headers`` are built as Starlette's Response builds them."""

    status: int
    body: bytes = b""
    media_type: str | None = None

    @property
    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        if not (self.status < 200 or self.status in (204, 304)):
            headers.append((b"content-length", str(len(self.body)).encode("latin-1")))
        media_type = self.media_type
        if media_type is not None:
            if media_type.startswith("text/") and "charset=" not in media_type.lower():
                media_type += "; charset=utf-8"
            headers.append((b"content-type", media_type.encode("latin-1")))
        return headers


def text_reply(status: int, text: str) -> HttpReply:
    return HttpReply(status, text.encode(), "text/plain")


def twiml_reply(document: str | bytes) -> HttpReply:
    return HttpReply(
        200, document.encode() if isinstance(document, str) else document, TWIML_MEDIA_TYPE
    )


#: What a route answers once the event is safe: the tenant, its event and the request's ASGI
#: scope (its query string, and its log fields through gateway.http.middleware.log_fields).
Answer = Callable[[Tenant, Event, Scope], Awaitable[HttpReply]]

NO_CONTENT: Final = HttpReply(204)
SERVICE_UNAVAILABLE: Final = text_reply(503, "Service Unavailable")
INTERNAL_ERROR: Final = text_reply(500, "Internal Server Error")
