"""amqps:// against the real RabbitMQ behind a TLS front: confirmed publishes and a tail work,
and a certificate that is untrusted or names another host is refused."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.broker.fastamqp import FastAmqpPublisher
from gateway.broker.tail import tail_events
from gateway.errors import PublishError
from schemas.events import Event
from schemas.topology import tenant_queue
from tests.support.rabbit import RabbitClient, TcpProxy

pytestmark = pytest.mark.broker


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


def self_signed(directory: Path, name: str) -> Certificate:
    """A throwaway self-signed server certificate for ``name`` (and 127.0.0.1)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Certificate(cert, key)


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Certificate]:
    directory = tmp_path_factory.mktemp("tls")
    return {name: self_signed(directory, name) for name in ("localhost", "broker.example")}


@pytest.fixture
async def tls_front(
    amqp_url: str, certificates: dict[str, Certificate], request: pytest.FixtureRequest
) -> AsyncIterator[TcpProxy]:
    """amqps:// on localhost in front of the test broker, with the certificate named by the
    test's ``served`` parameter (default: one for localhost)."""
    served = getattr(request, "param", "localhost")
    front = await TcpProxy(
        amqp_url, tls=server_context(certificates[served]), host="localhost"
    ).start()
    try:
        yield front
    finally:
        await front.close()


@pytest.fixture
def trust_localhost(monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Certificate]) -> None:
    # OpenSSL's default verify paths honour SSL_CERT_FILE when a default context is built.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["localhost"].cert))


def make_event(tenant: str) -> Event:
    return Event(
        id=str(uuid.uuid4()),
        kind="call.incoming",
        tenant=tenant,
        provider="twilio",
        source="twilio/AC0123",
        subject="CA1",
        time=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        data={"n": 1},
    )


async def test_publisher_confirms_over_amqps(
    tls_front: TcpProxy, trust_localhost: None, rabbit: RabbitClient
) -> None:
    """The gateway's publisher verifies the broker's certificate and gets its confirms."""
    acme = f"t-{uuid.uuid4().hex[:10]}"
    assert tls_front.url.startswith("amqps://")
    publisher = FastAmqpPublisher(tls_front.url, [acme], confirm_timeout=5.0)
    await publisher.start()
    try:
        event = make_event(acme)
        await publisher.publish(event)
    finally:
        await publisher.close()
    assert [body["id"] for _, body in await rabbit.read_all(tenant_queue(acme))] == [event.id]


async def test_an_untrusted_certificate_is_refused(
    tls_front: TcpProxy, monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Certificate]
) -> None:
    """A broker certificate no trusted CA signed: start fails, saying so, nothing is sent."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["broker.example"].cert))
    publisher = FastAmqpPublisher(tls_front.url, ["acme"], connect_timeout=5.0)
    with pytest.raises(PublishError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        await publisher.start()
    assert ":guest@" not in str(caught.value)  # the URL in the message is masked


@pytest.mark.parametrize("tls_front", ["broker.example"], indirect=True)
async def test_a_certificate_for_another_host_is_refused(
    tls_front: TcpProxy, monkeypatch: pytest.MonkeyPatch, certificates: dict[str, Certificate]
) -> None:
    """A trusted certificate that names another host than the URL's is refused too."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates["broker.example"].cert))
    publisher = FastAmqpPublisher(tls_front.url, ["acme"], connect_timeout=5.0)
    with pytest.raises(PublishError, match="Hostname mismatch"):
        await publisher.start()


async def test_tail_over_amqps(tls_front: TcpProxy, trust_localhost: None, amqp_url: str) -> None:
    """The aio-pika side (here the tail) connects over amqps and receives the tenant's events."""
    acme = f"t-{uuid.uuid4().hex[:10]}"
    publisher = FastAmqpPublisher(amqp_url, [acme])  # plain, straight to the broker
    await publisher.start()
    ready = asyncio.Event()
    try:
        async with aclosing(tail_events(tls_front.url, acme, on_ready=ready.set)) as events:
            first = asyncio.ensure_future(anext(events))
            await asyncio.wait_for(ready.wait(), 10)
            event = make_event(acme)
            await publisher.publish(event)
            assert (await asyncio.wait_for(first, 10))["id"] == event.id
    finally:
        await publisher.close()
