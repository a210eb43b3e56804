"""AMQP 0-9-1 frames as bytes: the pure codec under gateway.broker.fastamqp (no I/O).

Only what a confirming publisher needs: the connection and channel handshakes, confirm.select,
exchange/queue declarations and bindings, basic.publish with its content, and the frames the
broker sends back (acks, nacks, returns, blocked, close). Written from the specification,
https://www.rabbitmq.com/resources/specs/amqp0-9-1.pdf (sections 2.3 and 4.2, and the class
reference), with RabbitMQ's field-table types (https://www.rabbitmq.com/docs/amqp-0-9-1-errata
#section_3) and its ``connection.blocked`` extension
(https://www.rabbitmq.com/docs/connection-blocked).

Every decoder raises ``FrameError`` (never IndexError or struct.error) on malformed input, so the
connection can report a protocol error instead of crashing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_END_BYTE: Final = b"\xce"
# type, channel, size before the payload, and the end octet after it (spec 4.2.3).
FRAME_OVERHEAD: Final = 8
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"

# (class id, method id) of the methods used here (spec, class reference).
CONNECTION_START: Final = (10, 10)
CONNECTION_START_OK: Final = (10, 11)
CONNECTION_SECURE: Final = (10, 20)
CONNECTION_TUNE: Final = (10, 30)
CONNECTION_TUNE_OK: Final = (10, 31)
CONNECTION_OPEN: Final = (10, 40)
CONNECTION_OPEN_OK: Final = (10, 41)
CONNECTION_CLOSE: Final = (10, 50)
CONNECTION_CLOSE_OK: Final = (10, 51)
CONNECTION_BLOCKED: Final = (10, 60)
CONNECTION_UNBLOCKED: Final = (10, 61)
CHANNEL_OPEN: Final = (20, 10)
CHANNEL_OPEN_OK: Final = (20, 11)
CHANNEL_FLOW: Final = (20, 20)
CHANNEL_FLOW_OK: Final = (20, 21)
CHANNEL_CLOSE: Final = (20, 40)
CHANNEL_CLOSE_OK: Final = (20, 41)
EXCHANGE_DECLARE: Final = (40, 10)
EXCHANGE_DECLARE_OK: Final = (40, 11)
QUEUE_DECLARE: Final = (50, 10)
QUEUE_DECLARE_OK: Final = (50, 11)
QUEUE_BIND: Final = (50, 20)
QUEUE_BIND_OK: Final = (50, 21)
BASIC_PUBLISH: Final = (60, 40)
BASIC_RETURN: Final = (60, 50)
BASIC_ACK: Final = (60, 80)
BASIC_NACK: Final = (60, 120)
CONFIRM_SELECT: Final = (85, 10)
CONFIRM_SELECT_OK: Final = (85, 11)

BASIC_CLASS: Final = 60

# Basic content properties, in the order of their flag bits (bit 15 first, spec 4.2.6.1).
PROPERTY_NAMES: Final = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority",
    "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type", "user_id",
    "app_id", "cluster_id",
)
_PROPERTY_KINDS: Final = {
    "headers": "table", "delivery_mode": "octet", "priority": "octet", "timestamp": "timestamp",
}

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_HEAD = struct.Struct(">HH")
_CONTENT_HEAD = struct.Struct(">HHQH")


class FrameError(Exception):
    """Bytes that are not valid AMQP 0-9-1: the connection must be closed."""


# --- encoding ----------------------------------------------------------------------------------


def shortstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise FrameError(f"short string of {len(raw)} bytes, the maximum is 255: {raw[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def longstr(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U32.pack(len(raw)) + raw


def table(values: dict[str, Any]) -> bytes:
    """A field table; values are typed as RabbitMQ reads them (errata section 3)."""
    parts = [shortstr(name) + _field_value(value) for name, value in values.items()]
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


def _field_value(value: Any) -> bytes:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return b"t" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return b"I" + struct.pack(">i", value)
        if -(1 << 63) <= value < (1 << 63):
            return b"l" + struct.pack(">q", value)
        raise FrameError(f"integer {value} does not fit a signed 64-bit field")
    if isinstance(value, float):
        return b"d" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"S" + longstr(value)
    if isinstance(value, bytes):
        return b"x" + longstr(value)
    if isinstance(value, datetime):
        return b"T" + _U64.pack(int(value.timestamp()))
    if isinstance(value, dict):
        return b"F" + table(value)
    if isinstance(value, (list, tuple)):
        items = b"".join(_field_value(item) for item in value)
        return b"A" + _U32.pack(len(items)) + items
    if value is None:
        return b"V"
    raise FrameError(f"cannot encode a {type(value).__name__} in a field table")


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + FRAME_END_BYTE


def method_frame(channel: int, method: tuple[int, int], arguments: bytes = b"") -> bytes:
    return frame(FRAME_METHOD, channel, _METHOD_HEAD.pack(*method) + arguments)


def bits(*flags: bool) -> bytes:
    """Consecutive bit arguments packed into one octet, first flag in the lowest bit."""
    octet = 0
    for position, flag in enumerate(flags):
        if flag:
            octet |= 1 << position
    return _U8.pack(octet)


def start_ok(client_properties: dict[str, Any], username: str, password: str) -> bytes:
    # PLAIN: "\0user\0password" (RFC 4616), the mechanism RabbitMQ enables by default.
    response = b"\x00" + username.encode() + b"\x00" + password.encode()
    return method_frame(0, CONNECTION_START_OK, table(client_properties) + shortstr("PLAIN")
                        + longstr(response) + shortstr("en_US"))


def tune_ok(channel_max: int, frame_max: int, heartbeat: int) -> bytes:
    return method_frame(0, CONNECTION_TUNE_OK, struct.pack(">HIH", channel_max, frame_max,
                                                           heartbeat))


def connection_open(vhost: str) -> bytes:
    return method_frame(0, CONNECTION_OPEN, shortstr(vhost) + shortstr("") + bits(False))


def close(channel: int, reply_code: int = 200, reply_text: str = "Goodbye") -> bytes:
    """connection.close on channel 0, channel.close on any other channel."""
    method = CONNECTION_CLOSE if channel == 0 else CHANNEL_CLOSE
    return method_frame(channel, method, _U16.pack(reply_code) + shortstr(reply_text)
                        + _U16.pack(0) + _U16.pack(0))


def close_ok(channel: int) -> bytes:
    return method_frame(channel, CONNECTION_CLOSE_OK if channel == 0 else CHANNEL_CLOSE_OK)


def channel_open(channel: int) -> bytes:
    return method_frame(channel, CHANNEL_OPEN, shortstr(""))


def flow_ok(channel: int, active: bool) -> bytes:
    return method_frame(channel, CHANNEL_FLOW_OK, bits(active))


def confirm_select(channel: int) -> bytes:
    return method_frame(channel, CONFIRM_SELECT, bits(False))


def exchange_declare(channel: int, name: str, kind: str, *, durable: bool = True,
                     passive: bool = False) -> bytes:
    return method_frame(channel, EXCHANGE_DECLARE, _U16.pack(0) + shortstr(name) + shortstr(kind)
                        + bits(passive, durable, False, False, False) + table({}))


def queue_declare(channel: int, name: str, arguments: dict[str, Any], *, durable: bool = True,
                  passive: bool = False) -> bytes:
    return method_frame(channel, QUEUE_DECLARE, _U16.pack(0) + shortstr(name)
                        + bits(passive, durable, False, False, False) + table(arguments))


def queue_bind(channel: int, queue: str, exchange: str, routing_key: str) -> bytes:
    return method_frame(channel, QUEUE_BIND, _U16.pack(0) + shortstr(queue) + shortstr(exchange)
                        + shortstr(routing_key) + bits(False) + table({}))


def basic_ack(channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
    """What the broker sends to confirm; encoded here for tests and symmetry."""
    return method_frame(channel, BASIC_ACK, _U64.pack(delivery_tag) + bits(multiple))


def basic_nack(channel: int, delivery_tag: int, multiple: bool = False) -> bytes:
    return method_frame(channel, BASIC_NACK, _U64.pack(delivery_tag) + bits(multiple, False))


def basic_return(channel: int, reply_code: int, reply_text: str, exchange: str,
                 routing_key: str) -> bytes:
    return method_frame(channel, BASIC_RETURN, _U16.pack(reply_code) + shortstr(reply_text)
                        + shortstr(exchange) + shortstr(routing_key))


def publish_method(channel: int, exchange: str, routing_key: str, *,
                   mandatory: bool = True) -> bytes:
    """The basic.publish method frame; constant per (exchange, routing key): cache it."""
    return method_frame(channel, BASIC_PUBLISH, _U16.pack(0) + shortstr(exchange)
                        + shortstr(routing_key) + bits(mandatory, False))


def properties(values: dict[str, Any]) -> tuple[int, bytes]:
    """(property flags, encoded property list) of basic content properties (spec 4.2.6.1).

    Unknown names raise FrameError; ``None`` values are left out.
    """
    unknown = set(values) - set(PROPERTY_NAMES)
    if unknown:
        raise FrameError(f"unknown basic properties {sorted(unknown)}; expected {PROPERTY_NAMES}")
    flags = 0
    parts: list[bytes] = []
    for position, name in enumerate(PROPERTY_NAMES):
        value = values.get(name)
        if value is None:
            continue
        flags |= 1 << (15 - position)
        kind = _PROPERTY_KINDS.get(name, "shortstr")
        if kind == "table":
            parts.append(table(value))
        elif kind == "octet":
            parts.append(_U8.pack(value))
        elif kind == "timestamp":
            seconds = int(value.timestamp()) if isinstance(value, datetime) else int(value)
            parts.append(_U64.pack(seconds))
        else:
            parts.append(shortstr(value))
    return flags, b"".join(parts)


def content_frames(channel: int, flags: int, encoded_properties: bytes, body: bytes,
                   frame_max: int) -> bytes:
    """The content header frame and the body frames, each at most ``frame_max`` bytes."""
    header = _CONTENT_HEAD.pack(BASIC_CLASS, 0, len(body), flags) + encoded_properties
    out = [frame(FRAME_HEADER, channel, header)]
    chunk = frame_max - FRAME_OVERHEAD
    if chunk < 1:
        raise FrameError(f"frame_max {frame_max} leaves no room for a body")
    for offset in range(0, len(body), chunk):
        out.append(frame(FRAME_BODY, channel, body[offset:offset + chunk]))
    return b"".join(out)


# --- decoding ----------------------------------------------------------------------------------


class Reader:
    """Reads AMQP fields from a payload; every overrun is a FrameError."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def _take(self, size: int) -> bytes:
        start = self.offset
        end = start + size
        if end > len(self.data):
            raise FrameError(f"truncated field: needed {size} bytes at offset {start}, "
                             f"the payload has {len(self.data)}")
        self.offset = end
        return self.data[start:end]

    def octet(self) -> int:
        return int(self._take(1)[0])

    def short(self) -> int:
        value: int = _U16.unpack(self._take(2))[0]
        return value

    def long(self) -> int:
        value: int = _U32.unpack(self._take(4))[0]
        return value

    def longlong(self) -> int:
        value: int = _U64.unpack(self._take(8))[0]
        return value

    def shortstr(self) -> str:
        return self._text(self._take(self.octet()))

    def longstr(self) -> bytes:
        return self._take(self.long())

    def table(self) -> dict[str, Any]:
        end = self.long() + self.offset
        if end > len(self.data):
            raise FrameError(f"field table runs past the payload ({end} > {len(self.data)})")
        values: dict[str, Any] = {}
        while self.offset < end:
            name = self.shortstr()
            values[name] = self.value()
        if self.offset != end:
            raise FrameError("field table length does not match its fields")
        return values

    def value(self) -> Any:
        kind = self._take(1)
        if kind == b"t":
            return self.octet() != 0
        if kind == b"b":
            return struct.unpack(">b", self._take(1))[0]
        if kind == b"B":
            return self.octet()
        if kind in (b"s", b"U"):
            return struct.unpack(">h", self._take(2))[0]
        if kind == b"u":
            return self.short()
        if kind == b"I":
            return struct.unpack(">i", self._take(4))[0]
        if kind == b"i":
            return self.long()
        if kind in (b"l", b"L"):
            return struct.unpack(">q", self._take(8))[0]
        if kind == b"f":
            return struct.unpack(">f", self._take(4))[0]
        if kind == b"d":
            return struct.unpack(">d", self._take(8))[0]
        if kind == b"D":
            scale = self.octet()
            unscaled = struct.unpack(">i", self._take(4))[0]
            return Decimal(unscaled).scaleb(-scale)
        if kind == b"S":
            return self._text(self.longstr())
        if kind == b"x":
            return self.longstr()
        if kind == b"T":
            return datetime.fromtimestamp(self.longlong(), UTC)
        if kind == b"F":
            return self.table()
        if kind == b"A":
            end = self.long() + self.offset
            if end > len(self.data):
                raise FrameError("field array runs past the payload")
            items = []
            while self.offset < end:
                items.append(self.value())
            return items
        if kind == b"V":
            return None
        raise FrameError(f"unknown field type {kind!r}")

    @staticmethod
    def _text(raw: bytes) -> str:
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise FrameError(f"string field is not UTF-8: {raw[:40]!r}") from exc


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    channel: int
    payload: bytes


