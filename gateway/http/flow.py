"""POST /twilio/voice/flow: one step of a bot call, rendered here, published as ``call.flow``.

The request must pass Twilio's signature (the tenant's auth token, over the URL with its
``s=`` position) and hookline's own seal on the position (gateway.flows.position), made for
that same tenant, and for this call (a position is bound to its CallSid, the entry of a
placed call's start step excepted: gateway.flows.position). Then the step is rendered from
the flow in the config, its event is made safe like every callback (published or spooled),
and the TwiML is the answer. A position
that no longer fits the config (the flow or a step was removed while the call was live) gets
the tenant's fallback TwiML, so the callee hears a message and a hang-up, not an error tone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import AuthenticationFailed, HooklineError, RejectedCallback
from gateway.flows.flow_event import flow_event
from gateway.flows.position import Position, PositionSeal, require_call
from gateway.flows.render import render
from gateway.http.endpoints import Ingress, raw_request, rejection
from gateway.http.middleware import log_fields
from gateway.http.replies import SERVICE_UNAVAILABLE, TWIML_MEDIA_TYPE, HttpReply
from gateway.providers.request import first, parse_urlencoded
from schemas.events import CALL_FLOW

logger = structlog.get_logger("hookline.flows")

FLOW_ROUTE: Final = "/twilio/voice/flow"
STATUS_ROUTE: Final = "/twilio/voice/status"


def flow_endpoint(
    ingress: Ingress, seal: PositionSeal | None
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        fields = log_fields(request.scope)
        fields.update(provider="twilio", kind=CALL_FLOW)
        try:
            raw = await raw_request(request.scope, request.receive, ingress)
            verified = ingress.twilio.verify(raw)
            tenant = verified.tenant
            fields["tenant"] = tenant.id
            token = first(parse_urlencoded(raw.query, what="query string"), "s")
            if not token or seal is None:
                raise AuthenticationFailed(
                    "flow request without a sealed position (expected ?s=...)"
                    if seal
                    else "flow request, but no flow_secret is configured",
                    reason="flow_position_invalid",
                )
            now = ingress.clock.now()
            position = seal.open(token, tenant=tenant.id, now=int(now.timestamp()))
            flow = tenant.flows.flows.get(position.flow) if tenant.flows is not None else None
            call_sid = first(verified.params, "CallSid") or ""
            if flow is not None:  # a removed flow gets the fallback below, bound or not
                require_call(position, call_sid, flow.start)
            here = raw.url.partition("?")[0]
            status_url = here.removesuffix(FLOW_ROUTE) + STATUS_ROUTE
            params = {name: values[0] for name, values in verified.params.items() if values}

            def url(at: Position) -> str:
                # Every position sealed from here on is pinned to this call.
                return f"{here}?s={seal.seal(at.on_call(call_sid))}"

            try:
                if flow is None:
                    raise KeyError(f"tenant {tenant.id!r} has no flow {position.flow!r}")
                rendered = render(flow, position, params, url, status_url)
            except KeyError as exc:
                # The call is live: give the callee the fallback rather than an error tone.
                fields.update(
                    outcome="fallback", reason="flow_step_unavailable", error=str(exc.args[0])
                )
                logger.warning(
                    "flow_step_unavailable",
                    tenant=tenant.id,
                    flow=position.flow,
                    step=position.step,
                    error=str(exc.args[0]),
                )
                return Response(tenant.fallback_voice_twiml, media_type=TWIML_MEDIA_TYPE)
            event = flow_event(tenant.id, position, rendered, verified.params, now)
            fields.update(
                sid=event.subject, event_id=event.id, flow=position.flow, step=position.step
            )
            outcome = await ingress.accept(event, verified.idempotency_token)
        except RejectedCallback as exc:
            return _response(rejection(exc, fields))
        except HooklineError as exc:  # neither the broker nor the spool took it
            fields.update(reason=exc.reason, error=str(exc), outcome="failed")
            return _response(SERVICE_UNAVAILABLE)
        fields["outcome"] = outcome
        return Response(rendered.twiml, media_type=TWIML_MEDIA_TYPE)

    return endpoint


def _response(reply: HttpReply) -> Response:
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type)
