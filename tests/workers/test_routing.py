"""Routing rules applied to calls and messages; every TwiML checked against Twilio's verbs."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.flows.position import PositionSeal
from gateway.routing_config import Routing
from gateway.secrets import Secret
from gateway.tenants import EMPTY_TWIML, StaticTenantRegistry
from tests.support.routing import OFFICE_NUMBER, OTHER_NUMBER, routed_tenant
from tests.support.twiml_check import check_twiml
from workers.routing import VoiceRouter, route_message
from workers.twiml_worker import TwimlHandler

# Monday 23 November 2026: 10:00 and 20:00 in New York (UTC-5).
OPEN = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
CLOSED = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Sunday 20:00 in New York
TENANT = routed_tenant()


def router() -> VoiceRouter:
    routing = TENANT.routing
    assert isinstance(routing, Routing)
    return VoiceRouter(TENANT, routing)


def call(to: str = OFFICE_NUMBER, query: str = "", now: datetime = OPEN, **params: str) -> str:
    routed = router().route({"To": to, "From": "+14155550199", **params}, query, now)
    check_twiml(routed.twiml, "voice")
    return routed.twiml


def step_of(url: str) -> str:
    return urlsplit(url).query


def test_office_hours_call_gets_the_menu() -> None:
    """In office hours the office number gets the menu: one-digit Gather, then a Redirect."""
    root = check_twiml(call(), "voice")
    gather, redirect = list(root)
    assert gather.tag == "Gather" and gather.get("numDigits") == "1"
    assert gather.get("timeout") == "4" and gather.get("input") == "dtmf"
    say = gather.find("Say")
    assert say is not None and "Press 1" in (say.text or "")
    assert parse_qs(step_of(gather.get("action", ""))) == {
        "hl_step": ["menu:main"],
        "hl_try": ["1"],
    }
    assert redirect.tag == "Redirect" and redirect.text == gather.get("action")


def test_outside_hours_and_other_numbers_fall_to_the_next_rule() -> None:
    """Outside hours, or on another number, the catch-all rule answers (say, then voicemail)."""
    for twiml in (call(now=CLOSED), call(to=OTHER_NUMBER)):
        root = check_twiml(twiml, "voice")
        assert [el.tag for el in root] == ["Say", "Say", "Record", "Hangup"]
        assert root[0].text == "We are closed."


def test_menu_digit_runs_its_option() -> None:
    """Pressing 1 dials both sales numbers at once with the caller id and a dial step."""
    root = check_twiml(call(query="hl_step=menu%3Amain&hl_try=1", Digits="1"), "voice")
    (dial,) = list(root)
    assert dial.tag == "Dial" and dial.get("timeout") == "15"
    assert dial.get("callerId") == OFFICE_NUMBER
    assert sorted(n.text or "" for n in dial) == ["+14155550101", "+14155550102"]
    assert parse_qs(step_of(dial.get("action", ""))) == {"hl_step": ["dial:sales"]}


def test_menu_invalid_digit_retries_then_gives_up() -> None:
    """A wrong or missing digit replays the prompt after the retry prompt, then goes on."""
    retry = check_twiml(call(query="hl_step=menu%3Amain&hl_try=1", Digits="7"), "voice")
    assert [el.tag for el in retry] == ["Say", "Gather", "Redirect"]
    assert retry[0].text == "Try again."
    assert "hl_try=2" in retry[1].get("action", "")
    gave_up = check_twiml(call(query="hl_step=menu%3Amain&hl_try=2"), "voice")
    assert [el.tag for el in gave_up] == ["Say", "Record", "Hangup"]  # then = voicemail


def test_dial_outcome() -> None:
    """An answered dial hangs up afterwards; no answer goes to voicemail."""
    done = check_twiml(call(query="hl_step=dial%3Asales", DialCallStatus="completed"), "voice")
    assert [el.tag for el in done] == ["Hangup"]
    missed = check_twiml(call(query="hl_step=dial%3Asales", DialCallStatus="no-answer"), "voice")
    assert [el.tag for el in missed] == ["Say", "Record", "Hangup"]


def test_voicemail_records_with_status_callback() -> None:
    """Voicemail: Record with maxLength, a beep, a hangup step and the recording callback."""
    root = check_twiml(call(now=CLOSED), "voice")
    record = root.find("Record")
    assert record is not None
    assert record.get("maxLength") == "60" and record.get("playBeep") == "true"
    assert record.get("recordingStatusCallback") == "voice/status"
    assert record.get("recordingStatusCallbackMethod") == "POST"
    assert step_of(record.get("action", "")) == "hl_step=hangup"
    assert [el.tag for el in check_twiml(call(query="hl_step=hangup"), "voice")] == ["Hangup"]


def test_reject_and_flow() -> None:
    """A blocked number is rejected busy; the bot number is redirected to its flow's first
    step, sealed for the tenant and bound to the call's CallSid (the gateway refuses an
    unsealed position, or one replayed on another call)."""
    reject = check_twiml(call(to="+18005559999"), "voice")
    assert [(el.tag, el.get("reason")) for el in reject] == [("Reject", "busy")]
    routing = TENANT.routing
    assert isinstance(routing, Routing)
    seal = PositionSeal(Secret("routing-test-flow-secret"))
    handler = TwimlHandler(StaticTenantRegistry([TENANT]), seal=seal)
    flow_router = VoiceRouter(
        TENANT, routing, flow_url=partial(handler.flow_url, TENANT, "CA42", OPEN)
    )
    twiml = flow_router.route({"To": "+18005558888"}, "", OPEN).twiml
    (redirect,) = check_twiml(twiml, "voice")
    assert (redirect.tag, redirect.get("method")) == ("Redirect", "POST")
    assert (redirect.text or "").startswith("voice/flow?s=")
    token = parse_qs(urlsplit(redirect.text or "").query)["s"][0]
    position = seal.open(token, tenant="acme", now=int(OPEN.timestamp()))
    assert (position.flow, position.step, position.request_id, position.call_sid) == (
        "refill",
        "hello",
        "CA42",
        "CA42",
    )
    # Without a seal (no flow_secret) the call is ended rather than sent to a 403.
    assert [el.tag for el in check_twiml(call(to="+18005558888"), "voice")] == ["Hangup"]


def test_unknown_step_gets_the_fallback() -> None:
    """A step of an action that no longer exists ends with the tenant's fallback TwiML."""
    assert call(query="hl_step=menu%3Agone") == TENANT.fallback_voice_twiml


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("hours?", "Open 9 to 5."),
        ("Open today", "Open 9 to 5."),
        ("hello there", "Thanks, we got it."),
    ],
)
def test_sms_keywords_and_default(body: str, expected: str) -> None:
    """The first word picks a keyword rule, whatever its case; others get the default reply."""
    routing = TENANT.routing
    assert isinstance(routing, Routing)
    routed = route_message(TENANT, routing, {"To": OFFICE_NUMBER}, body, OPEN)
    root = check_twiml(routed.twiml, "messaging")
    assert [(el.tag, el.text) for el in root] == [("Message", expected)]