class FrameParser:
    """Splits a byte stream into frames; ``feed`` returns the complete ones."""

    def __init__(self, frame_max: int = 131072) -> None:
        self.frame_max = frame_max
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        offset = 0
        size_of = len(buffer)
        while size_of - offset >= FRAME_OVERHEAD:
            kind, channel, size = _FRAME_HEAD.unpack_from(buffer, offset)
            if size + FRAME_OVERHEAD > self.frame_max:
                raise FrameError(f"frame of {size} bytes is over frame_max {self.frame_max}")
            end = offset + 7 + size
            if end >= size_of:
                break
            if buffer[end] != FRAME_END:
                raise FrameError(f"frame end octet is {buffer[end]:#x}, expected 0xce")
            frames.append(Frame(kind, channel, bytes(buffer[offset + 7:end])))
            offset = end + 1
        if offset:
            del buffer[:offset]
        return frames


@dataclass(frozen=True, slots=True)
class Method:
    """A decoded method: its (class, method) id and its arguments by name."""

    id: tuple[int, int]
    args: dict[str, Any]


def decode_method(payload: bytes) -> Method:
    if len(payload) < 4:
        raise FrameError(f"method frame of {len(payload)} bytes, expected at least 4")
    method_id: tuple[int, int] = _METHOD_HEAD.unpack_from(payload)
    read = Reader(payload, 4)
    if method_id == BASIC_ACK:
        tag, flags = read.longlong(), read.octet()
        return Method(method_id, {"delivery_tag": tag, "multiple": flags & 1 == 1})
    if method_id == BASIC_NACK:
        tag, flags = read.longlong(), read.octet()
        return Method(method_id, {"delivery_tag": tag, "multiple": flags & 1 == 1,
                                  "requeue": flags & 2 == 2})
    if method_id == BASIC_RETURN:
        return Method(method_id, {"reply_code": read.short(), "reply_text": read.shortstr(),
                                  "exchange": read.shortstr(), "routing_key": read.shortstr()})
    if method_id == CONNECTION_START:
        return Method(method_id, {"version_major": read.octet(), "version_minor": read.octet(),
                                  "server_properties": read.table(),
                                  "mechanisms": read.longstr().decode("latin-1"),
                                  "locales": read.longstr().decode("latin-1")})
    if method_id == CONNECTION_TUNE:
        return Method(method_id, {"channel_max": read.short(), "frame_max": read.long(),
                                  "heartbeat": read.short()})
    if method_id in (CONNECTION_CLOSE, CHANNEL_CLOSE):
        return Method(method_id, {"reply_code": read.short(), "reply_text": read.shortstr(),
                                  "class_id": read.short(), "method_id": read.short()})
    if method_id == CONNECTION_BLOCKED:
        return Method(method_id, {"reason": read.shortstr()})
    if method_id in (CHANNEL_FLOW, CHANNEL_FLOW_OK):
        return Method(method_id, {"active": read.octet() & 1 == 1})
    if method_id == QUEUE_DECLARE_OK:
        return Method(method_id, {"queue": read.shortstr(), "message_count": read.long(),
                                  "consumer_count": read.long()})
    # The other -ok methods carry nothing this client reads.
    return Method(method_id, {})


@dataclass(frozen=True, slots=True)
class ContentHeader:
    class_id: int
    body_size: int
    properties: dict[str, Any]


def decode_content_header(payload: bytes) -> ContentHeader:
    if len(payload) < _CONTENT_HEAD.size:
        raise FrameError(f"content header of {len(payload)} bytes, expected at least 14")
    class_id, _weight, body_size, flags = _CONTENT_HEAD.unpack_from(payload)
    if flags & 1:
        raise FrameError("property flags continue into a second word; basic has 14 properties")
    read = Reader(payload, _CONTENT_HEAD.size)
    values: dict[str, Any] = {}
    for position, name in enumerate(PROPERTY_NAMES):
        if not flags & (1 << (15 - position)):
            continue
        kind = _PROPERTY_KINDS.get(name, "shortstr")
        if kind == "table":
            values[name] = read.table()
        elif kind == "octet":
            values[name] = read.octet()
        elif kind == "timestamp":
            values[name] = datetime.fromtimestamp(read.longlong(), UTC)
        else:
            values[name] = read.shortstr()
    return ContentHeader(class_id, body_size, values)
