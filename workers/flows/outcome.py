"""The ``call.bot.result`` event: how a bot call ended, what the callee entered.

Outcomes: ``completed`` (a person answered and the call ended normally), ``machine`` (an
answering machine or fax took it; AnsweredBy of Twilio's answering machine detection),
``no-answer``, ``busy``, ``failed`` (also for a call canceled before it connected), and
``rejected`` for a command that was never placed. Call statuses:
https://www.twilio.com/docs/voice/api/call-resource#call-status-values
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final

from gateway.flows.model import MACHINE_ANSWERS
from schemas.events import CALL_BOT_RESULT, Event, event_id

PROVIDER: Final = "hookline"
SOURCE: Final = "hookline/flows"
OUTCOMES: Final = frozenset({"completed", "no-answer", "busy", "failed", "machine", "rejected"})
#: Final call statuses; anything else is a call still in progress.
FINAL_STATUSES: Final = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
_BY_STATUS: Final = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "failed",
}


def outcome_of(status: str, answered_by: str | None) -> str:
    """The outcome of a call that reached a final status."""
    if status not in FINAL_STATUSES:
        raise ValueError(
            f"expected a final call status ({', '.join(sorted(FINAL_STATUSES))}), got {status!r}"
        )
    if answered_by in MACHINE_ANSWERS or answered_by == "fax":
        return "machine"
    return _BY_STATUS[status]


def result_event(
    *,
    tenant: str,
    request_id: str | None,
    outcome: str,
    now: datetime,
    flow: str | None,
    call_sid: str | None = None,
    answered_by: str | None = None,
    inputs: Mapping[str, str] | None = None,
    duration_s: int | None = None,
    reason: str | None = None,
    detail: str | None = None,
) -> Event:
    """One call's result; the id is stable per (request, call) so a redelivery repeats it."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
    data = {
        "request_id": request_id,
        "call_sid": call_sid,
        "flow": flow,
        "outcome": outcome,
        "answered_by": answered_by,
        "inputs": dict(inputs or {}),
        "duration_s": duration_s,
        "reason": reason,
        "detail": detail,
    }
    subject = call_sid or request_id or "unknown"
    return Event(
        id=event_id(
            PROVIDER,
            tenant,
            CALL_BOT_RESULT,
            request_id or "",
            call_sid or "",
            outcome if call_sid is None else "",
        ),
        kind=CALL_BOT_RESULT,
        tenant=tenant,
        provider=PROVIDER,
        source=SOURCE,
        subject=subject,
        time=now,
        data=data,
    )
