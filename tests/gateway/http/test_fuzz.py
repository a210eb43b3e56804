"""No input, however malformed, makes the gateway answer 500 or publish an unsigned event."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.secrets import Secret
from gateway.settings import Settings
from gateway.tenants import KaleyraAccount, StaticTenantRegistry
from tests.support.gateway import ACME_SID, PUBLIC_URL, default_tenants
from tests.support.samples import ROUTES
from tests.support.schema_check import assert_valid_event

KALEYRA_SECRET = "fuzz-kaleyra-secret-0123456789"
PATHS = [path for path, _, _ in ROUTES] + [
    "/healthz", "/readyz", "/twilio", "/", "/twilio/voice/", "/twilio/voice/flow",
    "/kaleyra/acme/sms/status", "/kaleyra/acme/sms/incoming", "/kaleyra/nobody/sms/status",
    "/kaleyra/globex/sms/status", "/kaleyra//sms/status",
]  # fmt: skip
CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/json",
    "text/plain",
    "",
    "application/x-www-form-urlencoded; charset=latin-1",
    "APPLICATION/JSON",
    "multipart/form-data; boundary=zz",
    "application/json; charset=utf-8",
]
HEADER_NAMES = st.sampled_from(
    [
        "x-twilio-signature",
        "x-forwarded-host",
        "x-forwarded-proto",
        "i-twilio-idempotency-token",
        "x-request-id",
        "content-length",
        "host",
        "authorization",
        "x-hookline-secret",
        "idempotency-key",
    ]
)
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
HEADER_VALUES = st.text(alphabet=PRINTABLE, max_size=40)
PARAM_NAMES = st.sampled_from(
    [
        "AccountSid",
        "MessageSid",
        "CallSid",
        "MessageStatus",
        "CallStatus",
        "SequenceNumber",
        "NumMedia",
        "MediaUrl0",
        "Body",
        "From",
        "To",
        "CallDuration",
        "Timestamp",
    ]
) | st.text(max_size=10)
PARAM_VALUES = st.sampled_from(
    [ACME_SID, "SM" + "0" * 32, "CA" + "1" * 32, "delivered", "-1", "99999999999999999999999"]
) | st.text(max_size=30)


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def gateway(
    loop: asyncio.AbstractEventLoop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.AsyncClient, MemoryBroker]]:
    acme, globex = default_tenants()
    # acme also has a Kaleyra sub-account, so authenticated Kaleyra payloads get fuzzed too.
    kaleyra = KaleyraAccount("HXFUZZ0001IN", Secret(KALEYRA_SECRET))
    tenants = [replace(acme, kaleyra=kaleyra), globex]
    broker = MemoryBroker()
    settings = Settings(
        tenants=StaticTenantRegistry(tenants),
        public_url=PUBLIC_URL,
        data_dir=tmp_path_factory.mktemp("data"),
    )
    app = create_app(
        settings, publisher=MemoryPublisher(broker, [t.id for t in tenants]), clock=FakeClock()
    )
    lifespan = app.router.lifespan_context(app)
    loop.run_until_complete(lifespan.__aenter__())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    yield client, broker
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(lifespan.__aexit__(None, None, None))


bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(PARAM_NAMES, PARAM_VALUES), max_size=12).map(
        lambda pairs: urlencode(pairs).encode()
    ),
    st.just(b'{"AccountSid": "' + ACME_SID.encode() + b'", "MessageSid": "SM1"}'),
    st.just(b'{"id": "ee8a1f2c:1", "status": "DELIVRD", "units": "x", "delivered": "nope"}'),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    query=st.one_of(
        st.just(""), HEADER_VALUES.map(lambda q: "?" + q), st.just("?bodySHA256=" + "0" * 64)
    ),
    content_type=st.sampled_from(CONTENT_TYPES),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=4),
    body=bodies,
    with_secret=st.booleans(),
)
def test_arbitrary_requests_never_500_and_never_publish(
    loop: asyncio.AbstractEventLoop,
    gateway: tuple[httpx.AsyncClient, MemoryBroker],
    path: str,
    method: str,
    query: str,
    content_type: str,
    headers: dict[str, str],
    body: bytes,
    with_secret: bool,
) -> None:
    """Random requests never get a 5xx; unsigned ones publish nothing; authenticated Kaleyra
    payloads either publish one schema-valid event or are refused with a 4xx."""
    client, broker = gateway
    headers = {k: v for k, v in headers.items() if k != "content-length"}
    if content_type:
        headers["content-type"] = content_type
    if with_secret:
        headers["x-hookline-secret"] = KALEYRA_SECRET
    response = loop.run_until_complete(
        client.request(method, path + query, content=body, headers=headers)
    )
    assert response.status_code < 500, (response.status_code, response.text)
    events = broker.drain("hookline.tenant.acme")
    for name in broker.queue_names:
        broker.purge(name)
    authenticated = with_secret and path.startswith("/kaleyra/acme/")
    if authenticated and response.status_code == 204:
        # One new event, or none when the same report was already accepted (a retry).
        assert len(events) <= 1
        for event in events:
            assert event.provider == "kaleyra"
            assert_valid_event(event.to_dict())
    else:
        assert events == []
    if path.startswith("/twilio"):
        assert 400 <= response.status_code < 500
