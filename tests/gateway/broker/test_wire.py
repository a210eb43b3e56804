"""The AMQP frame layer: the hand-written publish path is byte for byte pamqp's, the parser
splits any stream into pamqp's frames and turns every malformed input into a FrameError."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from gateway.broker import wire
from gateway.broker.fastamqp import APP_ID, EventEncoder
from gateway.broker.wire import FrameError, FrameParser
from schemas.events import CONTENT_TYPE, Event

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20).filter(
    lambda n: len(n.encode()) <= 255
)
scalars = st.one_of(
    st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1), st.text(max_size=50), st.none()
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=12,
)
tables = st.dictionaries(names, values, max_size=6)
shortstrs = st.text(max_size=60).filter(lambda s: len(s.encode()) <= 255)
# pamqp leaves out falsy properties (an empty string or table): give it non-empty ones.
present = shortstrs.filter(bool)
frame_maxes = st.sampled_from([4096, 8192, 131072])


def pamqp_publish(
    channel: int, exchange: str, routing_key: str, props: Any, payload: bytes, frame_max: int
) -> bytes:
    """The frames of one basic.publish as pamqp marshals them, body split at frame_max."""
    chunk = frame_max - wire.FRAME_OVERHEAD
    frames = [
        pamqp_frame.marshal(
            commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
            channel,
        ),
        pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(payload), props), channel),
    ]
    frames += [
        pamqp_frame.marshal(pamqp_body.ContentBody(payload[at : at + chunk]), channel)
        for at in range(0, len(payload), chunk)
    ]
    return b"".join(frames)


def body_of(frame: wire.Incoming) -> bytes:
    """The payload of a frame that must be a content body."""
    assert isinstance(frame, pamqp_body.ContentBody), frame
    return frame.value


tenant_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,39}", fullmatch=True)


@settings(max_examples=80)
@given(
    tenant_ids,
    st.sampled_from(["message.status", "call.incoming"]),
    present,
    st.dictionaries(st.text(max_size=10), st.text(max_size=3000), max_size=60),
    frame_maxes,
    st.integers(0, 4_102_444_800),
    st.integers(1, 65535),
)
def test_event_publish_is_byte_identical_to_pamqp(
    tenant: str,
    kind: str,
    event_id: str,
    data: dict[str, str],
    frame_max: int,
    timestamp: int,
    channel: int,
) -> None:
    """EventEncoder's hand-written frames equal pamqp's marshalling of the same publish:
    headers, message id, type, persistence, bodies from one frame to many."""
    event = Event(
        id=event_id,
        kind=kind,
        tenant=tenant,
        provider="twilio",
        source="twilio/AC1",
        subject="SM1",
        time=datetime(2026, 11, 23, tzinfo=UTC),
        data=data,
    )
    ours = EventEncoder(channel, "hookline.events", frame_max).encode(event, timestamp)
    props = commands.Basic.Properties(
        content_type=CONTENT_TYPE,
        headers={"tenant": tenant},
        delivery_mode=2,
        message_id=event_id,
        timestamp=datetime.fromtimestamp(timestamp, UTC),
        message_type=event.type,
        app_id=APP_ID,
    )
    assert ours == pamqp_publish(
        channel, "hookline.events", event.routing_key, props, event.to_json(), frame_max
    )


@given(
    st.builds(
        commands.Basic.Properties,
        content_type=st.none() | present,
        headers=st.none() | tables.filter(bool),
        delivery_mode=st.none() | st.integers(1, 2),
        message_id=st.none() | present,
        correlation_id=st.none() | present,
        message_type=st.none() | present,
        app_id=st.none() | present,
    ),
    st.sampled_from([b"", b"{}", b"x" * 4088, b"y" * 4089, bytes(range(256)) * 70]),
    frame_maxes,
)
def test_content_frames_are_byte_identical_to_pamqp(
    props: Any, payload: bytes, frame_max: int
) -> None:
    """wire.content_frames frames any property set and body (empty, exactly one frame, one
    byte over, many frames) as pamqp does."""
    flags_and_list = props.marshal()
    flags, encoded = int.from_bytes(flags_and_list[:2], "big"), flags_and_list[2:]
    expected = pamqp_publish(1, "x", "k", props, payload, frame_max)
    method = pamqp_frame.marshal(
        commands.Basic.Publish(exchange="x", routing_key="k", mandatory=True), 1
    )
    assert method + wire.content_frames(1, flags, encoded, payload, frame_max) == expected


@given(tables)
def test_table_and_shortstr_are_pamqp_encodings(value: dict[str, Any]) -> None:
    """The two pre-encoded parts of a publish decode in pamqp to what was given."""
    from pamqp import decode

    encoded = wire.table(value)
    assert decode.field_table(encoded) == (len(encoded), value)
    assert decode.short_str(wire.shortstr("hookline")) == (9, "hookline")


def test_event_publish_frames_parse_in_pamqp() -> None:
    """An event's frames parse back in pamqp with mandatory set and the body whole."""
    event = Event(
        id=str(uuid.uuid4()),
        kind="message.status",
        tenant="acme",
        provider="twilio",
        source="twilio/AC1",
        subject="SM1",
        time=datetime(2026, 11, 23, tzinfo=UTC),
        data={"x": "y" * 10000},
    )
    encoded = EventEncoder(1, "hookline.events", 4096).encode(event, 1_800_000_000)
    frames = FrameParser().feed(encoded)
    publish, content, *bodies = (value for _, value in frames)
    assert isinstance(publish, commands.Basic.Publish) and publish.mandatory
    assert isinstance(content, pamqp_header.ContentHeader)
    assert content.properties.message_id == event.id
    assert len(bodies) == 3
    assert b"".join(body_of(b) for b in bodies) == event.to_json()


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8), st.data())
def test_parser_reassembles_frames_split_anywhere(payloads: list[bytes], data: Any) -> None:
    """Frames fed in arbitrary chunks come out whole, in order, none lost."""
    stream = b"".join(pamqp_frame.marshal(pamqp_body.ContentBody(p), 1) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = FrameParser()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += parser.feed(stream[start:end])
    assert [body_of(frame) for _, frame in got] == payloads


def test_parser_rejects_bad_frame_end_oversize_and_other_protocols() -> None:
    """A frame without its 0xCE end octet, one over frame_max, or a protocol header (the
    broker refusing our version) is a FrameError."""
    ack = pamqp_frame.marshal(commands.Basic.Ack(1), 1)
    with pytest.raises(FrameError, match="undecodable"):
        FrameParser().feed(ack[:-1] + b"\x00")
    with pytest.raises(FrameError, match="frame_max"):
        FrameParser(frame_max=100).feed(pamqp_frame.marshal(pamqp_body.ContentBody(b"x" * 200), 1))
    with pytest.raises(FrameError, match="protocol header"):
        FrameParser().feed(b"AMQP\x00\x00\x09\x00")


@given(st.binary(max_size=80))
def test_decoding_raises_only_frame_error(payload: bytes) -> None:
    """Arbitrary bytes inside a method or content header frame decode or raise FrameError."""
    for prefix in (b"\x00\x3c\x00\x32", b"\x00\x0a\x00\x0a", b"\x00\x3c\x00\x50", b""):
        for kind in (1, 2):
            raw = bytes([kind]) + b"\x00\x01" + len(prefix + payload).to_bytes(4, "big")
            with contextlib.suppress(FrameError):
                FrameParser().feed(raw + prefix + payload + b"\xce")


def test_encoders_refuse_what_amqp_cannot_carry() -> None:
    """Over-long short strings and routing keys, and unencodable values raise FrameError."""
    with pytest.raises(FrameError, match="maximum is 255"):
        wire.shortstr("k" * 256)
    with pytest.raises(FrameError, match=r"Basic\.Publish"):
        wire.encode_method(1, commands.Basic.Publish(exchange="x", routing_key="k" * 256))
    with pytest.raises(FrameError, match="field table"):
        wire.table({"x": object()})
    with pytest.raises(FrameError, match="no room"):
        wire.content_frames(1, 0, b"", b"x", 8)
