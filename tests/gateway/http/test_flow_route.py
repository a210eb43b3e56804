"""POST /twilio/voice/flow over real ASGI HTTP: steps answered, positions sealed per tenant."""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.flows.position import Position, PositionSeal
from gateway.secrets import Secret
from gateway.tenants import DEFAULT_FALLBACK_VOICE_TWIML, Tenant
from tests.gateway.http.test_rejections import expect_rejection
from tests.support.flows import REFILL_FLOW_TOML
from tests.support.gateway import (
    ACME_SID,
    ACME_TOKEN,
    GLOBEX_SID,
    GLOBEX_TOKEN,
    GatewayClient,
    gateway_client,
)
from tests.support.logs import CapturedLogs
from tests.support.schema_check import assert_valid_event

SECRET = Secret("flow-seal-secret")
SEAL = PositionSeal(SECRET)
NOW = int(FakeClock().now().timestamp())
CALL = "CA" + "c3" * 16
VARS = {"patient_name": "Ann", "pickup_time": "5 pm"}


def tenants(flow_toml: str = REFILL_FLOW_TOML) -> list[Tenant]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hookline.toml"
        path.write_text(
            f'[gateway]\nflow_secret = "x"\n[[tenants]]\nid = "acme"\n[tenants.twilio]\n'
            f'account_sid = "{ACME_SID}"\nauth_token = "{ACME_TOKEN}"\n{flow_toml}\n'
            f'[[tenants]]\nid = "globex"\n[tenants.twilio]\naccount_sid = "{GLOBEX_SID}"\n'
            f'auth_token = "{GLOBEX_TOKEN}"\n{flow_toml}',
            "utf-8",
        )
        return list(load_config(path, {}).tenants)


def at(
    step: str = "detect", tenant: str = "acme", phase: str = "enter", call_sid: str | None = None
) -> str:
    """A sealed position; past the entry of the start step it is bound to CALL by default."""
    bound = (
        call_sid if call_sid is not None else ("" if (step, phase) == ("detect", "enter") else CALL)
    )
    position = Position(tenant, "refill", step, "rx-1", NOW, variables=VARS, call_sid=bound)
    return "s=" + SEAL.seal(position.at(step, "input") if phase == "input" else position)


def call(**extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACME_SID,
        "CallSid": CALL,
        "CallStatus": "in-progress",
        "To": "+14155550123",
        "From": "+14155550100",
        **extra,
    }


async def post(
    gw: GatewayClient, query: str, params: dict[str, str], token: str = ACME_TOKEN
) -> ET.Element:
    response = await gw.post_signed("/twilio/voice/flow", params, token, query=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    return ET.fromstring(response.text)


async def test_answered_call_gets_the_menu_and_a_call_flow_event() -> None:
    """A human answers: greeting and Gather whose action is a sealed URL on the public host."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        root = await post(gw, at(), call(AnsweredBy="human"))
        (event,) = gw.tenant_events("acme")
    assert [child.tag for child in root] == ["Say", "Gather"]
    gather = root.find("Gather")
    assert gather is not None
    action = gather.get("action")
    assert action is not None
    assert action.startswith("https://hooks.example.com/twilio/voice/flow?s=")
    token = urlsplit(action).query.removeprefix("s=")
    menu = SEAL.open(token, tenant="acme", now=NOW)
    assert (menu.step, menu.call_sid) == ("menu", CALL)  # pinned to the call from now on
    assert_valid_event(event.to_dict())
    assert event.kind == "call.flow" and event.data["ran"] == ["detect", "greet", "menu"]


async def test_pressing_1_queues_the_text_in_the_event() -> None:
    """The Gather answer renders the next steps; the sms step is in the event for the worker."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        root = await post(gw, at("menu", phase="input"), call(Digits="1"))
        (event,) = gw.tenant_events("acme")
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert event.data["inputs"] == {"menu": "1"}
    assert event.data["sms"] == [
        {"step": "confirmed", "text": "Acme Pharmacy: pickup confirmed for 5 pm."}
    ]


async def test_a_tampered_step_url_is_403(captured_logs: CapturedLogs) -> None:
    """Twilio's signature is good (the attacker signs with the tenant token) but the seal is
    not: 403 flow_position_invalid, nothing published."""
    tag = at("menu", phase="input").split(".")[1]
    forged = SEAL.seal(Position("acme", "refill", "transfer", "rx-1", NOW, variables=VARS))
    query = f"s={forged.split('.')[0]}.{tag}"
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call(), query=query)
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")


async def test_another_tenants_position_is_403(captured_logs: CapturedLogs) -> None:
    """A position sealed for globex, in a request signed by acme: 403."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call(), query=at(tenant="globex"))
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")


async def test_a_request_without_a_position_is_403(captured_logs: CapturedLogs) -> None:
    """No s= at all: 403."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call())
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")


async def test_a_bad_twilio_signature_is_403_before_the_seal(
    captured_logs: CapturedLogs,
) -> None:
    """A valid position but signed with another token: signature_invalid."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call(), GLOBEX_TOKEN, query=at())
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")


async def test_a_flow_removed_from_the_config_gets_the_fallback() -> None:
    """The call is live but its flow is gone: the tenant's fallback TwiML, nothing published."""
    other = REFILL_FLOW_TOML.replace("[tenants.flows.refill]", "[tenants.flows.other]").replace(
        "tenants.flows.refill.steps", "tenants.flows.other.steps"
    )
    async with gateway_client(tenants(other), flow_secret=SECRET) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call(), query=at())
        assert response.status_code == 200 and response.text == DEFAULT_FALLBACK_VOICE_TWIML
        assert gw.total_messages() == 0


async def test_without_a_flow_secret_every_step_is_403(captured_logs: CapturedLogs) -> None:
    """A gateway with no flow_secret cannot open positions: 403."""
    async with gateway_client(tenants(), flow_secret=None) as gw:
        response = await gw.post_signed("/twilio/voice/flow", call(), query=at())
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")


async def test_a_position_replayed_on_another_call_is_403(captured_logs: CapturedLogs) -> None:
    """A position bound to one CallSid, posted (validly signed) with another CallSid: 403;
    with its own CallSid: served."""
    other = "CA" + "0d" * 16
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed(
            "/twilio/voice/flow", call(CallSid=other, Digits="1"), query=at("menu", phase="input")
        )
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")
        assert gw.total_messages() == 0
        await post(gw, at("menu", phase="input"), call(Digits="1"))


async def test_an_unbound_position_serves_only_the_entry_of_the_start_step(
    captured_logs: CapturedLogs,
) -> None:
    """A position without a CallSid past the start step's entry (the menu input) is 403: only
    a placed call's first URL may be unbound."""
    async with gateway_client(tenants(), flow_secret=SECRET) as gw:
        response = await gw.post_signed(
            "/twilio/voice/flow", call(Digits="2"), query=at("menu", phase="input", call_sid="")
        )
        await expect_rejection(gw, captured_logs, response, 403, "flow_position_invalid")
