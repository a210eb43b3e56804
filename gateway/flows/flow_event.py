"""The ``call.flow`` event: what one flow request learned, for the flows worker and the tenant.

One event per request Twilio makes to /twilio/voice/flow. Its id names the fact (call, flow,
step, phase, attempt), so a Twilio retry of the same request is the same event. The worker
sends the queued ``sms`` steps, collects ``inputs`` per step, and publishes ``call.bot.result``
when the call ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from gateway.errors import MalformedPayload
from gateway.flows.position import Position
from gateway.flows.render import Rendered
from gateway.providers.request import Params, first, raw_view
from schemas.events import CALL_FLOW, Event, event_id

PROVIDER: Final = "twilio"


def flow_event(
    tenant: str, position: Position, rendered: Rendered, params: Params, now: datetime
) -> Event:
    """The call.flow event of one verified flow request; MalformedPayload without CallSid."""
    call_sid = first(params, "CallSid")
    account = first(params, "AccountSid")
    if not call_sid or not account:
        raise MalformedPayload(
            "a flow request needs CallSid and AccountSid, got "
            f"{'CallSid' if call_sid else 'no CallSid'} and "
            f"{'AccountSid' if account else 'no AccountSid'}"
        )
    data = {
        "call_sid": call_sid,
        "account_sid": account,
        "request_id": position.request_id,
        "flow": position.flow,
        "step": position.step,
        "phase": position.phase,
        "attempt": position.attempt,
        "answered_by": first(params, "AnsweredBy"),
        "call_status": first(params, "CallStatus"),
        "to": first(params, "To"),
        "ran": list(rendered.ran),
        "inputs": dict(rendered.inputs),
        "sms": [{"step": step, "text": text} for step, text in rendered.sms],
        "ended": rendered.ended,
        "raw": raw_view(params),
    }
    fact = (position.flow, position.step, position.phase, str(position.attempt))
    return Event(
        id=event_id(PROVIDER, account, CALL_FLOW, call_sid, *fact),
        kind=CALL_FLOW,
        tenant=tenant,
        provider=PROVIDER,
        source=f"{PROVIDER}/{account}",
        subject=call_sid,
        time=now,
        data=data,
    )
