"""The TwiML worker on any request: a checked TwiML reply or a poison verdict, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.broker.rpc import QUERY_HEADER
from gateway.clock import FakeClock
from gateway.errors import PoisonMessage
from gateway.tenants import StaticTenantRegistry
from schemas.events import Event
from tests.support.routing import OFFICE_NUMBER, routed_tenant
from tests.support.twiml_check import check_twiml
from workers.handler import Delivery, RpcReply
from workers.twiml_worker import TwimlHandler

TENANT = routed_tenant()
HANDLER = TwimlHandler(
    StaticTenantRegistry([TENANT]), clock=FakeClock(datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
)


def request(
    kind: str,
    raw: dict[str, object],
    *,
    tenant: str = "acme",
    query: str = "",
    body: str | None = None,
) -> Delivery:
    data: dict[str, object] = {"raw": raw}
    if body is not None:
        data["body"] = body
    event = Event(
        id="00000000-0000-5000-8000-000000000001",
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC1",
        subject="CA1",
        time=datetime(2026, 11, 23, tzinfo=UTC),
        data=data,
    )
    return Delivery(
        body=event.to_json(),
        routing_key="hookline.twiml",
        headers={QUERY_HEADER: query},
        reply_to="r",
        correlation_id="c",
    )


def test_unparsable_and_foreign_requests_are_poison() -> None:
    """Not an event, an unknown tenant or another kind: dead-lettered with the reason."""
    junk = HANDLER.answer(Delivery(body=b"{nope", routing_key="hookline.twiml"))
    assert isinstance(junk, PoisonMessage) and junk.reason == "unparsable"
    stranger = HANDLER.answer(request("call.incoming", {}, tenant="nobody"))
    assert isinstance(stranger, PoisonMessage) and stranger.reason == "unknown_tenant"
    status = HANDLER.answer(request("call.status", {}))
    assert isinstance(status, PoisonMessage) and status.reason == "unexpected_kind"


def test_call_without_routing_gets_the_fallback() -> None:
    """A tenant without [tenants.routing] answers calls with its fallback TwiML."""
    plain = routed_tenant().__class__(id="plain", name="Plain")
    handler = TwimlHandler(StaticTenantRegistry([plain]))
    reply = handler.answer(request("call.incoming", {"To": OFFICE_NUMBER}, tenant="plain"))
    assert isinstance(reply, RpcReply) and reply.body.decode() == plain.fallback_voice_twiml


params = st.dictionaries(
    st.sampled_from(["To", "From", "Digits", "DialCallStatus", "OptOutType", "Body", "x"]),
    st.one_of(
        st.text(max_size=20),
        st.lists(st.text(max_size=5), max_size=2),
        st.integers(-(2**31), 2**31),
    ),
)
queries = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda step, attempt: f"hl_step={step}&hl_try={attempt}",
        st.sampled_from(
            ["menu:main", "dial:sales", "hangup", "menu:", "say:support", "dial:main", "x"]
        ),
        st.text(max_size=4),
    ),
)


@settings(max_examples=200, deadline=None)
@given(raw=params, query=queries)
# int('²') raises although '²'.isdigit() is true: found by this test 1 run in 20 before.
@example(raw={}, query="hl_step=menu:main&hl_try=²")
@example(raw={}, query="hl_step=menu:main&hl_try=%D9%A3")  # Arabic-Indic 3: int() takes it
def test_any_call_step_gives_documented_twiml(raw: dict[str, object], query: str) -> None:
    """Whatever parameters and step query arrive, the reply is valid, documented TwiML."""
    reply = HANDLER.answer(request("call.incoming", raw, query=query))
    assert isinstance(reply, RpcReply) and reply.content_type == "text/xml"
    check_twiml(reply.body, "voice")


@settings(max_examples=200, deadline=None)
@given(raw=params, body=st.text(max_size=60))
def test_any_message_gives_documented_twiml(raw: dict[str, object], body: str) -> None:
    """Whatever message arrives, the reply is valid messaging TwiML (or an empty Response)."""
    reply = HANDLER.answer(request("message.incoming", raw, body=body))
    assert isinstance(reply, RpcReply)
    check_twiml(reply.body, "messaging")
