"""The AMQP 0-9-1 frame codec, checked by round trips and against pamqp as an independent oracle."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, decode, encode
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from gateway.broker import wire
from gateway.broker.fastamqp import EventEncoder
from gateway.broker.wire import FrameError, FrameParser, Reader
from schemas.events import Event

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).filter(
    lambda n: len(n.encode()) <= 255)
scalars = st.one_of(
    st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=50), st.none())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)), max_leaves=12)
tables = st.dictionaries(names, values, max_size=6)
shortstrs = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
# pamqp validates exchange names (letters, digits, - _ . :), as RabbitMQ does.
exchange_names = st.from_regex(r"[A-Za-z0-9_.:-]{0,60}", fullmatch=True)


def parse_all(data: bytes) -> list[Any]:
    """Every frame pamqp finds in ``data``, as (channel, frame object) pairs."""
    out = []
    while data:
        consumed, channel, value = pamqp_frame.unmarshal(data)
        out.append((channel, value))
        data = data[consumed:]
    return out


@given(tables)
def test_table_round_trip(value: dict[str, Any]) -> None:
    """A field table decodes to what was encoded."""
    assert Reader(wire.table(value)).table() == value


@given(tables)
def test_table_matches_pamqp_both_ways(value: dict[str, Any]) -> None:
    """pamqp reads our tables as we wrote them, and we read pamqp's as it wrote them."""
    encoded = wire.table(value)
    assert decode.field_table(encoded) == (len(encoded), value)
    assert Reader(encode.field_table(value)).table() == value


# pamqp encodes delivery tags as signed 64-bit: stay within its range.
@given(st.integers(0, (1 << 63) - 1), st.booleans(), st.integers(0, 65535))
def test_ack_and_nack_agree_with_pamqp(tag: int, multiple: bool, channel: int) -> None:
    """basic.ack and basic.nack frames from pamqp decode to the same tag and multiple flag."""
    for command, method in ((commands.Basic.Ack(tag, multiple), wire.BASIC_ACK),
                            (commands.Basic.Nack(tag, multiple, False), wire.BASIC_NACK)):
        [frame] = FrameParser().feed(pamqp_frame.marshal(command, channel))
        assert (frame.kind, frame.channel) == (wire.FRAME_METHOD, channel)
        decoded = wire.decode_method(frame.payload)
        assert decoded.id == method
        assert (decoded.args["delivery_tag"], decoded.args["multiple"]) == (tag, multiple)
    assert parse_all(wire.basic_ack(channel, tag, multiple))[0][1].delivery_tag == tag


@given(st.integers(0, 65535), shortstrs, exchange_names, shortstrs)
def test_return_and_close_agree_with_pamqp(code: int, text: str, exchange: str, key: str) -> None:
    """basic.return, channel.close and connection.close decode as pamqp encodes them."""
    returned = pamqp_frame.marshal(commands.Basic.Return(code, text, exchange, key), 1)
    args = wire.decode_method(FrameParser().feed(returned)[0].payload).args
    assert args == {"reply_code": code, "reply_text": text, "exchange": exchange,
                    "routing_key": key}
    for command, method in ((commands.Channel.Close(code, text, 50, 10), wire.CHANNEL_CLOSE),
                            (commands.Connection.Close(code, text, 0, 0), wire.CONNECTION_CLOSE)):
        decoded = wire.decode_method(FrameParser().feed(pamqp_frame.marshal(command, 1))[0].payload)
        assert decoded.id == method
        assert (decoded.args["reply_code"], decoded.args["reply_text"]) == (code, text)


