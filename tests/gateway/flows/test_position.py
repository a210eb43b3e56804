"""Sealed flow positions: they round-trip, and tampering, another tenant or age are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import AuthenticationFailed
from gateway.flows.position import DEFAULT_LIFETIME_S, Position, PositionSeal, require_call
from gateway.secrets import Secret

NOW = 1_800_000_000
SEAL = PositionSeal(Secret("gateway-flow-secret"))
POSITION = Position(
    "acme",
    "refill",
    "menu",
    "req-1",
    NOW,
    "input",
    2,
    {"patient_name": "Ann <O'Neil> & co", "pickup_time": "5 pm"},
)


def test_a_sealed_position_opens_to_the_same_position() -> None:
    """seal then open gives back every field, variables included."""
    assert SEAL.open(SEAL.seal(POSITION), tenant="acme", now=NOW + 10) == POSITION


def test_at_moves_the_call_keeping_its_identity() -> None:
    """at() changes step, phase and attempt only."""
    moved = POSITION.at("thanks")
    assert (moved.step, moved.phase, moved.attempt) == ("thanks", "enter", 1)
    assert (moved.tenant, moved.request_id, moved.variables) == (
        POSITION.tenant,
        POSITION.request_id,
        POSITION.variables,
    )


def test_a_position_is_bound_to_its_call() -> None:
    """A bound position serves its own CallSid only, and keeps the binding through at() and
    sealing; an unbound one serves only the entry of the start step."""
    bound = SEAL.open(SEAL.seal(POSITION.on_call("CA1")), tenant="acme", now=NOW)
    assert bound.call_sid == "CA1" and bound.at("thanks").call_sid == "CA1"
    require_call(bound, "CA1", "detect")
    with pytest.raises(AuthenticationFailed, match="belongs to call 'CA1'") as caught:
        require_call(bound, "CA2", "detect")
    assert caught.value.reason == "flow_position_invalid"
    entry = Position("acme", "refill", "detect", "req-1", NOW)
    require_call(entry, "CA9", "detect")
    for unbound in (POSITION, entry.at("detect", "input")):
        with pytest.raises(AuthenticationFailed, match="bound to no call"):
            require_call(unbound, "CA9", "detect")


def test_a_tampered_payload_is_refused() -> None:
    """Changing one character of the payload breaks the seal: 403, reason logged."""
    token = SEAL.seal(POSITION)
    body, tag = token.split(".")
    forged = SEAL.seal(POSITION.at("transfer")).split(".")[0]
    for candidate in (f"{forged}.{tag}", f"{body[:-1]}{'A' if body[-1] != 'A' else 'B'}.{tag}"):
        with pytest.raises(AuthenticationFailed) as info:
            SEAL.open(candidate, tenant="acme", now=NOW)
        assert info.value.reason == "flow_position_invalid"
        assert info.value.http_status == 403


def test_a_position_of_another_tenant_is_refused() -> None:
    """A token sealed for tenant acme does not open for tenant beta (keys differ per tenant)."""
    with pytest.raises(AuthenticationFailed, match="for tenant 'beta'"):
        SEAL.open(SEAL.seal(POSITION), tenant="beta", now=NOW)


def test_another_secret_cannot_open_it() -> None:
    """A gateway with another flow_secret refuses the token."""
    other = PositionSeal(Secret("another-secret"))
    with pytest.raises(AuthenticationFailed):
        other.open(SEAL.seal(POSITION), tenant="acme", now=NOW)


@pytest.mark.parametrize("now", [NOW + DEFAULT_LIFETIME_S + 1, NOW - 3600])
def test_expired_or_future_positions_are_refused(now: int) -> None:
    """Past its lifetime, or issued well after now (a clock trick), the position is refused."""
    with pytest.raises(AuthenticationFailed, match="lifetime"):
        SEAL.open(SEAL.seal(POSITION), tenant="acme", now=now)


@given(st.text(max_size=300))
def test_any_garbage_token_is_a_403_never_a_crash(token: str) -> None:
    """Whatever arrives in the s= parameter, opening it raises AuthenticationFailed or works."""
    with pytest.raises(AuthenticationFailed):
        SEAL.open(token, tenant="acme", now=NOW)


def test_a_well_sealed_but_malformed_payload_is_refused() -> None:
    """A payload missing fields is refused even with a valid tag (defence in depth)."""
    import base64
    import hashlib
    import hmac

    payload = b'{"t":"acme"}'
    key = SEAL._key("acme")
    tag = hmac.new(key, payload, hashlib.sha256).digest()[:16]
    token = (
        base64.urlsafe_b64encode(payload).rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(tag).rstrip(b"=")
    ).decode()
    with pytest.raises(AuthenticationFailed, match="malformed"):
        SEAL.open(token, tenant="acme", now=NOW)
