"""Validation of [tenants.routing]: every problem named by tenant, rule and key."""

from __future__ import annotations

import re
from datetime import datetime, time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigProblems, load_config
from gateway.routing_config import (
    Dial,
    Menu,
    Routing,
    answer_timeout_s,
    parse_hours,
)
from tests.support.routing import ROUTING_TOML, routed_tenant

ROOT = Path(__file__).resolve().parents[2]


def problems(toml_text: str) -> list[str]:
    with pytest.raises(ConfigProblems) as caught:
        routed_tenant(toml_text)
    return list(caught.value.problems)


def test_valid_rules_parse_into_frozen_dataclasses() -> None:
    """The test tenant's rules parse: order kept, actions typed, timeout read by the gateway."""
    tenant = routed_tenant()
    routing = tenant.routing
    assert isinstance(routing, Routing)
    assert [rule.name for rule in routing.voice] == ["office", "spam", "bot", "closed"]
    assert isinstance(routing.actions["main"], Menu) and isinstance(routing.actions["sales"], Dial)
    assert routing.sms[0].keywords == frozenset({"HOURS", "OPEN"})
    assert answer_timeout_s(tenant.routing) == 1.0
    assert answer_timeout_s(None) == 3.0


def test_example_config_is_valid() -> None:
    """examples/hookline.toml, with its complete routing example, loads."""
    config = load_config(ROOT / "examples" / "hookline.toml", {})
    demo = config.tenants.by_id("demo")
    assert demo is not None and isinstance(demo.routing, Routing)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'type = "say"\ntext = "Support',
            'type = "shout"\ntext = "Support',
            r"tenants\[0\]\(acme\)\.routing\.actions\.support\.type: unknown action 'shout'",
        ),
        (
            '"+14155550101", "+14155550102"',
            '"+14155550101", "0800-CALL"',
            r"actions\.sales\.numbers: expected E\.164 numbers .*got '\*\*\*CALL'",
        ),
        (
            'to = ["+18005559999"]',
            'to = ["18005559999"]',
            r"routing\.voice\[1\]\(spam\)\.to: expected E\.164",
        ),
        (
            '"mon-fri 09:00-17:00"',
            '"mon-fri 17:00-09:00"',
            r"routing\.voice\[0\]\(office\)\.hours: .*the end must be after the start",
        ),
        (
            '"mon-fri 09:00-17:00"',
            '"weekdays 9-5"',
            r"voice\[0\]\(office\)\.hours: expected DAYS HH:MM-HH:MM",
        ),
        (
            '"mon-fri 09:00-17:00"',
            '"mon-fry 09:00-17:00"',
            r"voice\[0\]\(office\)\.hours: unknown day",
        ),
        (
            'action = "block"',
            'action = "nowhere"',
            r"voice\[1\]\(spam\)\.action: no action named 'nowhere'",
        ),
        ('"2" = "support"', '"2" = "main"', r"actions\.main: loop: main -> main"),
        (
            'text = "Support is online at example.com."',
            'text = "Support is online at example.com."\nthen = "main"',
            r"actions\.main: loop: main -> support -> main",
        ),
        (
            'keywords = ["HOURS", "open"]',
            'keywords = ["HOURS", "stop"]',
            r"sms\[0\]\(hours\)\.keywords: STOP are Twilio's opt-out/help keywords",
        ),
        (
            'timezone = "America/New_York"',
            'timezone = "Mars/Olympus"',
            r"routing\.timezone: expected an IANA time zone",
        ),
        (
            "answer_timeout_ms = 1000",
            "answer_timeout_ms = 20000",
            r"routing\.answer_timeout_ms: expected an integer from 100 to 10000",
        ),
        (
            'reason = "busy"',
            'reason = "maybe"',
            r"actions\.block\.reason: expected busy or rejected",
        ),
        (
            "max_length_s = 60",
            "max_length_s = 60\nbeep = true",
            r"actions\.voicemail\.beep: unknown key",
        ),
        ('"1" = "sales"', '"11" = "sales"', r"actions\.main\.options\.11: expected one key"),
        ('name = "spam"', 'name = "office"', r"routing\.voice: two rules are named 'office'"),
        (
            'type = "flow"\nflow = "refill"',
            'type = "flow"',
            r"actions\.refill\.flow: expected a string",
        ),
    ],
)
def test_each_mistake_is_named(old: str, new: str, expected: str) -> None:
    """A broken rule fails start-up with a message naming the tenant entry, rule and key."""
    assert old in ROUTING_TOML
    found = problems(ROUTING_TOML.replace(old, new, 1))
    assert any(re.search(expected, problem) for problem in found), found


