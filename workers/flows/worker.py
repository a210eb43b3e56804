"""The flows worker's two handlers: place bot calls, and turn their events into results.

``BotCommands`` consumes ``hookline.bot.commands``: it validates a ``call.bot`` command,
refuses it when the tenant's budget is exhausted, waits for the subaccount's next call slot
(``Pacer``), and places the call on the tenant's subaccount. ``BotCalls`` consumes
``hookline.bot.calls`` (``call.flow`` and ``call.status`` events): it records what the callee
did, sends the flow's texts, and publishes ``call.bot.result`` when the call reaches a final
status. They are separate queues so a backlog of paced commands never delays results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Final, Protocol

import structlog

from gateway.broker.base import Publisher
from gateway.clock import Clock
from gateway.errors import ConsumerError, PoisonMessage, PublishError, TransientError
from gateway.flows.position import Position, PositionSeal
from gateway.tenants import TenantRegistry
from schemas.events import CALL_FLOW, CALL_STATUS, Event
from schemas.topology import BOT_CALLS_QUEUE, BOT_COMMANDS_QUEUE
from workers.flows.bot_call_store import BotCall, BotCallStore
from workers.flows.command import BotCommand, Rejection, parse_command
from workers.flows.outcome import FINAL_STATUSES, outcome_of, result_event
from workers.flows.pacing import Pacer
from workers.flows.twilio_api import CallRefused, CallRequest, TwilioApi
from workers.handler import Delivery, Result, require_routed_tenant

log = structlog.get_logger("hookline.flows")

FLOW_PATH: Final = "/twilio/voice/flow"
STATUS_PATH: Final = "/twilio/voice/status"


class BudgetGate(Protocol):
    """Is a tenant's budget for a month (YYYY-MM) used up? (the usage ledger answers)"""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def exhausted(self, tenant: str, month: str) -> bool: ...


