"""AMQP 0-9-1 frames as bytes under gateway.broker.link: pamqp does the codec, except one path.

Every frame the broker sends is decoded by pamqp (https://pypi.org/project/pamqp/, the codec
under aiormq), and every frame we send is encoded by it too, except the content of a publish:
the content header and body frames of ``basic.publish`` are assembled here from pre-encoded
parts, because building a ``pamqp.commands.Basic.Properties`` object and marshalling it costs
about 15 µs per publish, more than the rest of a confirmed publish's encoding together
(docs/performance.md). tests/gateway/broker/test_wire.py proves those bytes equal pamqp's.

Layout of a frame and of a content header: the specification, sections 4.2.3 and 4.2.6,
https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf.

Every failure to decode or encode is a ``FrameError`` (never a pamqp, struct or Unicode error),
so the connection can report a protocol error instead of crashing.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from pamqp import commands, constants, encode, heartbeat
from pamqp import frame as pamqp_frame
from pamqp.base import Frame as Method
from pamqp.header import ProtocolHeader

PROTOCOL_HEADER: Final = ProtocolHeader().marshal()
HEARTBEAT_FRAME: Final = pamqp_frame.marshal(heartbeat.Heartbeat(), 0)
# type, channel, size before the payload, and the end octet after it (spec 4.2.3).
FRAME_OVERHEAD: Final = 8

_FRAME_HEAD = struct.Struct(">BHI")
_CONTENT_HEAD = struct.Struct(">HHQH")
_U8 = struct.Struct(">B")
_FRAME_END = constants.FRAME_END_CHAR

#: What pamqp's frame parser returns: a method, a content header or body, a heartbeat.
Incoming = pamqp_frame.FrameTypes

__all__ = ["Method", "commands"]


class FrameError(Exception):
    """Bytes that are not valid AMQP 0-9-1: the connection must be closed."""


def encode_method(channel: int, method: Method) -> bytes:
    """One method frame, marshalled by pamqp; a value AMQP cannot carry is a FrameError."""
    try:
        return pamqp_frame.marshal(method, channel)
    except (ValueError, TypeError, struct.error) as exc:
        raise FrameError(f"cannot encode {method.name}: {exc}") from exc


# --- the publish hot path ----------------------------------------------------------------------


def shortstr(value: str) -> bytes:
    """An AMQP short string (a length octet, then UTF-8), as pamqp encodes it."""
    raw = value.encode()
    if len(raw) > 255:
        raise FrameError(f"short string of {len(raw)} bytes, the maximum is 255: {raw[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def table(values: dict[str, Any]) -> bytes:
    """A field table encoded by pamqp: encode it once and reuse it (headers per tenant)."""
    try:
        return encode.field_table(values)
    except (ValueError, TypeError, struct.error) as exc:
        raise FrameError(f"cannot encode the field table {sorted(values)}: {exc}") from exc


def content_frames(
    channel: int, flags: int, encoded_properties: bytes, body: bytes, frame_max: int
) -> bytes:
    """The content header frame of a basic message and its body frames, each at most
    ``frame_max`` bytes; ``flags`` and ``encoded_properties`` are the property flags word and
    the property list in flag order (spec 4.2.6.1). An empty body has no body frame."""
    chunk = frame_max - FRAME_OVERHEAD
    if chunk < 1:
        raise FrameError(f"frame_max {frame_max} leaves no room for a body")
    header = _CONTENT_HEAD.pack(60, 0, len(body), flags) + encoded_properties
    out = [_FRAME_HEAD.pack(constants.FRAME_HEADER, channel, len(header)), header, _FRAME_END]
    if len(body) <= chunk:  # the usual case: one body frame, no slicing
        if body:
            out += (_FRAME_HEAD.pack(constants.FRAME_BODY, channel, len(body)), body, _FRAME_END)
    else:
        for offset in range(0, len(body), chunk):
            part = body[offset : offset + chunk]
            out += (_FRAME_HEAD.pack(constants.FRAME_BODY, channel, len(part)), part, _FRAME_END)
    return b"".join(out)


# --- decoding ----------------------------------------------------------------------------------


class FrameParser:
    """Splits a byte stream into frames and decodes each with pamqp; ``feed`` returns the
    complete ones as (channel, frame) pairs."""

    def __init__(self, frame_max: int = 131072) -> None:
        self.frame_max = frame_max
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, Incoming]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, Incoming]] = []
        offset = 0
        size_of = len(buffer)
        while size_of - offset >= FRAME_OVERHEAD:
            if buffer[offset] == 0x41:  # "A": a protocol header, the broker's version refusal
                raise FrameError(
                    "the broker answered with a protocol header: it does not "
                    f"speak AMQP 0-9-1 ({bytes(buffer[offset : offset + 8])!r})"
                )
            _kind, _channel, size = _FRAME_HEAD.unpack_from(buffer, offset)
            if size + FRAME_OVERHEAD > self.frame_max:
                raise FrameError(f"frame of {size} bytes is over frame_max {self.frame_max}")
            end = offset + FRAME_OVERHEAD + size
            if end > size_of:
                break
            frames.append(decode_frame(bytes(buffer[offset:end])))
            offset = end
        if offset:
            del buffer[:offset]
        return frames


def decode_frame(data: bytes) -> tuple[int, Incoming]:
    """(channel, frame) of exactly one frame's bytes, decoded by pamqp."""
    try:
        consumed, channel, value = pamqp_frame.unmarshal(data)
    except Exception as exc:  # pamqp raises its own, struct, Unicode and index errors alike
        raise FrameError(f"undecodable frame: {exc}") from exc
    if consumed != len(data):
        raise FrameError(f"frame of {len(data)} bytes decoded from only {consumed}")
    return channel, value