def test_all_problems_are_reported_together() -> None:
    """Several mistakes in one file are all reported, not just the first."""
    text = ROUTING_TOML.replace('action = "block"', 'action = "nowhere"').replace(
        '"+14155550101"', '"14155550101"'
    )
    assert len(problems(text)) == 2


def test_numbers_never_appear_whole_in_messages() -> None:
    """A bad number is shown by its last four characters only."""
    found = problems(ROUTING_TOML.replace('"+14155550101"', '"004155550101"'))
    assert not any("004155550101" in problem for problem in found)


def test_hours_parse_ranges_lists_wraps_and_midnight() -> None:
    """Day ranges, lists, ranges across Sunday, and 24:00 as the end of the day."""
    assert parse_hours("mon-fri 09:00-17:30").days == frozenset(range(5))
    assert parse_hours("sat,sun 10:00-12:00").days == frozenset({5, 6})
    assert parse_hours("fri-mon 08:00-24:00").days == frozenset({4, 5, 6, 0})
    window = parse_hours("mon 22:00-24:00")
    assert window.end == time.max
    assert window.contains(datetime(2026, 11, 23, 23, 59, 59))  # a Monday
    assert not window.contains(datetime(2026, 11, 24, 0, 0))


@given(st.text(max_size=40))
def test_hours_parser_never_crashes(text: str) -> None:
    """Any text either parses or raises ValueError with a message (no other exception)."""
    try:
        parse_hours(text)
    except ValueError as exc:
        assert str(exc)


@given(st.integers(0, 23), st.integers(0, 59), st.integers(0, 23), st.integers(0, 59))
def test_hours_contain_exactly_their_window(h1: int, m1: int, h2: int, m2: int) -> None:
    """A valid window contains its start and not its end, on its days only."""
    start, end = time(h1, m1), time(h2, m2)
    text = f"tue {h1:02}:{m1:02}-{h2:02}:{m2:02}"
    if end <= start:
        with pytest.raises(ValueError):
            parse_hours(text)
        return
    window = parse_hours(text)
    tuesday = datetime(2026, 11, 24, h1, m1)
    assert window.contains(tuesday)
    assert not window.contains(tuesday.replace(hour=h2, minute=m2))
    assert not window.contains(datetime(2026, 11, 25, h1, m1))


def test_hookline_check_names_a_broken_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reset_logging_after: None
) -> None:
    """`hookline check` (gateway only, no worker code) fails on a broken rule, naming it."""
    from gateway.cli import main

    config = tmp_path / "hookline.toml"
    config.write_text(ROUTING_TOML.replace('action = "block"', 'action = "nowhere"'))
    code = main(["check"], {"HOOKLINE_CONFIG": str(config), "HOOKLINE_DATA_DIR": str(tmp_path)})
    assert code == 1
    err = capsys.readouterr().err
    assert "tenants[0](acme).routing.voice[1](spam).action: no action named 'nowhere'" in err


def test_publish_and_answer_deadlines_must_fit_twilios_limit() -> None:
    """publish_timeout_ms plus a tenant's answer_timeout_ms over 12 s is refused, named."""
    text = ROUTING_TOML.replace("[gateway]\n", "[gateway]\npublish_timeout_ms = 5000\n").replace(
        "answer_timeout_ms = 1000", "answer_timeout_ms = 8000"
    )
    found = problems(text)
    assert any(
        p.startswith(
            "tenants[0](acme).routing.answer_timeout_ms: with [gateway] "
            "publish_timeout_ms = 5000 a call could wait 13000 ms"
        )
        for p in found
    )
