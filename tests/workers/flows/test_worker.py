"""The flows handlers: commands become paced calls, call events become one result each.

The real twilio client talks to the local fake Twilio API; events go through the embedded
broker; flow requests are rendered by the gateway's own renderer, as over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.errors import PoisonMessage, TransientError
from gateway.flows.flow_event import flow_event
from gateway.flows.model import FlowSettings
from gateway.flows.position import Position, PositionSeal
from gateway.flows.render import render
from gateway.secrets import Secret
from gateway.tenants import TenantRegistry
from schemas.events import Event
from schemas.topology import tenant_queue
from tests.support.fake_twilio import FakeTwilio
from tests.support.flows import REFILL_FLOW_TOML
from tests.support.logs import CapturedLogs
from tests.support.schema_check import assert_valid_event
from tests.support.server import serving
from workers.flows.bot_call_store import MemoryBotCallStore
from workers.flows.pacing import Pacer
from workers.flows.twilio_api import TwilioRestApi
from workers.flows.worker import BotCalls, BotCommands
from workers.handler import Delivery

ACCOUNT = "AC" + "a" * 32
TOKEN = "acme-token"
EVIL_ACCOUNT = "AC" + "e" * 32  # another tenant of the same platform, holding its own token
PUBLIC = "https://hooks.example.com"
SEAL = PositionSeal(Secret("seal"))
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TO = "+14155550123"
COMMAND = {
    "to": TO,
    "flow": "refill",
    "request_id": "rx-1",
    "vars": {"patient_name": "Ann", "pickup_time": "5 pm"},
}


@dataclass
class Rig:
    tenants: TenantRegistry
    fake: FakeTwilio
    broker: MemoryBroker
    commands: BotCommands
    calls: BotCalls
    store: MemoryBotCallStore
    exhausted: set[str]

    async def command(self, body: object, key: str = "acme.call.bot") -> object:
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        (result,) = await self.commands.handle([Delivery(payload, key)])
        return result

    def results(self, tenant: str = "acme") -> list[Event]:
        return [e for e in self.broker.drain(tenant_queue(tenant)) if e.kind == "call.bot.result"]

    async def step(
        self, call_sid: str, url: str, params: dict[str, str], tenant_id: str = "acme"
    ) -> str:
        """Twilio requests a step URL: render it as the gateway does, feed its call.flow event
        to the calls handler; return the TwiML."""
        token = parse_qs(urlsplit(url).query)["s"][0]
        position = SEAL.open(token, tenant=tenant_id, now=int(NOW.timestamp()))
        tenant = self.tenants.by_id(tenant_id)
        assert tenant is not None and isinstance(tenant.flows, FlowSettings)
        flow = tenant.flows.flows[position.flow]
        rendered = render(
            flow,
            position,
            params,
            lambda p: f"{PUBLIC}/twilio/voice/flow?s={SEAL.seal(p)}",
            f"{PUBLIC}/twilio/voice/status",
        )
        account = ACCOUNT if tenant_id == "acme" else EVIL_ACCOUNT
        full = {
            "CallSid": call_sid,
            "AccountSid": account,
            "To": TO,
            "From": "+14155550100",
            "Direction": "outbound-api",
            **params,
        }
        event = flow_event(tenant_id, position, rendered, {k: [v] for k, v in full.items()}, NOW)
        assert await self.calls.handle([Delivery(event.to_json(), event.routing_key)]) == [None]
        return rendered.twiml

    async def status(
        self, call_sid: str, status: str, tenant: str = "acme", **extra: object
    ) -> None:
        data = {"call_sid": call_sid, "status": status, "raw": {}, **extra}
        account = ACCOUNT if tenant == "acme" else EVIL_ACCOUNT
        event = Event(
            f"status-{tenant}-{call_sid}-{status}",
            "call.status",
            tenant,
            "twilio",
            f"twilio/{account}",
            call_sid,
            NOW,
            data,
        )
        assert await self.calls.handle([Delivery(event.to_json(), event.routing_key)]) == [None]


class SetBudget:
    """A budget gate answering from a set of "tenant/YYYY-MM" strings."""

    def __init__(self, used_up: set[str]) -> None:
        self.used_up = used_up

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def exhausted(self, tenant: str, month: str) -> bool:
        return f"{tenant}/{month}" in self.used_up


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    path = tmp_path / "hookline.toml"
    path.write_text(
        '[gateway]\nflow_secret = "x"\n[[tenants]]\nid = "acme"\n'
        f'[tenants.twilio]\naccount_sid = "{ACCOUNT}"\nauth_token = "{TOKEN}"\n'
        + REFILL_FLOW_TOML
        + '\n[[tenants]]\nid = "evil"\n[tenants.twilio]\n'
        f'account_sid = "{EVIL_ACCOUNT}"\nauth_token = "evil-token"\n' + REFILL_FLOW_TOML,
        "utf-8",
    )
    tenants = load_config(path, {}).tenants
    fake = FakeTwilio({ACCOUNT: TOKEN, EVIL_ACCOUNT: "evil-token"})
    broker = MemoryBroker()
    publisher = MemoryPublisher(broker, ["acme", "evil"])
    await publisher.start()
    store = MemoryBotCallStore()
    exhausted: set[str] = set()

    async with serving(fake.app()) as base:
        api = TwilioRestApi(api_base=base)
        clock = FakeClock(NOW)
        commands = BotCommands(
            tenants=tenants,
            api=api,
            store=store,
            publisher=publisher,
            seal=SEAL,
            public_url=PUBLIC,
            clock=clock,
            budget=SetBudget(exhausted),
        )
        calls = BotCalls(tenants=tenants, api=api, store=store, publisher=publisher, clock=clock)
        try:
            yield Rig(tenants, fake, broker, commands, calls, store, exhausted)
        finally:
            await api.close()


async def placed_call(rig: Rig) -> tuple[str, str]:
    assert await rig.command(COMMAND) is None
    (call,) = rig.fake.calls()
    return call.sid, call.params["Url"][0]


async def test_human_presses_1_gets_the_text_and_a_completed_result(rig: Rig) -> None:
    """Placed on the subaccount; greet, menu, 1: the sms is sent; completed with inputs."""
    sid, url = await placed_call(rig)
    call = rig.fake.calls()[0]
    assert call.account == ACCOUNT and call.params["From"] == ["+14155550100"]
    assert call.params["StatusCallback"] == [f"{PUBLIC}/twilio/voice/status"]
    twiml = await rig.step(sid, url, {"AnsweredBy": "human"})
    assert "<Gather" in twiml
    menu_url = twiml.split('action="')[1].split('"')[0].replace("&amp;", "&")
    await rig.step(sid, menu_url, {"Digits": "1"})
    (text,) = rig.fake.messages()
    assert text.params["Body"] == ["Acme Pharmacy: pickup confirmed for 5 pm."]
    assert text.params["To"] == [TO]
    await rig.step(sid, menu_url, {"Digits": "1"})  # Twilio retries the request: no 2nd text
    assert len(rig.fake.messages()) == 1
    await rig.status(sid, "completed", answered_by="human", duration_s=37)
    await rig.status(sid, "completed", answered_by="human", duration_s=37)  # redelivered
    (result,) = rig.results()
    assert_valid_event(result.to_dict())
    assert result.data == {
        "request_id": "rx-1",
        "call_sid": sid,
        "flow": "refill",
        "outcome": "completed",
        "answered_by": "human",
        "inputs": {"menu": "1"},
        "duration_s": 37,
        "reason": None,
        "detail": None,
    }


async def test_answering_machine_is_the_machine_outcome(rig: Rig) -> None:
    """AnsweredBy=machine_end_beep: the voicemail message plays; outcome machine."""
    sid, url = await placed_call(rig)
    twiml = await rig.step(sid, url, {"AnsweredBy": "machine_end_beep"})
    assert "prescription is ready" in twiml and "<Hangup" in twiml
    await rig.status(sid, "completed", duration_s=12)
    (result,) = rig.results()
    assert (result.data["outcome"], result.data["answered_by"]) == ("machine", "machine_end_beep")


@pytest.mark.parametrize("status", ["no-answer", "busy", "failed"])
async def test_unanswered_calls_end_with_their_status(rig: Rig, status: str) -> None:
    """No flow request at all: the final status alone gives the outcome."""
    sid, _url = await placed_call(rig)
    await rig.status(sid, "ringing")
    assert rig.results() == []
    await rig.status(sid, status)
    (result,) = rig.results()
    assert result.data["outcome"] == status and result.data["inputs"] == {}


async def test_a_redelivered_command_never_dials_twice(rig: Rig) -> None:
    """The same request_id again: no second call, no result."""
    await placed_call(rig)
    assert await rig.command(COMMAND) is None
    assert len(rig.fake.calls()) == 1 and rig.results() == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"flow": "nope"}, "unknown_flow"),
        ({"vars": {}}, "missing_variables"),
        ({"to": "12"}, "invalid_number"),
    ],
)
async def test_invalid_commands_publish_a_rejected_result(
    rig: Rig, change: dict[str, object], reason: str
) -> None:
    """A bad command is acked and answered with outcome rejected and its reason."""
    assert await rig.command({**COMMAND, **change}) is None
    (result,) = rig.results()
    assert (result.data["outcome"], result.data["reason"]) == ("rejected", reason)
    assert rig.fake.calls() == []


async def test_an_exhausted_budget_refuses_the_call(rig: Rig) -> None:
    """Budget used up this month: rejected with budget_exhausted, nothing dialled."""
    rig.exhausted.add("acme/2026-12")
    assert await rig.command(COMMAND) is None
    (result,) = rig.results()
    assert result.data["reason"] == "budget_exhausted" and rig.fake.calls() == []


async def test_twilio_refusing_the_number_is_a_rejected_result(rig: Rig) -> None:
    """A 400 from Twilio: outcome rejected, reason twilio_refused; the claim is released."""
    rig.fake.refuse.add(TO)
    assert await rig.command(COMMAND) is None
    (result,) = rig.results()
    assert result.data["reason"] == "twilio_refused" and rig.fake.calls() == []
    assert "21211" in result.data["detail"]
    rig.fake.refuse.clear()
    assert await rig.command(COMMAND) is None  # the same request_id may be sent again
    assert len(rig.fake.calls()) == 1


async def test_a_twilio_outage_is_retried_and_then_places_once(rig: Rig) -> None:
    """503: TransientError (the runtime retries); the retry places exactly one call."""
    rig.fake.unavailable = 1
    assert isinstance(await rig.command(COMMAND), TransientError)
    assert await rig.command(COMMAND) is None
    assert len(rig.fake.calls()) == 1


async def test_commands_for_unknown_tenants_are_dead_lettered(rig: Rig) -> None:
    """No tenant to report to: PoisonMessage, so a person sees it in hookline.dead."""
    result = await rig.command(COMMAND, key="ghost.call.bot")
    assert isinstance(result, PoisonMessage) and result.reason == "unknown_tenant"


async def test_a_crash_mid_placement_is_reported_not_redialled(rig: Rig) -> None:
    """A claim without a call (the worker died while placing) gives placement_interrupted."""
    await rig.store.claim("acme", "rx-1")
    assert await rig.command(COMMAND) is None
    (result,) = rig.results()
    assert result.data["reason"] == "placement_interrupted" and rig.fake.calls() == []


async def test_status_events_of_other_calls_are_ignored(rig: Rig) -> None:
    """A call hookline did not place (an incoming call) gives no result."""
    await rig.status("CA" + "9" * 32, "completed")
    assert rig.results() == []


async def test_garbage_on_the_calls_queue_is_poison(rig: Rig) -> None:
    """A body that is not an event is dead-lettered."""
    (result,) = await rig.calls.handle([Delivery(b"{", "acme.twilio.call.flow")])
    assert isinstance(result, PoisonMessage)


async def test_a_routed_incoming_call_texts_the_caller_from_the_tenant_number(rig: Rig) -> None:
    """A flow reached from a routing rule (Direction inbound): the sms step goes to the caller
    (From) from the number they called (To); its result names the call as its request id."""
    sid = "CA" + "7" * 32
    url = f"{PUBLIC}/twilio/voice/flow?s=" + SEAL.seal(
        Position(
            "acme",
            "refill",
            "menu",
            sid,
            int(NOW.timestamp()),
            "input",
            1,
            {"patient_name": "Ann", "pickup_time": "5 pm"},
        )
    )
    await rig.step(
        sid,
        url,
        {"Digits": "1", "Direction": "inbound", "From": "+14155550177", "To": "+18005551212"},
    )
    (text,) = rig.fake.messages()
    assert (text.params["To"], text.params["From"]) == (["+14155550177"], ["+18005551212"])
    await rig.status(sid, "completed", duration_s=20)
    (result,) = rig.results()
    assert (result.data["request_id"], result.data["outcome"], result.data["inputs"]) == (
        sid,
        "completed",
        {"menu": "1"},
    )


async def test_a_worker_stopped_while_waiting_for_its_slot_leaves_nothing_claimed(
    rig: Rig,
) -> None:
    """Cancelled in the pacer (a shutdown with a backlog): no claim is left behind, so the
    redelivered command is placed normally instead of being reported interrupted."""

    async def stopped(_seconds: float) -> None:
        raise asyncio.CancelledError

    rig.commands._pacer = Pacer(sleep=stopped)
    rig.commands._pacer.reserve(ACCOUNT, 1.0)  # the next slot is a second away: it must wait
    with pytest.raises(asyncio.CancelledError):
        await rig.command(COMMAND)
    assert rig.store.claims == {} and rig.fake.calls() == []
    rig.commands._pacer = Pacer()
    assert await rig.command(COMMAND) is None
    assert len(rig.fake.calls()) == 1 and rig.results() == []


async def test_another_tenants_status_for_the_call_publishes_nothing_for_it(
    rig: Rig, captured_logs: CapturedLogs
) -> None:
    """evil's signed status callback naming acme's CallSid gives acme no (forged) result and
    does not stop acme's real one; the mismatch is logged."""
    sid, _url = await placed_call(rig)
    await rig.status(sid, "no-answer", tenant="evil")
    assert rig.results() == [] and rig.results("evil") == []
    (warning,) = captured_logs.events("bot_call_tenant_mismatch")
    assert (warning["tenant"], warning["known_under"], warning["level"]) == (
        "evil",
        ["acme"],
        "warning",
    )
    await rig.status(sid, "completed", duration_s=30)
    (result,) = rig.results()
    assert (result.tenant, result.data["outcome"]) == ("acme", "completed")


