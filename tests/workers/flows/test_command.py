"""call.bot commands: a good one parses; each bad one is a Rejection with its reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.config import load_config
from gateway.tenants import TenantRegistry
from tests.support.flows import REFILL_FLOW_TOML
from workers.flows.command import BotCommand, Rejection, parse_command

SID = "AC" + "0" * 31 + "a"
GOOD = {
    "to": "+14155550123",
    "flow": "refill",
    "request_id": "rx-1",
    "vars": {"patient_name": "Ann", "pickup_time": "5 pm", "unused": "dropped"},
}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> TenantRegistry:
    path: Path = tmp_path_factory.mktemp("cfg") / "hookline.toml"
    path.write_text(
        '[gateway]\nflow_secret = "x"\n'
        f'[[tenants]]\nid = "acme"\n[tenants.twilio]\naccount_sid = "{SID}"\n'
        'auth_token = "t"\n' + REFILL_FLOW_TOML + '\n[[tenants]]\nid = "plain"\n',
        "utf-8",
    )
    return load_config(path, {}).tenants


def test_a_good_command_parses_with_the_tenant_caller_id(tenants: TenantRegistry) -> None:
    """The flow, number, tenant and declared variables come through; undeclared vars drop."""
    command = parse_command("acme.call.bot", orjson.dumps(GOOD), tenants)
    assert isinstance(command, BotCommand)
    assert (command.tenant.id, command.flow.name, command.to) == ("acme", "refill", GOOD["to"])
    assert command.from_ == "+14155550100" and command.request_id == "rx-1"
    assert dict(command.variables) == {"patient_name": "Ann", "pickup_time": "5 pm"}


@pytest.mark.parametrize(
    ("key", "change", "reason", "detail"),
    [
        ("acme.call.bot", {"flow": "nope"}, "unknown_flow", "known: refill"),
        ("ghost.call.bot", {}, "unknown_tenant", "names no configured tenant"),
        ("acme.other", {}, "unknown_tenant", "expected <tenant>.call.bot"),
        ("plain.call.bot", {}, "unknown_flow", "known: none"),
        ("acme.call.bot", {"to": "555-0123"}, "invalid_number", "got '***0123'"),
        ("acme.call.bot", {"from": 42}, "invalid_number", "got int"),
        (
            "acme.call.bot",
            {"vars": {"patient_name": "Ann"}},
            "missing_variables",
            "needs vars ['pickup_time']",
        ),
        (
            "acme.call.bot",
            {"vars": {"patient_name": 3, "pickup_time": "x"}},
            "invalid_variables",
            "object of strings",
        ),
        ("acme.call.bot", {"request_id": ""}, "invalid_command", "request_id must be"),
        ("acme.call.bot", {"tenant": "beta"}, "tenant_mismatch", "routing key 'acme.call.bot'"),
        ("acme.call.bot", {"tenant": "acme", "x": 1}, "invalid_command", "unknown fields ['x']"),
    ],
)
def test_bad_commands_are_rejections_naming_the_problem(
    tenants: TenantRegistry, key: str, change: dict[str, object], reason: str, detail: str
) -> None:
    """Each invalid command becomes a Rejection (reason + detail), never an exception."""
    result = parse_command(key, orjson.dumps({**GOOD, **change}), tenants)
    assert isinstance(result, Rejection)
    assert result.reason == reason and detail in result.detail


def test_the_routing_key_is_the_tenant_not_the_body(tenants: TenantRegistry) -> None:
    """A body naming another tenant is rejected to the routing key's tenant, never to the one
    named; a body naming the routing key's own tenant is a good command."""
    forged = parse_command("plain.call.bot", orjson.dumps({**GOOD, "tenant": "acme"}), tenants)
    assert isinstance(forged, Rejection)
    assert (forged.reason, forged.tenant) == ("tenant_mismatch", "plain")
    same = parse_command("acme.call.bot", orjson.dumps({**GOOD, "tenant": "acme"}), tenants)
    assert isinstance(same, BotCommand) and same.tenant.id == "acme"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_unparsable_bodies_are_malformed(tenants: TenantRegistry, body: bytes) -> None:
    """A body that is not a JSON object is rejected as malformed, tenant kept for the report."""
    result = parse_command("acme.call.bot", body, tenants)
    assert isinstance(result, Rejection)
    assert (result.reason, result.tenant, result.request_id) == ("malformed_command", "acme", None)