def test_handshake_methods_agree_with_pamqp() -> None:
    """connection.start/tune from pamqp decode; our start-ok, tune-ok, open... parse in pamqp."""
    start = commands.Connection.Start(server_properties={"product": "RabbitMQ", "capabilities": {
        "publisher_confirms": True}}, mechanisms="AMQPLAIN PLAIN", locales="en_US")
    args = wire.decode_method(FrameParser().feed(pamqp_frame.marshal(start, 0))[0].payload).args
    assert args["server_properties"]["capabilities"] == {"publisher_confirms": True}
    assert args["mechanisms"] == "AMQPLAIN PLAIN"
    tune = pamqp_frame.marshal(commands.Connection.Tune(2047, 131072, 60), 0)
    assert wire.decode_method(FrameParser().feed(tune)[0].payload).args == {
        "channel_max": 2047, "frame_max": 131072, "heartbeat": 60}
    blocked = pamqp_frame.marshal(commands.Connection.Blocked("low on memory"), 0)
    assert wire.decode_method(FrameParser().feed(blocked)[0].payload).args == {
        "reason": "low on memory"}

    [(_, start_ok)] = parse_all(wire.start_ok({"connection_name": "x"}, "hook", "pw"))
    assert isinstance(start_ok, commands.Connection.StartOk)
    assert start_ok.client_properties == {"connection_name": "x"}
    assert (start_ok.mechanism, start_ok.response) == ("PLAIN", "\x00hook\x00pw")
    [(_, tune_ok)] = parse_all(wire.tune_ok(2047, 131072, 30))
    assert (tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat) == (2047, 131072, 30)
    [(_, opened)] = parse_all(wire.connection_open("my/vhost"))
    assert opened.virtual_host == "my/vhost"
    [(channel, _)] = parse_all(wire.channel_open(1))
    assert channel == 1
    [(_, select)] = parse_all(wire.confirm_select(1))
    assert isinstance(select, commands.Confirm.Select) and select.nowait is False


def test_declarations_agree_with_pamqp() -> None:
    """exchange.declare, queue.declare and queue.bind parse in pamqp with every flag right."""
    [(_, exchange)] = parse_all(wire.exchange_declare(1, "hookline.events", "topic"))
    assert (exchange.exchange, exchange.exchange_type, exchange.durable, exchange.passive,
            exchange.auto_delete, exchange.internal) == ("hookline.events", "topic", True,
                                                         False, False, False)
    arguments = {"x-queue-type": "quorum", "x-dead-letter-exchange": "hookline.dlx"}
    [(_, queue)] = parse_all(wire.queue_declare(1, "hookline.tenant.acme", arguments))
    assert (queue.queue, queue.durable, queue.exclusive, queue.auto_delete, queue.arguments) == (
        "hookline.tenant.acme", True, False, False, arguments)
    [(_, bind)] = parse_all(wire.queue_bind(1, "q", "hookline.events", "acme.#"))
    assert (bind.queue, bind.exchange, bind.routing_key) == ("q", "hookline.events", "acme.#")
    declare_ok = pamqp_frame.marshal(commands.Queue.DeclareOk("q", 3, 1), 1)
    assert wire.decode_method(FrameParser().feed(declare_ok)[0].payload).args == {
        "queue": "q", "message_count": 3, "consumer_count": 1}


tenant_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,39}", fullmatch=True)


@settings(max_examples=60)
@given(tenant_ids, st.sampled_from(["message.status", "call.incoming"]),
       st.dictionaries(st.text(max_size=10), st.text(max_size=3000), max_size=60),
       st.sampled_from([4096, 8192, 131072]))