async def test_another_tenants_flow_step_does_not_touch_the_call(rig: Rig) -> None:
    """evil's flow step naming acme's CallSid merges nothing into acme's call and does not
    mark acme's text sent: acme's callee still gets acme's text, acme's result its inputs."""
    sid, url = await placed_call(rig)
    evil_url = f"{PUBLIC}/twilio/voice/flow?s=" + SEAL.seal(
        Position(
            "evil",
            "refill",
            "menu",
            "rx-e",
            int(NOW.timestamp()),
            "input",
            1,
            {"patient_name": "Eve", "pickup_time": "never"},
        )
    )
    await rig.step(sid, evil_url, {"Digits": "1", "AnsweredBy": "machine_start"}, tenant_id="evil")
    twiml = await rig.step(sid, url, {"AnsweredBy": "human"})
    menu_url = twiml.split('action="')[1].split('"')[0].replace("&amp;", "&")
    await rig.step(sid, menu_url, {"Digits": "1"})
    acme_texts = [m for m in rig.fake.messages() if m.account == ACCOUNT]
    assert [m.params["Body"] for m in acme_texts] == [["Acme Pharmacy: pickup confirmed for 5 pm."]]
    await rig.status(sid, "completed", duration_s=30)
    (result,) = rig.results()
    assert (result.data["answered_by"], result.data["inputs"]) == ("human", {"menu": "1"})


async def test_an_event_whose_body_names_another_tenant_than_its_key_is_poison(
    rig: Rig,
) -> None:
    """An event under routing key acme.* whose body says evil (or the reverse) is dead-lettered
    as tenant_mismatch and acts on nothing."""
    sid, _url = await placed_call(rig)
    event = Event(
        "forged-1",
        "call.status",
        "acme",
        "twilio",
        f"twilio/{ACCOUNT}",
        sid,
        NOW,
        {"call_sid": sid, "status": "no-answer", "raw": {}},
    )
    (result,) = await rig.calls.handle([Delivery(event.to_json(), "evil.twilio.call.status")])
    assert isinstance(result, PoisonMessage) and result.reason == "tenant_mismatch"
    assert rig.results() == [] and rig.results("evil") == []
