"""hookline's AMQP publisher: URL handling and the frames it builds for an event."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import uvloop

from gateway.broker.fastamqp import FastAmqpPublisher, parse_url
from gateway.errors import ConfigError
from schemas.events import Event


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", ("amqp", "127.0.0.1", 5672, "guest", "guest", "/")),
        ("amqp://h", ("amqp", "h", 5672, "guest", "guest", "/")),
        (
            "amqps://u:p%40ss@broker.example.com/prod%2Fa",
            ("amqps", "broker.example.com", 5671, "u", "p@ss", "prod/a"),
        ),
        ("AMQP://u:p@[::1]:5673/%2F", ("amqp", "::1", 5673, "u", "p", "/")),
    ],
)
def test_url_is_read_as_rabbitmq_reads_it(url: str, expected: tuple[object, ...]) -> None:
    """Scheme, host, default ports, percent-decoded credentials and vhost (empty path = /)."""
    assert parse_url(url, "masked") == expected


@pytest.mark.parametrize(
    "url", ["amqp://u:s3cret@h/v?heartbeat=5", "amqp://u:s3cret@h:99999/", "http://u:s3cret@h/"]
)
def test_unusable_urls_are_config_errors_without_the_password(url: str) -> None:
    """Query options, bad ports and other schemes are refused naming the variable, not secrets."""
    with pytest.raises(ConfigError, match="HOOKLINE_AMQP_URL") as caught:
        FastAmqpPublisher(url, ["acme"])
    assert "s3cret" not in str(caught.value)


@pytest.mark.broker
def test_publishes_under_uvloop(amqp_url: str) -> None:
    """The publisher works on uvloop's transports, the loop `hookline serve` runs on."""

    async def publish_one() -> None:
        publisher = FastAmqpPublisher(amqp_url, ["uvloop-check"], confirm_timeout=5.0)
        await publisher.start()
        try:
            await publisher.publish(
                Event(
                    id=str(uuid.uuid4()),
                    kind="message.status",
                    tenant="uvloop-check",
                    provider="twilio",
                    source="twilio/AC1",
                    subject="SM1",
                    time=datetime.now(UTC),
                    data={},
                )
            )
        finally:
            await publisher.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(publish_one())
