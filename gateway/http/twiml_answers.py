"""The TwiML answer of /twilio/voice and /twilio/messaging: ask the workers, else fall back.

The endpoint has already made the event safe (published or spooled); this step only chooses
what Twilio hears. It asks the TwiML workers over the broker (``gateway.broker.rpc``) and waits
up to the tenant's deadline (``[tenants.routing] answer_timeout_ms``, default 3 s, at most 10 s,
well inside Twilio's 15 s). Any other outcome - no reply in time, a returned or refused
request, no broker connection, a worker that failed on the request (its error reply,
``worker_error``, comes at once), a reply that is not TwiML - gives the tenant's fallback: its
``fallback_voice_twiml`` for a call, an empty ``<Response/>`` (no reply SMS) for a message. The
request's log line says which (``twiml`` = ``worker`` or ``fallback``, ``twiml_reason``).
"""

from __future__ import annotations

import time

from starlette.types import Scope

from gateway.broker.rpc import RpcClient, RpcResult
from gateway.http.middleware import log_fields
from gateway.http.replies import TWIML_MEDIA_TYPE, HttpReply, twiml_reply
from gateway.metrics import GatewayMetrics
from gateway.routing_config import answer_timeout_s
from gateway.tenants import EMPTY_TWIML, Tenant
from schemas.events import Event


class TwimlAnswers:
    """The voice and messaging answer steps on one RPC client, with their counters."""

    def __init__(self, rpc: RpcClient, metrics: GatewayMetrics | None = None) -> None:
        self.rpc = rpc
        self.metrics = metrics
        self.replied = 0
        self.fallbacks = 0

    async def voice(self, tenant: Tenant, event: Event, scope: Scope) -> HttpReply:
        return await self._answer(tenant, event, scope, tenant.fallback_voice_twiml)

    async def messaging(self, tenant: Tenant, event: Event, scope: Scope) -> HttpReply:
        return await self._answer(tenant, event, scope, EMPTY_TWIML)

    async def _answer(self, tenant: Tenant, event: Event, scope: Scope, fallback: str) -> HttpReply:
        started = time.monotonic()
        query = scope.get("query_string", b"").decode("latin-1")
        result = await self.rpc.request(
            event, query=query, timeout_s=answer_timeout_s(tenant.routing)
        )
        fields = log_fields(scope)
        seconds = time.monotonic() - started
        fields["twiml_ms"] = round(seconds * 1000, 2)
        body = _twiml(result)
        if self.metrics is not None:
            self.metrics.twiml_answered("worker" if body is not None else "fallback", seconds)
        if body is None:
            self.fallbacks += 1
            reason = result.outcome if result.outcome != "replied" else "reply_not_twiml"
            fields.update(twiml="fallback", twiml_reason=reason, twiml_detail=result.detail)
            return twiml_reply(fallback)
        self.replied += 1
        fields["twiml"] = "worker"
        return twiml_reply(body)


def _twiml(result: RpcResult) -> bytes | None:
    """The reply body when it is a TwiML document (a broken worker must not reach Twilio)."""
    if result.outcome != "replied" or result.body is None:
        return None
    if (result.content_type or "").partition(";")[0].strip() != TWIML_MEDIA_TYPE:
        return None
    head = result.body.lstrip()[:200]
    return result.body if head.startswith((b"<?xml", b"<Response")) else None
