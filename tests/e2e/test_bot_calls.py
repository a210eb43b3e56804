"""Bot calls end to end on the real RabbitMQ: a command becomes a call on the fake Twilio API,
signed step callbacks walk the refill flow through the gateway on a real socket, and the
flows worker publishes one call.bot.result per call to the tenant's queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import orjson
import pytest

from gateway.broker.factory import create_publisher
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.flows.position import PositionSeal
from gateway.http.app import create_app
from gateway.secrets import Secret
from gateway.settings import Settings
from schemas.events import CONTENT_TYPE, Event
from schemas.topology import (
    COMMANDS_EXCHANGE,
    DEAD_QUEUE,
    EVENTS_EXCHANGE,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    tenant_queue,
)
from tests.support.fake_twilio import FakeTwilio
from tests.support.flows import REFILL_FLOW_TOML
from tests.support.rabbit import RabbitClient
from tests.support.schema_check import assert_valid_event
from tests.support.server import serving
from tests.support.twilio_signing import signed_form_request
from tests.support.workers import eventually, running
from workers.amqp_transport import AmqpTransport
from workers.backends import create_store
from workers.flows.twilio_api import TwilioRestApi
from workers.flows.worker import BotCalls, BotCommands
from workers.runner import Runner

pytestmark = pytest.mark.broker

PUBLIC = "https://hooks.example.com"
SECRET = Secret("e2e-flow-secret")
TO = "+14155550123"


@dataclass
class Bot:
    """The running system, and the test's hands: publish commands, play Twilio."""

    tenant: str
    account: str
    token: str
    http: httpx.AsyncClient
    fake: FakeTwilio
    rabbit: RabbitClient
    channel: aio_pika.abc.AbstractChannel
    results: list[dict[str, Any]]

    async def command(self, request_id: str, **change: object) -> None:
        body = {
            "request_id": request_id,
            "flow": "refill",
            "to": TO,
            "vars": {"patient_name": "Ann", "pickup_time": "5 pm"},
            **change,
        }
        exchange = await self.channel.get_exchange(COMMANDS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(orjson.dumps(body)), routing_key=f"{self.tenant}.call.bot"
        )

    async def placed(self, count: int = 1) -> tuple[str, str]:
        await eventually(lambda: len(self.fake.calls()) >= count)
        call = self.fake.calls()[count - 1]
        assert call.account == self.account
        return call.sid, call.params["Url"][0]

    async def events(self) -> list[dict[str, Any]]:
        """Drain the tenant's queue; the results are kept for result()."""
        docs = [doc for _props, doc in await self.rabbit.read_all(tenant_queue(self.tenant))]
        self.results.extend(doc for doc in docs if doc["type"] == "io.hookline.call.bot.result")
        return docs

    async def twilio(
        self, url: str, params: dict[str, str], *, token: str | None = None
    ) -> httpx.Response:
        """POST as Twilio does: the public URL signed with the tenant's token."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        body, headers = signed_form_request(
            f"{PUBLIC}{target}",
            {
                "AccountSid": self.account,
                "ApiVersion": "2010-04-01",
                "Direction": "outbound-api",
                "From": "+14155550100",
                "To": TO,
                **params,
            },
            token or self.token,
        )
        return await self.http.post(target, content=body, headers=headers)

    async def step(self, url: str, call_sid: str, **params: str) -> ET.Element:
        response = await self.twilio(
            url, {"CallSid": call_sid, "CallStatus": "in-progress", **params}
        )
        assert response.status_code == 200, response.text
        return ET.fromstring(response.text)

    async def status(self, call_sid: str, status: str, sequence: int, **params: str) -> None:
        response = await self.twilio(
            f"{PUBLIC}/twilio/voice/status",
            {"CallSid": call_sid, "CallStatus": status, "SequenceNumber": str(sequence), **params},
        )
        assert response.status_code == 204, response.text

    async def result(self, request_id: str) -> dict[str, Any]:
        async def arrived() -> bool:
            await self.events()
            return any(r["data"]["request_id"] == request_id for r in self.results)

        await eventually(arrived, within=10)
        (found,) = [r for r in self.results if r["data"]["request_id"] == request_id]
        assert_valid_event(found)
        data: dict[str, Any] = found["data"]
        return data


def action_of(root: ET.Element) -> str:
    gather = root.find("Gather")
    assert gather is not None, ET.tostring(root)
    return gather.get("action", "")


@contextlib.asynccontextmanager
async def bot_systems(
    amqp_url: str, rabbit: RabbitClient, tmp_path: Path, calls_per_second: int = 10, count: int = 1
) -> AsyncIterator[list[Bot]]:
    """One gateway, fake Twilio and flows workers serving ``count`` tenants, each with its own
    subaccount and token: one Bot per tenant."""
    made = [
        (f"bot-{secrets.token_hex(3)}", "AC" + secrets.token_hex(16), secrets.token_hex(16))
        for _ in range(count)
    ]
    flows = REFILL_FLOW_TOML.replace(
        "calls_per_second = 1", f"calls_per_second = {calls_per_second}"
    )
    config = tmp_path / "hookline.toml"
    config.write_text(
        '[gateway]\nflow_secret = "unused"\n'
        + "".join(
            f'[[tenants]]\nid = "{tenant}"\n[tenants.twilio]\naccount_sid = "{account}"\n'
            f'auth_token = "{token}"\n{flows}\n'
            for tenant, account, token in made
        ),
        "utf-8",
    )
    tenants = load_config(config, {}).tenants
    settings = Settings(
        tenants=tenants, amqp_url=amqp_url, public_url=PUBLIC, data_dir=tmp_path, flow_secret=SECRET
    )
    fake = FakeTwilio({account: token for _tenant, account, token in made})
    app = create_app(settings)
    publisher = create_publisher(amqp_url, [tenant for tenant, _account, _token in made])
    store_url = f"sqlite:///{tmp_path / 'hookline.db'}"
    connection = await aio_pika.connect(amqp_url)
    async with serving(fake.app()) as fake_url, serving(app) as gateway_url:
        await publisher.start()
        api = TwilioRestApi(api_base=fake_url)
        commands = BotCommands(
            tenants=tenants,
            api=api,
            store=create_store(store_url),
            publisher=publisher,
            seal=PositionSeal(SECRET),
            public_url=PUBLIC,
            clock=SystemClock(),
        )
        calls = BotCalls(
            tenants=tenants,
            api=api,
            store=create_store(store_url),
            publisher=publisher,
            clock=SystemClock(),
        )
        try:
            async with (
                running(Runner(commands, AmqpTransport(amqp_url, "flows"))),
                running(Runner(calls, AmqpTransport(amqp_url, "flows-calls"))),
                httpx.AsyncClient(base_url=gateway_url) as http,
            ):
                channel = await connection.channel()
                yield [
                    Bot(tenant, account, token, http, fake, rabbit, channel, [])
                    for tenant, account, token in made
                ]
        finally:
            await api.close()
            await publisher.close()
            await connection.close()


@contextlib.asynccontextmanager
async def bot_system(
    amqp_url: str, rabbit: RabbitClient, tmp_path: Path, calls_per_second: int = 10
) -> AsyncIterator[Bot]:
    async with bot_systems(amqp_url, rabbit, tmp_path, calls_per_second) as (system,):
        yield system


@pytest.fixture
async def bot(amqp_url: str, rabbit: RabbitClient, tmp_path: Path) -> AsyncIterator[Bot]:
    async with bot_system(amqp_url, rabbit, tmp_path) as system:
        yield system


@pytest.fixture
async def two_bots(amqp_url: str, rabbit: RabbitClient, tmp_path: Path) -> AsyncIterator[list[Bot]]:
    """Two tenants on one system: the victim (first) and the attacker holding its own token."""
    async with bot_systems(amqp_url, rabbit, tmp_path, count=2) as systems:
        yield systems


async def test_human_answers_and_presses_1(bot: Bot) -> None:
    """Greeting and menu; 1 sends the pickup text; completed with the input and duration."""
    await bot.command("rx-1")
    sid, url = await bot.placed()
    call = bot.fake.calls()[0].params
    assert call["MachineDetection"] == ["Enable"]
    assert call["StatusCallback"] == [f"{PUBLIC}/twilio/voice/status"]
    root = await bot.step(url, sid, AnsweredBy="human")
    assert [child.tag for child in root] == ["Say", "Gather"]
    root = await bot.step(action_of(root), sid, Digits="1")
    assert [child.tag for child in root] == ["Say", "Hangup"]
    await eventually(lambda: len(bot.fake.messages()) == 1)
    assert bot.fake.messages()[0].params["Body"] == ["Acme Pharmacy: pickup confirmed for 5 pm."]
    await bot.status(sid, "completed", 3, CallDuration="37", AnsweredBy="human")
    data = await bot.result("rx-1")
    assert (data["outcome"], data["inputs"], data["duration_s"], data["call_sid"]) == (
        "completed",
        {"menu": "1"},
        37,
        sid,
    )


async def test_human_presses_2_and_is_transferred(bot: Bot) -> None:
    """2 dials the pharmacy; the result records the choice."""
    await bot.command("rx-2")
    sid, url = await bot.placed()
    root = await bot.step(action_of(await bot.step(url, sid, AnsweredBy="human")), sid, Digits="2")
    dial = root.find("Dial")
    assert dial is not None and dial.text == "+14155550199"
    await bot.status(sid, "completed", 3, CallDuration="95")
    data = await bot.result("rx-2")
    assert (data["outcome"], data["inputs"]) == ("completed", {"menu": "2"})
    assert bot.fake.messages() == []


async def test_answering_machine_hears_the_voicemail_message(bot: Bot) -> None:
    """AnsweredBy=machine_end_beep: the voicemail message, then hang up; outcome machine."""
    await bot.command("rx-3")
    sid, url = await bot.placed()
    root = await bot.step(url, sid, AnsweredBy="machine_end_beep")
    assert [child.tag for child in root] == ["Say", "Hangup"]
    say = root.find("Say")
    assert say is not None and "Your prescription is ready" in (say.text or "")
    await bot.status(sid, "completed", 3, CallDuration="14", AnsweredBy="machine_end_beep")
    data = await bot.result("rx-3")
    assert (data["outcome"], data["answered_by"]) == ("machine", "machine_end_beep")


async def test_no_answer(bot: Bot) -> None:
    """The phone rings out: no step is ever requested; outcome no-answer."""
    await bot.command("rx-4")
    sid, _url = await bot.placed()
    await bot.status(sid, "ringing", 1)
    await bot.status(sid, "no-answer", 2)
    data = await bot.result("rx-4")
    assert (data["outcome"], data["inputs"], data["call_sid"]) == ("no-answer", {}, sid)


async def test_wrong_digits_then_retry_then_default(bot: Bot) -> None:
    """9, then 8 (each re-asked with the reprompt), then silence: the default goodbye."""
    await bot.command("rx-5")
    sid, url = await bot.placed()
    root = await bot.step(url, sid, AnsweredBy="human")
    for digits in ("9", "8"):
        root = await bot.step(action_of(root), sid, Digits=digits)
        say = root.find("Gather/Say")
        assert say is not None and (say.text or "").startswith("Sorry, that was not a choice.")
    root = await bot.step(action_of(root), sid)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    say = root.find("Say")
    assert say is not None and "Please call the pharmacy" in (say.text or "")
    await bot.status(sid, "completed", 3, CallDuration="30")
    data = await bot.result("rx-5")
    assert (data["outcome"], data["inputs"]) == ("completed", {"menu": "8"})


async def test_a_tampered_step_url_is_refused(bot: Bot) -> None:
    """Jumping to the transfer step by editing the position: 403, even signed by Twilio."""
    await bot.command("rx-6")
    sid, url = await bot.placed()
    token = urlsplit(url).query.removeprefix("s=")
    payload, tag = token.split(".")
    forged = PositionSeal(Secret("attacker")).seal(
        PositionSeal(SECRET).open(token, tenant=bot.tenant, now=int(time.time())).at("transfer")
    )
    for bad in (f"{forged.split('.')[0]}.{tag}", f"{payload}.{forged.split('.')[1]}"):
        response = await bot.twilio(
            f"{PUBLIC}/twilio/voice/flow?s={bad}", {"CallSid": sid, "CallStatus": "in-progress"}
        )
        assert response.status_code == 403


async def test_invalid_command_gets_a_rejected_result(bot: Bot) -> None:
    """A command naming an unknown flow: no call, a rejected result with its reason."""
    await bot.command("rx-7", flow="nope")
    data = await bot.result("rx-7")
    assert (data["outcome"], data["reason"]) == ("rejected", "unknown_flow")
    assert bot.fake.calls() == []


async def test_twenty_commands_at_one_call_per_second(
    amqp_url: str, rabbit: RabbitClient, tmp_path: Path
) -> None:
    """20 commands at once on a 1 call/s subaccount: placed at least ~1 s apart, all placed."""
    async with bot_system(amqp_url, rabbit, tmp_path, calls_per_second=1) as bot:
        await asyncio.gather(*(bot.command(f"pace-{n}") for n in range(20)))
        await eventually(lambda: len(bot.fake.calls()) == 20, within=30)
        stamps = sorted(call.at for call in bot.fake.calls())
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    # The pacer books slots exactly 1 s apart (tests/workers/flows/test_pacing.py checks the
    # schedule itself). What the fake API sees adds each request's HTTP jitter: the first
    # request also opens the connection and was seen arriving up to ~80 ms late, which
    # shortens the first gap by as much. Allow 200 ms of it, never a faster rate.
    assert min(gaps) >= 0.8, gaps
    assert all(stamp - stamps[0] >= n - 0.2 for n, stamp in enumerate(stamps)), stamps
    assert stamps[-1] - stamps[0] >= 18.8


async def test_another_tenants_status_callback_cannot_end_the_call(
    two_bots: list[Bot], amqp_url: str
) -> None:
    """The attacker signs, with its own token, a no-answer status naming the victim's CallSid:
    the victim gets no forged result, and its real result still comes with its inputs."""
    victim, attacker = two_bots
    await victim.command("rx-v1")
    sid, url = await victim.placed()
    root = await victim.step(url, sid, AnsweredBy="human")
    await attacker.status(sid, "no-answer", 2)
    await victim.step(action_of(root), sid, Digits="1")
    await victim.status(sid, "completed", 3, CallDuration="40", AnsweredBy="human")
    data = await victim.result("rx-v1")
    assert (data["outcome"], data["inputs"], data["call_sid"]) == ("completed", {"menu": "1"}, sid)
    assert len(victim.results) == 1
    assert [d for d in await attacker.events() if d["type"] == "io.hookline.call.bot.result"] == []


async def test_another_tenants_flow_step_cannot_touch_the_call(two_bots: list[Bot]) -> None:
    """The attacker replays its own sealed step URL, signed with its token, with the victim's
    CallSid: 403 (the position is bound to the attacker's call); its own unbound entry URL
    with the victim's CallSid is served but merges nothing into the victim's call nor marks
    the victim's text sent."""
    victim, attacker = two_bots
    await victim.command("rx-v2")
    victim_sid, victim_url = await victim.placed()
    await attacker.command("rx-a2")
    attacker_sid, attacker_url = await attacker.placed(2)
    attacker_menu = action_of(await attacker.step(attacker_url, attacker_sid, AnsweredBy="human"))
    replayed = await attacker.twilio(
        attacker_menu, {"CallSid": victim_sid, "Digits": "1", "CallStatus": "in-progress"}
    )
    assert replayed.status_code == 403
    # The entry URL is unbound (sealed before Twilio named the call): served, but as the
    # attacker's own call under the attacker's tenant.
    entry = await attacker.step(attacker_url, victim_sid, AnsweredBy="machine_end_beep")
    assert entry.find("Hangup") is not None
    root = await victim.step(victim_url, victim_sid, AnsweredBy="human")
    await victim.step(action_of(root), victim_sid, Digits="1")
    await eventually(lambda: any(m.account == victim.account for m in victim.fake.messages()))
    await victim.status(victim_sid, "completed", 3, CallDuration="20", AnsweredBy="human")
    data = await victim.result("rx-v2")
    assert (data["outcome"], data["answered_by"], data["inputs"]) == (
        "completed",
        "human",
        {"menu": "1"},
    )


async def test_a_sealed_position_replayed_on_another_call_is_403(bot: Bot) -> None:
    """A step URL of one call (bound to its CallSid), posted with another CallSid: 403."""
    await bot.command("rx-8")
    sid, url = await bot.placed()
    menu = action_of(await bot.step(url, sid, AnsweredBy="human"))
    response = await bot.twilio(
        menu, {"CallSid": "CA" + "0" * 32, "Digits": "1", "CallStatus": "in-progress"}
    )
    assert response.status_code == 403


async def test_a_forged_event_with_another_tenants_body_is_dead_lettered(
    two_bots: list[Bot], amqp_url: str
) -> None:
    """A call.status event published straight to hookline.events under the attacker's routing
    key with the victim's tenant in its body: dead-lettered (tenant_mismatch), no result."""
    victim, attacker = two_bots
    await victim.command("rx-v3")
    sid, _url = await victim.placed()
    event = Event(
        id=str(uuid.uuid4()),
        kind="call.status",
        tenant=victim.tenant,
        provider="twilio",
        source=f"twilio/{victim.account}",
        subject=sid,
        time=datetime.now(UTC),
        data={"call_sid": sid, "status": "no-answer", "raw": {}},
    )
    exchange = await victim.channel.get_exchange(EVENTS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(event.to_json(), message_id=event.id, content_type=CONTENT_TYPE),
        routing_key=f"{attacker.tenant}.twilio.call.status",
    )

    async def dead() -> bool:
        found = [
            props
            for props, _doc in await victim.rabbit.read_all(DEAD_QUEUE)
            if props.message_id == event.id
        ]
        return bool(found) and found[0].headers[REASON_HEADER] == "tenant_mismatch"

    await eventually(dead, within=10)
    await victim.status(sid, "completed", 3, CallDuration="5")
    data = await victim.result("rx-v3")
    assert data["outcome"] == "completed" and len(victim.results) == 1


async def test_a_command_cannot_borrow_another_tenants_routing_key_by_header(
    two_bots: list[Bot],
) -> None:
    """The attacker publishes its own <attacker>.call.bot command carrying the runtime's
    original-routing-key header set to the victim's key: it stays the attacker's command
    (placed on the attacker's subaccount), never one of the victim's."""
    victim, attacker = two_bots
    body = {
        "request_id": "rx-h1",
        "flow": "refill",
        "to": TO,
        "vars": {"patient_name": "Ann", "pickup_time": "5 pm"},
    }
    exchange = await attacker.channel.get_exchange(COMMANDS_EXCHANGE)
    await exchange.publish(
        aio_pika.Message(
            orjson.dumps(body), headers={ROUTING_KEY_HEADER: f"{victim.tenant}.call.bot"}
        ),
        routing_key=f"{attacker.tenant}.call.bot",
    )
    await eventually(lambda: len(attacker.fake.calls()) == 1)
    assert [call.account for call in attacker.fake.calls()] == [attacker.account]