def test_event_publish_frames_parse_in_pamqp(tenant: str, kind: str, data: dict[str, str],
                                             frame_max: int) -> None:
    """An event's publish frames parse in pamqp: method, properties, body split at frame_max."""
    event = Event(id=str(uuid.uuid4()), kind=kind, tenant=tenant, provider="twilio",
                  source="twilio/AC1", subject="SM1", time=datetime(2026, 11, 23, tzinfo=UTC),
                  data=data)
    encoded = EventEncoder(1, "hookline.events", frame_max).encode(event, 1_800_000_000)
    frames = parse_all(encoded)
    assert all(channel == 1 for channel, _ in frames)
    publish, content, *bodies = (value for _, value in frames)
    assert isinstance(publish, commands.Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory, publish.immediate) == (
        "hookline.events", event.routing_key, True, False)
    assert isinstance(content, pamqp_header.ContentHeader)
    props = content.properties
    assert (props.content_type, props.delivery_mode, props.message_id, props.message_type,
            props.app_id, props.headers) == ("application/cloudevents+json", 2, event.id,
                                             event.type, "hookline", {"tenant": tenant})
    assert props.timestamp == datetime.fromtimestamp(1_800_000_000, UTC).replace(tzinfo=None) \
        or props.timestamp == datetime.fromtimestamp(1_800_000_000, UTC)
    assert all(isinstance(b, pamqp_body.ContentBody) for b in bodies)
    assert all(len(b.value) <= frame_max - wire.FRAME_OVERHEAD for b in bodies)
    assert content.body_size == len(event.to_json())
    assert b"".join(b.value for b in bodies) == event.to_json()


# pamqp leaves out falsy properties (an empty string or table): give it non-empty ones.
present = shortstrs.filter(bool)


@given(st.builds(commands.Basic.Properties, content_type=st.none() | present,
                 headers=st.none() | tables.filter(bool),
                 delivery_mode=st.none() | st.integers(1, 2), message_id=st.none() | present,
                 message_type=st.none() | present, app_id=st.none() | present,
                 cluster_id=st.just("")),
       st.integers(0, 1 << 40))
def test_content_header_reads_pamqp_properties(props: Any, size: int) -> None:
    """A content header from pamqp decodes to its body size and properties (message_id first)."""
    encoded = pamqp_frame.marshal(pamqp_header.ContentHeader(0, size, props), 1)
    [frame] = FrameParser().feed(encoded)
    header = wire.decode_content_header(frame.payload)
    assert header.body_size == size
    assert header.properties.get("message_id") == props.message_id
    assert header.properties.get("headers") == props.headers
    assert header.properties.get("type") == props.message_type


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_parser_reassembles_frames_split_anywhere(payloads: list[bytes], data: Any) -> None:
    """Frames fed in arbitrary chunks come out whole, in order, none lost."""
    stream = b"".join(wire.frame(wire.FRAME_BODY, 1, p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = FrameParser()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += parser.feed(stream[start:end])
    assert [f.payload for f in got] == payloads


def test_parser_rejects_bad_frame_end_and_oversize() -> None:
    """A frame without its 0xCE end octet, or over frame_max, is a FrameError."""
    with pytest.raises(FrameError, match="frame end"):
        FrameParser().feed(wire.frame(1, 0, b"abcd")[:-1] + b"\x00")
    with pytest.raises(FrameError, match="frame_max"):
        FrameParser(frame_max=100).feed(wire.frame(3, 1, b"x" * 200))


@given(st.binary(max_size=80))
def test_decoders_raise_only_frame_error(payload: bytes) -> None:
    """Arbitrary bytes as a method or content header decode or raise FrameError, nothing else."""
    for decoder in (wire.decode_method, wire.decode_content_header):
        with contextlib.suppress(FrameError):
            decoder(payload)
    for prefix in (b"\x00\x3c\x00\x32", b"\x00\x0a\x00\x0a", b"\x00\x3c\x00\x50"):
        with contextlib.suppress(FrameError):
            wire.decode_method(prefix + payload)


def test_encoders_refuse_what_amqp_cannot_carry() -> None:
    """Over-long short strings, unknown properties and unencodable values raise FrameError."""
    with pytest.raises(FrameError, match="maximum is 255"):
        wire.shortstr("k" * 256)
    with pytest.raises(FrameError, match="unknown basic properties"):
        wire.properties({"colour": "red"})
    with pytest.raises(FrameError, match="cannot encode"):
        wire.table({"x": object()})
    with pytest.raises(FrameError, match="64-bit"):
        wire.table({"x": 1 << 70})
