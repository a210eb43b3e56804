"""The TwiML worker: answers the gateway's RPC requests on ``hookline.twiml``.

Per message (batch 1) with many in flight (``concurrency``): each request is a call's or a
message's event; the answer is an ``RpcReply`` with the TwiML the tenant's routing rules give
(``workers.routing``). No retries: the caller is on the line now, and the gateway has already
answered with the fallback once the deadline passed; an unusable request is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Final

import structlog

from gateway.broker.rpc import QUERY_HEADER
from gateway.clock import Clock, SystemClock
from gateway.errors import PoisonMessage
from gateway.flows.position import Position, PositionSeal
from gateway.tenants import Tenant, TenantRegistry
from schemas.events import CALL_INCOMING, MESSAGE_INCOMING, Event
from schemas.topology import TWIML_QUEUE
from workers.handler import Delivery, Result, RpcReply
from workers.routing import FLOW_URL, STATUS_URL, Routed, VoiceRouter, route_message

log = structlog.get_logger("hookline.worker.twiml")

TWIML_CONTENT_TYPE: Final = "text/xml"


class TwimlHandler:
    """Handler of ``hookline worker twiml``."""

    name = "twiml"
    queue = TWIML_QUEUE
    batch_size = 1
    batch_wait_s = 0.0
    concurrency = 64
    retry_delays_s: tuple[int, ...] = ()

    def __init__(
        self,
        tenants: TenantRegistry,
        *,
        public_url: str | None = None,
        clock: Clock | None = None,
        seal: PositionSeal | None = None,
    ) -> None:
        self.tenants = tenants
        self.seal = seal
        self.clock = clock or SystemClock()
        # Absolute when the public URL is known; else relative to /twilio/voice.
        self.status_url = (
            f"{public_url.rstrip('/')}/twilio/voice/status" if public_url else STATUS_URL
        )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        return [self.answer(delivery) for delivery in batch]

    def answer(self, delivery: Delivery) -> Result:
        try:
            event = Event.from_json(delivery.body)
        except ValueError as exc:
            return PoisonMessage(f"TwiML request is not an event: {exc}", reason="unparsable")
        tenant = self.tenants.by_id(event.tenant)
        if tenant is None:
            return PoisonMessage(
                f"TwiML request for unknown tenant {event.tenant!r}", reason="unknown_tenant"
            )
        raw = event.data.get("raw")
        params = raw if isinstance(raw, dict) else {}
        routing = tenant.routing
        now = self.clock.now()
        if event.kind == CALL_INCOMING:
            query = _text(delivery.headers.get(QUERY_HEADER))
            if routing is None:
                routed = Routed(tenant.fallback_voice_twiml, None, None, "no routing")
            else:
                router = VoiceRouter(
                    tenant,
                    routing,
                    self.status_url,
                    partial(self.flow_url, tenant, event.subject, now),
                )
                routed = router.route(params, query, now)
        elif event.kind == MESSAGE_INCOMING:
            body = event.data.get("body")
            routed = route_message(
                tenant, routing, params, body if isinstance(body, str) else "", now
            )
        else:
            return PoisonMessage(
                f"TwiML requests are call.incoming or message.incoming, got {event.kind}",
                reason="unexpected_kind",
            )
        log.info(
            "twiml_routed",
            tenant=tenant.id,
            kind=event.kind,
            sid=event.subject,
            event_id=event.id,
            rule=routed.rule,
            action=routed.action,
            note=routed.note,
        )
        return RpcReply(routed.twiml.encode(), TWIML_CONTENT_TYPE)

    def flow_url(self, tenant: Tenant, call_sid: str, now: datetime, name: str) -> str | None:
        """The sealed first step of flow ``name``, relative to /twilio/voice; the call's SID
        stands in for the request id of a command (an incoming call has none)."""
        flow = tenant.flows.flows.get(name) if tenant.flows is not None else None
        if flow is None or self.seal is None:
            return None
        # Bound to the call from the start: the position is refused on any other CallSid.
        position = Position(
            tenant.id, name, flow.start, call_sid, int(now.timestamp()), call_sid=call_sid
        )
        return f"{FLOW_URL}?s={self.seal.seal(position)}"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value if isinstance(value, str) else ""
