"""Step TwiML: the refill flow rendered for each way a call can go, parsed back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.config import load_config
from gateway.flows.model import Flow, FlowSettings
from gateway.flows.position import Position, PositionSeal
from gateway.flows.render import Rendered, render
from gateway.secrets import Secret
from tests.support.flows import REFILL_FLOW_TOML

NOW = 1_800_000_000
SEAL = PositionSeal(Secret("s"))
BASE = "https://hooks.example.com/twilio/voice/flow?s="
STATUS = "https://hooks.example.com/twilio/voice/status"
VARS = {"patient_name": "Ann <b>&amp;</b>", "pickup_time": "5 pm"}


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Flow:
    path: Path = tmp_path_factory.mktemp("cfg") / "hookline.toml"
    path.write_text(
        '[gateway]\nflow_secret = "x"\n[[tenants]]\nid = "acme"\n' + REFILL_FLOW_TOML, "utf-8"
    )
    tenant = load_config(path, {}).tenants.by_id("acme")
    assert tenant is not None and isinstance(tenant.flows, FlowSettings)
    return tenant.flows.flows["refill"]


def url(position: Position) -> str:
    return BASE + SEAL.seal(position)


def start() -> Position:
    return Position("acme", "refill", "detect", "req-1", NOW, variables=VARS)


def verbs(rendered: Rendered) -> list[str]:
    return [child.tag for child in ET.fromstring(rendered.twiml)]


def position_in(action: str) -> Position:
    token = parse_qs(urlsplit(action).query)["s"][0]
    return SEAL.open(token, tenant="acme", now=NOW)


def gather_of(rendered: Rendered) -> ET.Element:
    found = ET.fromstring(rendered.twiml).find("Gather")
    assert found is not None
    return found


def test_human_answers_hears_greeting_and_the_menu(flow: Flow) -> None:
    """AnsweredBy=human: branch to greet, say it, then wait in the menu's Gather."""
    out = render(flow, start(), {"AnsweredBy": "human"}, url, STATUS)
    assert out.ran == ("detect", "greet", "menu")
    assert verbs(out) == ["Say", "Gather"]
    gather = gather_of(out)
    assert gather.get("numDigits") == "1" and gather.get("actionOnEmptyResult") == "true"
    assert gather.get("input") == "dtmf" and gather.get("timeout") == "5"
    action = position_in(gather.get("action", ""))
    assert (action.step, action.phase, action.attempt) == ("menu", "input", 1)
    assert not out.ended


def test_variables_are_interpolated_as_text_not_markup(flow: Flow) -> None:
    """A variable holding XML stays text: the Say element holds it verbatim, no new elements."""
    out = render(flow, start(), {"AnsweredBy": "human"}, url, STATUS)
    say = ET.fromstring(out.twiml).find("Say")
    assert say is not None and list(say) == []
    assert say.text == "Hello Ann <b>&amp;</b>, this is Acme Pharmacy. Your prescription is ready."
    assert say.get("voice") == "Polly.Joanna"


def test_pressing_1_confirms_sends_the_sms_and_hangs_up(flow: Flow) -> None:
    """Digits=1 at the menu: the sms step is queued for the worker, thanks said, call ended."""
    out = render(flow, start().at("menu", "input"), {"Digits": "1"}, url, STATUS)
    assert out.ran == ("confirmed", "thanks", "bye")
    assert out.sms == (("confirmed", "Acme Pharmacy: pickup confirmed for 5 pm."),)
    assert out.inputs == {"menu": "1"}
    assert verbs(out) == ["Say", "Hangup"] and out.ended


def test_pressing_2_transfers_to_the_pharmacy(flow: Flow) -> None:
    """Digits=2: Dial the pharmacy with the step's timeout; nothing after it, so Hangup."""
    out = render(flow, start().at("menu", "input"), {"Digits": "2"}, url, STATUS)
    root = ET.fromstring(out.twiml)
    dial = root.find("Dial")
    assert dial is not None and dial.get("timeout") == "20" and dial.text == "+14155550199"
    assert verbs(out) == ["Dial", "Hangup"] and out.ended


@pytest.mark.parametrize(
    "answered_by", ["machine_end_beep", "machine_start", "machine_end_silence"]
)
def test_an_answering_machine_gets_the_voicemail_message(flow: Flow, answered_by: str) -> None:
    """AnsweredBy=machine_*: the voicemail message is said and the call ends."""
    out = render(flow, start(), {"AnsweredBy": answered_by}, url, STATUS)
    assert out.ran == ("detect", "voicemail", "bye")
    assert verbs(out) == ["Say", "Hangup"]


def test_wrong_digits_retry_with_the_reprompt_then_take_the_default(flow: Flow) -> None:
    """Digits=9 twice re-asks (attempts 2 and 3, with the reprompt); the third miss says goodbye."""
    at = start().at("menu", "input")
    first = render(flow, at, {"Digits": "9"}, url, STATUS)
    gather = gather_of(first)
    say = gather.find("Say")
    assert say is not None and (say.text or "").startswith("Sorry, that was not a choice.")
    second_at = position_in(gather.get("action", ""))
    assert second_at.attempt == 2
    second = render(flow, second_at, {}, url, STATUS)  # a timeout: no Digits at all
    third_at = position_in(gather_of(second).get("action", ""))
    assert third_at.attempt == 3
    last = render(flow, third_at, {"Digits": "7"}, url, STATUS)
    assert last.ran == ("goodbye", "bye") and last.ended
    assert last.inputs == {"menu": "7"}


def test_no_detection_result_counts_as_human(flow: Flow) -> None:
    """Without AnsweredBy (detection off or unknown) the branch takes the human path."""
    assert render(flow, start(), {}, url, STATUS).ran[:2] == ("detect", "greet")


def test_a_missing_variable_is_a_key_error(flow: Flow) -> None:
    """A position without a variable the text needs raises KeyError naming it."""
    bare = Position("acme", "refill", "detect", "r", NOW)
    with pytest.raises(KeyError, match="patient_name"):
        render(flow, bare, {"AnsweredBy": "human"}, url, STATUS)


def test_input_at_a_step_that_takes_none_is_a_key_error(flow: Flow) -> None:
    """A sealed input position at a say step cannot happen legitimately: KeyError."""
    with pytest.raises(KeyError, match="takes no input"):
        render(flow, start().at("greet", "input"), {}, url, STATUS)
