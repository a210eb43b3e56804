"""The [tenants.flows] section: a complete flow parses, and every broken flow is named by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigFile, load_config
from gateway.errors import ConfigError
from gateway.flows.model import Branch, FlowSettings, Gather, Hangup, Say, Sms, Transfer
from tests.support.flows import REFILL_FLOW_TOML

SID = "AC" + "0" * 31 + "a"
HEAD = f'''
[gateway]
flow_secret = "seal-secret"

[[tenants]]
id = "acme"

[tenants.twilio]
account_sid = "{SID}"
auth_token = "token"
'''


def load(tmp_path: Path, text: str) -> ConfigFile:
    path = tmp_path / "hookline.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, {})


def problems(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return str(info.value)


def flow_settings(config: ConfigFile) -> FlowSettings:
    tenant = config.tenants.by_id("acme")
    assert tenant is not None
    settings = tenant.flows
    assert isinstance(settings, FlowSettings)
    return settings


def one_flow(steps: str, head: str = 'variables = ["name"]') -> str:
    """A tenant with one flow "f" made of the given [[steps]] TOML."""
    return HEAD + f"\n[tenants.flows.f]\n{head}\n" + steps


def step(text: str) -> str:
    return "\n[[tenants.flows.f.steps]]\n" + text.strip() + "\n"


def test_refill_flow_parses_into_typed_steps(tmp_path: Path) -> None:
    """The README's refill flow loads with its pacing, caller id, start and step types."""
    settings = flow_settings(load(tmp_path, HEAD + REFILL_FLOW_TOML))
    assert settings.calls_per_second == 1
    assert settings.caller_id == "+14155550100"
    flow = settings.flows["refill"]
    assert flow.start == "detect"
    assert flow.variables == ("patient_name", "pickup_time")
    assert isinstance(flow.steps["detect"], Branch)
    menu = flow.steps["menu"]
    assert isinstance(menu, Gather)
    assert (menu.retries, menu.num_digits, menu.default) == (2, 1, "goodbye")
    assert dict(menu.digits) == {"1": "confirmed", "2": "transfer"}
    assert isinstance(flow.steps["confirmed"], Sms)
    assert isinstance(flow.steps["transfer"], Transfer)
    assert isinstance(flow.steps["bye"], Hangup)
    greet = flow.steps["greet"]
    assert isinstance(greet, Say) and greet.voice == "Polly.Joanna"


def test_flows_need_the_gateway_flow_secret(tmp_path: Path) -> None:
    """A tenant with flows and no [gateway] flow_secret fails, naming the key and tenant."""
    text = (HEAD + REFILL_FLOW_TOML).replace('flow_secret = "seal-secret"', "")
    message = problems(tmp_path, text)
    assert "gateway.flow_secret" in message and "acme" in message


