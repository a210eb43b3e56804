"""The AMQP link's confirm bookkeeping, driven frame by frame through a hand-written transport.

The real broker rarely produces some orders (a return inside a multiple ack, a blocked
connection at an exact moment); here the test plays the broker's side byte for byte.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import body, commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from gateway.broker.link import Link, Unconfirmed, negotiate_heartbeat


class RecordingTransport(asyncio.Transport):
    """Keeps what the link writes; closing just records it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True


def method(value: Any, channel: int = 1) -> bytes:
    """A method frame as the broker sends it, marshalled by pamqp."""
    return pamqp_frame.marshal(value, channel)


def ack(tag: int, multiple: bool = False) -> bytes:
    return method(commands.Basic.Ack(tag, multiple))


def returned_content(routing_key: str, message_id: str, payload: bytes = b"{}") -> bytes:
    props = commands.Basic.Properties(message_id=message_id)
    content = method(pamqp_header.ContentHeader(0, len(payload), props))
    if payload:
        content += method(body.ContentBody(payload))
    return method(commands.Basic.Return(312, "NO_ROUTE", "hookline.events", routing_key)) + content


async def open_link(confirm_timeout: float = 5.0) -> tuple[Link, RecordingTransport, list[Any]]:
    lost: list[Any] = []
    link = Link(confirm_timeout, lambda _link, exc: lost.append(exc))
    transport = RecordingTransport()
    link.connection_made(transport)
    link.is_open = True
    return link, transport, lost


def outcome(future: asyncio.Future[None]) -> str:
    if not future.done():
        return "pending"
    exc = future.exception()
    return "ok" if exc is None else (exc.kind if isinstance(exc, Unconfirmed) else repr(exc))


async def test_multiple_ack_settles_every_tag_up_to_it() -> None:
    """ack(3, multiple) confirms tags 1-3 and leaves 4 pending; a later single ack confirms 4."""
    link, _, _ = await open_link()
    futures = [link.publish(b"", "acme.twilio.message.status", f"id-{n}") for n in range(4)]
    link.data_received(ack(3, multiple=True))
    assert [outcome(f) for f in futures] == ["ok", "ok", "ok", "pending"]
    link.data_received(ack(4))
    assert outcome(futures[3]) == "ok"


async def test_return_is_matched_by_order_inside_a_multiple_ack() -> None:
    """A return before ack(3, multiple) fails only the publish it belongs to."""
    link, _, _ = await open_link()
    keys = ["acme.twilio.message.status", "ghost.twilio.message.status", "acme.twilio.call.status"]
    futures = [link.publish(b"", key, f"id-{n}") for n, key in enumerate(keys)]
    link.data_received(returned_content(keys[1], "id-1") + ack(3, multiple=True))
    assert [outcome(f) for f in futures] == ["ok", "returned", "ok"]
    assert "312 NO_ROUTE" in str(futures[1].exception())


async def test_two_copies_of_one_event_returned_both_fail() -> None:
    """Two in-flight publishes of one id and key, both returned: both fail, none confirmed."""
    link, _, _ = await open_link()
    first = link.publish(b"", "ghost.twilio.message.status", "same")
    second = link.publish(b"", "ghost.twilio.message.status", "same")
    stream = (
        returned_content("ghost.twilio.message.status", "same")
        + returned_content("ghost.twilio.message.status", "same", b"")
        + ack(2, multiple=True)
    )
    for byte in range(len(stream)):  # one byte at a time: frames split anywhere
        link.data_received(stream[byte : byte + 1])
    assert [outcome(first), outcome(second)] == ["returned", "returned"]


async def test_nack_multiple_fails_the_range() -> None:
    """nack(2, multiple) fails tags 1 and 2 as nacked; tag 3 still waits."""
    link, _, _ = await open_link()
    futures = [link.publish(b"", "acme.x.y", str(n)) for n in range(3)]
    link.data_received(method(commands.Basic.Nack(2, multiple=True)))
    assert [outcome(f) for f in futures] == ["nacked", "nacked", "pending"]


async def test_one_timer_expires_publishes_oldest_first() -> None:
    """Publishes without a confirm fail after confirm_timeout, each at its own deadline."""
    link, _, _ = await open_link(confirm_timeout=0.05)
    early = link.publish(b"", "acme.x.y", "a")
    await asyncio.sleep(0.03)
    late = link.publish(b"", "acme.x.y", "b")
    await asyncio.sleep(0.03)
    assert [outcome(early), outcome(late)] == ["expired", "pending"]
    await asyncio.sleep(0.04)
    assert outcome(late) == "expired"
    assert "no confirm within 0.05 s" in str(late.exception())
    link.data_received(ack(2, multiple=True))  # late acks are ignored


async def test_writes_of_one_iteration_leave_in_one_write() -> None:
    """Ten publishes in one loop iteration reach the transport as a single write."""
    link, transport, _ = await open_link()
    transport.written.clear()
    for n in range(10):
        link.publish(b"frame%d;" % n, "acme.x.y", str(n))
    await asyncio.sleep(0)
    assert transport.written == [b"".join(b"frame%d;" % n for n in range(10))]


async def test_blocked_then_unblocked_and_broker_close() -> None:
    """connection.blocked sets a reason until unblocked; a connection.close fails the pending
    publishes, is answered close-ok and reports the loss with the broker's reason."""
    link, transport, lost = await open_link()
    link.data_received(method(commands.Connection.Blocked("low memory"), 0))
    blocked = link.blocked
    link.data_received(method(commands.Connection.Unblocked(), 0))
    assert (blocked, link.blocked) == ("low memory", None)
    future = link.publish(b"", "acme.x.y", "a")
    forced = commands.Connection.Close(320, "CONNECTION_FORCED - broker shutdown", 0, 0)
    link.data_received(method(forced, 0))
    assert outcome(future) == "lost"
    assert transport.written[-1] == method(commands.Connection.CloseOk(), 0)
    assert transport.closing and not link.is_open
    assert "CONNECTION_FORCED" in str(lost[0])


async def test_garbage_from_the_broker_aborts_the_connection() -> None:
    """Bytes that are not AMQP abort the link and fail what was pending; nothing is raised."""
    link, transport, lost = await open_link()
    future = link.publish(b"", "acme.x.y", "a")
    link.data_received(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert outcome(future) == "lost" and transport.closing and lost


@pytest.mark.parametrize(
    "stream",
    [
        method(pamqp_header.ContentHeader(0, 5, commands.Basic.Properties())),
        method(body.ContentBody(b"body")),
    ],
)
async def test_content_without_a_return_is_a_protocol_error(stream: bytes) -> None:
    """A content header or body that no basic.return announced aborts the connection."""
    link, transport, lost = await open_link()
    link.data_received(stream)
    assert transport.closing and "without" in str(lost[0])


def test_heartbeat_negotiation_follows_rabbitmq() -> None:
    """The lower of two non-zero heartbeat proposals wins; a zero defers to the other side."""
    assert [
        negotiate_heartbeat(s, c) for s, c in ((60, 30), (30, 60), (0, 60), (60, 0), (0, 0))
    ] == [30, 30, 60, 60, 0]