@pytest.mark.parametrize("body", ["STOP", "stop", " Unsubscribe ", "HELP", "start"])
def test_opt_keywords_are_left_to_twilio(body: str) -> None:
    """STOP/HELP/START and the other opt keywords get no reply (Twilio answers them)."""
    routing = TENANT.routing
    assert isinstance(routing, Routing)
    routed = route_message(TENANT, routing, {}, body, OPEN)
    assert routed.twiml == EMPTY_TWIML and routed.note.startswith("opt keyword")
    check_twiml(routed.twiml, "messaging")


def test_opt_out_type_parameter_is_recorded() -> None:
    """Twilio's OptOutType parameter (Advanced Opt-Out) also means no reply."""
    routing = TENANT.routing
    assert isinstance(routing, Routing)
    routed = route_message(TENANT, routing, {"OptOutType": "STOP"}, "arrêt", OPEN)
    assert routed.twiml == EMPTY_TWIML and routed.note == "opt keyword STOP"


def test_no_routing_no_reply() -> None:
    """A tenant without routing rules sends no SMS reply."""
    routed = route_message(TENANT, None, {}, "hello", OPEN)
    assert routed.twiml == EMPTY_TWIML


def test_checker_refuses_undocumented_twiml() -> None:
    """The allow-list checker itself rejects unknown verbs, attributes and nestings."""
    for bad in (
        "<Response><Shout>hi</Shout></Response>",
        '<Response><Say colour="red">hi</Say></Response>',
        "<Response><Gather><Dial>+14155550101</Dial></Gather></Response>",
        "<Response><Dial><Number>0800 CALL ME</Number></Dial></Response>",
        '<Response><Reject reason="maybe"/></Response>',
    ):
        with pytest.raises(AssertionError):
            check_twiml(bad, "voice")