class BotCommands:
    """Handler of ``hookline.bot.commands``: one command at a time per slot, many in flight."""

    name = "flows"
    queue = BOT_COMMANDS_QUEUE
    batch_size = 1
    batch_wait_s = 0.0
    #: Commands in flight: each may sleep until its subaccount's next call slot.
    concurrency = 64

    def __init__(
        self,
        *,
        tenants: TenantRegistry,
        api: TwilioApi,
        store: BotCallStore,
        publisher: Publisher,
        seal: PositionSeal | None,
        public_url: str,
        clock: Clock,
        budget: BudgetGate | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._tenants, self._api, self._store = tenants, api, store
        self._publisher, self._seal, self._clock = publisher, seal, clock
        self._base = public_url.rstrip("/")
        self._budget = budget
        self._pacer = pacer or Pacer()

    async def start(self) -> None:
        await _open(self._store, self._publisher, self._budget)

    async def close(self) -> None:
        await _close(self._budget, self._publisher, self._store, self._api)

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        return [await _settled(self._one(delivery)) for delivery in batch]

    async def _one(self, delivery: Delivery) -> Result:
        command = parse_command(delivery.routing_key, delivery.body, self._tenants)
        if isinstance(command, Rejection):
            if command.tenant is None:  # nobody to tell: keep it for a person to look at
                return PoisonMessage(command.detail, reason=command.reason)
            await self._reject(
                command.tenant, command.request_id, None, command.reason, command.detail
            )
            return None
        tenant, account = command.tenant, command.tenant.twilio
        settings = tenant.flows
        if account is None or settings is None or self._seal is None:
            # parse_command checked the account and flows; the config demands a flow_secret
            raise PoisonMessage(f"tenant {tenant.id!r}: no Twilio account, flows or flow_secret")
        # The slot first: a backlog waits here, with nothing claimed yet, so a worker that
        # stops meanwhile leaves its commands to be placed by the next one.
        await self._pacer.wait(account.account_sid, settings.calls_per_second)
        month = self._clock.now().strftime("%Y-%m")  # budgets are per calendar month (UTC)
        if self._budget is not None and await self._budget.exhausted(tenant.id, month):
            await self._reject(
                tenant.id,
                command.request_id,
                command.flow.name,
                "budget_exhausted",
                f"tenant {tenant.id!r} has used its {month} budget",
            )
            return None
        claim = await self._store.claim(tenant.id, command.request_id)
        if claim == "pending":
            # An earlier attempt died between claiming and recording the call: Twilio may or
            # may not have placed it. Dialling again could ring the patient twice.
            await self._reject(
                tenant.id,
                command.request_id,
                command.flow.name,
                "placement_interrupted",
                "the worker stopped while placing this "
                "call; it may have been placed once: send a new request_id to "
                "call again",
            )
            return None
        if claim != "new":
            log.info(
                "command_duplicate", tenant=tenant.id, request_id=command.request_id, sid=claim
            )
            return None
        return await self._place(command, self._seal)

    async def _place(self, command: BotCommand, seal: PositionSeal) -> Result:
        tenant = command.tenant
        position = Position(
            tenant.id,
            command.flow.name,
            command.flow.start,
            command.request_id,
            int(self._clock.now().timestamp()),
            variables=command.variables,
        )
        request = CallRequest(
            tenant,
            command.to,
            command.from_,
            f"{self._base}{FLOW_PATH}?s={seal.seal(position)}",
            f"{self._base}{STATUS_PATH}",
        )
        try:
            call_sid = await self._api.place_call(request)
        except CallRefused as exc:
            await self._store.release(tenant.id, command.request_id)
            await self._reject(
                tenant.id, command.request_id, command.flow.name, "twilio_refused", str(exc)
            )
            return None
        except TransientError:
            await self._store.release(tenant.id, command.request_id)
            raise
        await self._store.placed(
            BotCall(
                call_sid,
                tenant.id,
                command.request_id,
                command.flow.name,
                command.to,
                command.from_,
            )
        )
        log.info(
            "bot_call_placed",
            tenant=tenant.id,
            request_id=command.request_id,
            sid=call_sid,
            flow=command.flow.name,
        )
        return None

    async def _reject(
        self, tenant: str, request_id: str | None, flow: str | None, reason: str, detail: str
    ) -> None:
        log.warning(
            "command_rejected", tenant=tenant, request_id=request_id, reason=reason, error=detail
        )
        await _publish(
            self._publisher,
            result_event(
                tenant=tenant,
                request_id=request_id,
                outcome="rejected",
                now=self._clock.now(),
                flow=flow,
                reason=reason,
                detail=detail,
            ),
        )


class BotCalls:
    """Handler of ``hookline.bot.calls``: flow steps and final statuses of bot calls."""

    name = "flows-calls"
    queue = BOT_CALLS_QUEUE
    batch_size = 1
    batch_wait_s = 0.0
    concurrency = 8

    def __init__(
        self,
        *,
        tenants: TenantRegistry,
        api: TwilioApi,
        store: BotCallStore,
        publisher: Publisher,
        clock: Clock,
    ) -> None:
        self._tenants, self._api, self._store = tenants, api, store
        self._publisher, self._clock = publisher, clock

    async def start(self) -> None:
        await _open(self._store, self._publisher)

    async def close(self) -> None:
        await _close(self._publisher, self._store, self._api)

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        return [await _settled(self._one(delivery)) for delivery in batch]

    async def _one(self, delivery: Delivery) -> Result:
        try:
            event = Event.from_json(delivery.body)
        except ValueError as exc:
            return PoisonMessage(f"not a hookline event: {exc}", reason="malformed_event")
        require_routed_tenant(delivery, event.tenant, f"flows: {event.kind} event")
        if event.kind == CALL_FLOW:
            await self._stepped(event)
        elif event.kind == CALL_STATUS:
            await self._status(event)
        return None

    async def _stepped(self, event: Event) -> None:
        data = event.data
        raw = data.get("raw")
        raw = raw if isinstance(raw, dict) else {}
        # The callee is To on a call hookline placed, From on an incoming call a routing rule
        # handed to a flow; a text goes to the callee from the tenant's number.
        # https://www.twilio.com/docs/voice/twiml#request-parameters (Direction)
        ours, theirs = str(raw.get("From") or ""), str(raw.get("To") or data.get("to") or "")
        if raw.get("Direction") == "inbound":
            ours, theirs = theirs, ours
        call = BotCall(
            event.subject,
            event.tenant,
            str(data.get("request_id") or ""),
            str(data.get("flow") or ""),
            theirs,
            ours,
            data.get("answered_by"),
            dict(data.get("inputs") or {}),
        )
        await self._mismatch(event)  # logged only: the writes below are the tenant's own
        await self._store.stepped(call)
        for sms in data.get("sms") or ():
            await self._send_sms(event.tenant, call, str(sms["step"]), str(sms["text"]))

    async def _send_sms(self, tenant_id: str, call: BotCall, step: str, text: str) -> None:
        if await self._store.sms_sent(tenant_id, call.call_sid, step):
            return
        tenant = self._tenants.by_id(tenant_id)
        if tenant is None:
            raise PoisonMessage(f"tenant {tenant_id!r} is not configured", reason="unknown_tenant")
        try:
            sid = await self._api.send_sms(tenant, call.to, call.from_, text)
        except CallRefused as exc:
            log.warning(
                "bot_sms_refused", tenant=tenant_id, sid=call.call_sid, step=step, error=str(exc)
            )
        else:
            log.info("bot_sms_sent", tenant=tenant_id, sid=sid, call_sid=call.call_sid, step=step)
        # Recorded after the send: a crash in between sends the text once more on redelivery,
        # which beats never sending it.
        await self._store.mark_sms_sent(tenant_id, call.call_sid, step)

    async def _status(self, event: Event) -> None:
        status = event.data.get("status")
        if status not in FINAL_STATUSES:
            return
        # By the verified tenant and the SID: another tenant's callback naming this CallSid
        # (its own token signs any CallSid) finds nothing here.
        call = await self._store.get(event.tenant, event.subject)
        if call is None:
            await self._mismatch(event)
            return  # not a call hookline placed for this tenant
        if call.finished:
            return  # its result is out already
        answered_by = event.data.get("answered_by") or call.answered_by
        duration = event.data.get("duration_s")
        await _publish(
            self._publisher,
            result_event(
                tenant=call.tenant,
                request_id=call.request_id,
                outcome=outcome_of(str(status), answered_by),
                now=self._clock.now(),
                flow=call.flow,
                call_sid=call.call_sid,
                answered_by=answered_by,
                inputs=call.inputs,
                duration_s=duration if isinstance(duration, int) else None,
            ),
        )
        # After the publish: a crash in between publishes the same result id again, which
        # consumers deduplicate; the other order could lose it.
        await self._store.mark_finished(call.tenant, call.call_sid)
        log.info("bot_call_finished", tenant=call.tenant, sid=call.call_sid, status=status)

    async def _mismatch(self, event: Event) -> None:
        """Warn when the event's CallSid is a call of another tenant: a forgery by one of
        them (CallSids are unique). Nothing of the other tenant's is read or changed."""
        others = [
            tenant for tenant in await self._store.owners(event.subject) if tenant != event.tenant
        ]
        if others:
            log.warning(
                "bot_call_tenant_mismatch",
                tenant=event.tenant,
                sid=event.subject,
                kind=event.kind,
                event_id=event.id,
                known_under=others,
            )


class _Resource(Protocol):
    async def close(self) -> None: ...


async def _open(
    store: BotCallStore, publisher: Publisher, budget: BudgetGate | None = None
) -> None:
    await store.open()
    try:
        await publisher.start()
        if budget is not None:
            await budget.open()
    except BaseException:
        await _close(publisher, store)
        raise


async def _close(*resources: _Resource | None) -> None:
    """Close each one even when an earlier one fails (the runtime calls close after a failed
    start too)."""
    errors: list[BaseException] = []
    for resource in resources:
        if resource is None:
            continue
        try:
            await resource.close()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


async def _settled(outcome: Awaitable[Result]) -> Result:
    """A delivery's own failure is its result, so one bad message never fails a batch."""
    try:
        return await outcome
    except ConsumerError as exc:
        return exc


async def _publish(publisher: Publisher, event: Event) -> None:
    try:
        await publisher.publish(event)
    except PublishError as exc:
        raise TransientError(f"cannot publish {event.kind} {event.id}: {exc}") from exc