def test_start_defaults_to_the_first_step(tmp_path: Path) -> None:
    """Without start, the first step listed is entered first."""
    text = one_flow(step('id = "hi"\ntype = "say"\ntext = "Hi {name}"'))
    assert flow_settings(load(tmp_path, text)).flows["f"].start == "hi"


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        (step('id = "a"\ntype = "dance"'), "steps[0].type: unknown step type 'dance'"),
        (
            step('id = "a"\ntype = "say"\ntext = "x"\nurl = "https://x"'),
            "steps[0].url: is not a key of a say step",
        ),
        (
            step('id = "a"\ntype = "say"\ntext = "x"\nnext = "nowhere"'),
            "steps.a: leads to step 'nowhere', which the flow lacks",
        ),
        (
            step('id = "a"\ntype = "hangup"') + step('id = "b"\ntype = "hangup"'),
            "steps.b: is unreachable from the start step 'a'",
        ),
        (
            step('id = "a"\ntype = "say"\ntext = "x"\nnext = "b"')
            + step('id = "b"\ntype = "record"\nnext = "a"'),
            "steps.a: is in a loop without an exit",
        ),
        (
            step('id = "a"\ntype = "say"\ntext = "x"\nnext = "b"')
            + step(
                'id = "b"\ntype = "gather"\nprompt = "p"\ndigits = { "1" = "c" }\ndefault = "bye"'
            )
            + step('id = "c"\ntype = "say"\ntext = "y"\nnext = "d"')
            + step('id = "d"\ntype = "say"\ntext = "z"\nnext = "c"')
            + step('id = "bye"\ntype = "hangup"'),
            "loop that never waits for the caller (c -> d -> c)",
        ),
        (
            step('id = "a"\ntype = "say"\ntext = "Hi {patient}"'),
            "steps.a.text: uses undeclared variables ['patient'] (declared: name)",
        ),
        (step('id = "a"\ntype = "say"\ntext = "Hi {name!r}"'), "placeholders are {name}"),
        (
            step('id = "a"\ntype = "transfer"\nnumber = "555-1234"'),
            "steps[0].number: expected an E.164 number",
        ),
        (
            step('id = "a"\ntype = "hangup"') + step('id = "a"\ntype = "hangup"'),
            "steps[1].id: duplicate step id 'a' in flow 'f'",
        ),
        (
            step(
                'id = "a"\ntype = "gather"\nprompt = "p"\nspeech = { "yes" = "a" }\ndefault = "a"'
            ),
            "speech choices need input",
        ),
        (
            step('id = "a"\ntype = "gather"\nprompt = "p"\ndigits = { "x" = "a" }\ndefault = "a"'),
            "keys are the digits pressed",
        ),
        (
            step('id = "a"\ntype = "gather"\nprompt = "p"\ndefault = "a"'),
            "a gather needs digits and/or speech choices",
        ),
        (step('id = "A!"\ntype = "hangup"'), "steps[0].id: expected a step id"),
        (step('id = "a"\ntype = "play"\nurl = "ftp://x/a.mp3"'), "expected an http(s) URL"),
        ("", "a flow needs at least one step"),
    ],
    ids=[
        "unknown-type",
        "foreign-key",
        "missing-target",
        "unreachable",
        "loop-no-exit",
        "instant-cycle",
        "undeclared-variable",
        "bad-placeholder",
        "bad-number",
        "duplicate-id",
        "speech-without-input",
        "bad-digit-keys",
        "no-choices",
        "bad-id",
        "bad-url",
        "no-steps",
    ],
)
def test_broken_flows_fail_naming_tenant_flow_and_step(
    tmp_path: Path, steps: str, expected: str
) -> None:
    """Each broken flow is refused at start-up; the message names the flow's key and the step."""
    message = problems(tmp_path, one_flow(steps))
    assert "tenants[0](acme).flows.f." in message
    assert expected in message


def test_pacing_and_caller_id_are_checked(tmp_path: Path) -> None:
    """calls_per_second must be 1..100 and caller_id an E.164 number."""
    text = HEAD + '\n[tenants.flows]\ncalls_per_second = 0\ncaller_id = "12"\n'
    message = problems(tmp_path, text)
    assert "tenants[0](acme).flows.calls_per_second: expected an integer from 1 to 100" in message
    assert "tenants[0](acme).flows.caller_id: expected an E.164 number" in message


def test_a_non_table_entry_in_flows_is_an_unknown_key(tmp_path: Path) -> None:
    """Only tables name flows: a stray scalar is refused like any unknown key."""
    message = problems(tmp_path, HEAD + "\n[tenants.flows]\nrefil = 3\n")
    assert "tenants[0](acme).flows.refil: unknown key" in message


@pytest.mark.parametrize(
    ("flows", "expected"),
    [
        ("", "names flow 'refill', which [tenants.flows] lacks (flows: none)"),
        (
            REFILL_FLOW_TOML,
            "flow 'refill' needs variables ['patient_name', 'pickup_time'], which "
            "an incoming call cannot give",
        ),
    ],
)
def test_a_routing_rule_can_only_hand_calls_to_a_flow_without_variables(
    tmp_path: Path, flows: str, expected: str
) -> None:
    """A routing `flow` action must name a flow of the tenant that needs no variables."""
    routing = (
        '\n[tenants.routing]\n[tenants.routing.actions.bot]\ntype = "flow"\n'
        'flow = "refill"\n[[tenants.routing.voice]]\nname = "all"\naction = "bot"\n'
    )
    message = problems(tmp_path, HEAD + routing + flows)
    assert f"tenants[0](acme).routing.actions.bot.flow: {expected}" in message
