"""What the flows worker remembers of a bot call between its callbacks.

A call's facts arrive as separate events, possibly on different worker processes: the call is
placed (the command), then each flow request (``call.flow``: who answered, digits), then the
final status (``call.status``). The result needs all of them, so they are joined in the
database (HOOKLINE_DB_URL), never in process memory: a restarted or second worker sees the
same calls. Every write is idempotent, so a redelivered event changes nothing; a command's
request_id is claimed before its call is placed, so a redelivered command never dials twice.

Every key is scoped by tenant: a call is (tenant, CallSid), a sent text (tenant, CallSid,
step), a claim (tenant, request_id). A tenant holding its own Twilio token can sign a
callback naming another tenant's CallSid; keyed by the tenant the gateway verified, such an
event only ever reaches rows of its own tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BotCall:
    call_sid: str
    tenant: str
    request_id: str
    flow: str
    to: str
    from_: str
    answered_by: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    finished: bool = False


#: What a claim found: "new" (go ahead), "pending" (an earlier attempt died while placing the
#: call, which may or may not exist), or the SID of the call already placed for the request.
Claim = str


class BotCallStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def placed(self, call: BotCall) -> None:
        """Record a placed call (completing its claim); keeps what flow events may already
        have recorded."""

    async def stepped(self, call: BotCall) -> None:
        """Merge a flow request's facts (answered_by, inputs) into the call of ``call.tenant``,
        creating it when the flow event overtook the placement."""

    async def sms_sent(self, tenant: str, call_sid: str, step: str) -> bool:
        """True when the sms step of this tenant's call was already sent."""

    async def mark_sms_sent(self, tenant: str, call_sid: str, step: str) -> None: ...

    async def get(self, tenant: str, call_sid: str) -> BotCall | None:
        """The tenant's call, or None when it is not a bot call hookline placed for it."""

    async def owners(self, call_sid: str) -> tuple[str, ...]:
        """The tenants that have a call of this SID (one, unless one of them forged it)."""

    async def mark_finished(self, tenant: str, call_sid: str) -> None:
        """Its result is published; later status events for it change nothing."""

    async def claim(self, tenant: str, request_id: str) -> Claim:
        """Take a command's request_id before placing its call (commands are redelivered)."""

    async def release(self, tenant: str, request_id: str) -> None:
        """Give a claim back: the call was certainly not placed (Twilio refused, or 5xx)."""


class MemoryBotCallStore:
    """The store in process memory: for unit tests and the embedded ``hookline run``."""

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], BotCall] = {}  # (tenant, call SID) -> call
        self.sent: set[tuple[str, str, str]] = set()  # (tenant, call SID, step)
        self.claims: dict[tuple[str, str], str | None] = {}  # -> call SID once placed

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def placed(self, call: BotCall) -> None:
        self.claims[(call.tenant, call.request_id)] = call.call_sid
        key = (call.tenant, call.call_sid)
        known = self.calls.get(key)
        self.calls[key] = (
            call
            if known is None
            else replace(
                call, answered_by=known.answered_by, inputs=known.inputs, finished=known.finished
            )
        )

    async def stepped(self, call: BotCall) -> None:
        key = (call.tenant, call.call_sid)
        known = self.calls.get(key)
        if known is None:
            self.calls[key] = call
            return
        self.calls[key] = replace(
            known,
            answered_by=known.answered_by or call.answered_by,
            inputs={**known.inputs, **call.inputs},
        )

    async def sms_sent(self, tenant: str, call_sid: str, step: str) -> bool:
        return (tenant, call_sid, step) in self.sent

    async def mark_sms_sent(self, tenant: str, call_sid: str, step: str) -> None:
        self.sent.add((tenant, call_sid, step))

    async def get(self, tenant: str, call_sid: str) -> BotCall | None:
        return self.calls.get((tenant, call_sid))

    async def owners(self, call_sid: str) -> tuple[str, ...]:
        return tuple(sorted(tenant for tenant, sid in self.calls if sid == call_sid))

    async def mark_finished(self, tenant: str, call_sid: str) -> None:
        known = self.calls.get((tenant, call_sid))
        if known is not None:
            self.calls[(tenant, call_sid)] = replace(known, finished=True)

    async def claim(self, tenant: str, request_id: str) -> Claim:
        key = (tenant, request_id)
        if key in self.claims:
            return self.claims[key] or "pending"
        self.claims[key] = None
        return "new"

    async def release(self, tenant: str, request_id: str) -> None:
        self.claims.pop((tenant, request_id), None)
