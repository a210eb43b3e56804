"""One AMQP 0-9-1 connection with one confirming channel, as an asyncio.Protocol.

The transport half of gateway.broker.fastamqp: handshake, declarations, pipelined publishes with
publisher confirms, and everything the broker may send back. Frames come from
gateway.broker.wire. Why it is shaped this way:

* Writes are coalesced: every frame of one event loop iteration leaves in one
  ``transport.write`` (many concurrent callbacks, one syscall).
* Confirms are tracked by delivery tag, in publish order (tags count from 1 after
  ``confirm.select``); ``basic.ack``/``basic.nack`` with ``multiple`` settle every tag up to
  theirs (https://www.rabbitmq.com/docs/confirms#publisher-confirms).
* A ``basic.return`` (mandatory publish that matched no queue) is always sent before the ack of
  the same publish on the same channel (https://www.rabbitmq.com/docs/confirms#when-publishes-
  are-confirmed). It is matched by order: returns arrive in publish order, so it belongs to the
  oldest unconfirmed publish not yet returned with its routing key and message id (two copies of
  one event in flight have the same routing, so either assignment is the truth).
* One timer per link, not one per publish, enforces the confirm deadline: deadlines grow with
  the tag, so the oldest pending publish always expires first.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

from gateway.broker import wire
from gateway.broker.wire import FrameError, Method

CHANNEL: Final = 1
CLIENT_FRAME_MAX: Final = 131072


class Unconfirmed(Exception):
    """A publish the broker did not confirm; ``cause`` says why, ``kind`` for the logs."""

    def __init__(self, cause: str, kind: str = "failed") -> None:
        super().__init__(cause)
        self.cause = cause
        self.kind = kind  # "returned", "nacked", "expired", "lost"


class BrokerClosed(Exception):
    """The broker closed the connection or the channel (e.g. ACCESS_REFUSED, NOT_FOUND)."""


@dataclass(slots=True)
class _Pending:
    future: asyncio.Future[None]
    routing_key: str
    message_id: str
    deadline: float
    returned: str | None = None


@dataclass(slots=True)
class _Incoming:
    """A basic.return being received: its method, then its header, then its body frames."""

    args: dict[str, Any]
    message_id: str | None = None
    remaining: int = -1  # -1: header not received yet
    body: list[bytes] = field(default_factory=list)


class Link(asyncio.Protocol):
    """The connection. ``open`` completes the handshake; ``publish`` returns a confirm future."""

    def __init__(self, confirm_timeout: float,
                 on_lost: Callable[[Link, BaseException | None], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.confirm_timeout = confirm_timeout
        self.on_lost = on_lost
        self.is_open = False
        self.blocked: str | None = None  # connection.blocked reason while blocked
        self.frame_max = CLIENT_FRAME_MAX
        self.heartbeat = 0
        self._transport: asyncio.Transport | None = None
        self._parser = wire.FrameParser(CLIENT_FRAME_MAX)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._waiter: tuple[frozenset[tuple[int, int]], asyncio.Future[Method]] | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_tag = 1
        self._incoming: _Incoming | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._beat: asyncio.TimerHandle | None = None
        self._last_received = self._last_sent = self.loop.time()
        self._lost = False
        self._early: list[Method] = []  # replies that came before their waiter was set
        self.closed: asyncio.Future[BaseException | None] = self.loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, hence no isinstance.
        self._transport = stream = cast(asyncio.Transport, transport)
        stream.write(wire.PROTOCOL_HEADER)

    def data_received(self, data: bytes) -> None:
        self._last_received = self.loop.time()
        try:
            for frame in self._parser.feed(data):
                self._dispatch(frame)
        except BrokerClosed as exc:  # close-ok is written: let it leave, then close
            transport = self._transport
            self._lost_with(exc)
            if transport is not None:
                transport.close()
        except FrameError as exc:
            self.abort(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost_with(exc or ConnectionError("connection closed"))

    # -- handshake and set-up ------------------------------------------------------------------

    async def handshake(self, username: str, password: str, vhost: str, heartbeat: int,
                        client_properties: dict[str, Any]) -> None:
        """connection.start .. open-ok, channel.open, confirm.select (spec 2.2.4)."""
        start = await self._expect(0, wire.CONNECTION_START)
        mechanisms = str(start.args["mechanisms"]).split()
        if "PLAIN" not in mechanisms:
            raise BrokerClosed(f"the broker offers {mechanisms}, this client speaks PLAIN only")
        self._write(wire.start_ok(client_properties, username, password))
        tune = await self._expect(0, wire.CONNECTION_TUNE)
        server_frame_max = int(tune.args["frame_max"])
        self.frame_max = min(server_frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
        self.heartbeat = negotiate_heartbeat(int(tune.args["heartbeat"]), heartbeat)
        self._write(wire.tune_ok(int(tune.args["channel_max"]) or 2047, self.frame_max,
                                 self.heartbeat))
        self._write(wire.connection_open(vhost))
        await self._expect(0, wire.CONNECTION_OPEN_OK)
        self._write(wire.channel_open(CHANNEL))
        await self._expect(CHANNEL, wire.CHANNEL_OPEN_OK)
        self._write(wire.confirm_select(CHANNEL))
        await self._expect(CHANNEL, wire.CONFIRM_SELECT_OK)
        self.is_open = True
        if self.heartbeat:
            self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    async def call(self, request: bytes, reply: tuple[int, int]) -> Method:
        """Send one synchronous method on the channel and wait for its reply."""
        self._write(request)
        return await self._expect(CHANNEL, reply)

    async def _expect(self, channel: int, method: tuple[int, int]) -> Method:
        if self._lost:
            raise ConnectionError("connection closed")
        for early in self._early:
            if early.id == method:
                self._early.remove(early)
                return early
        future: asyncio.Future[Method] = self.loop.create_future()
        self._waiter = (frozenset({method}), future)
        try:
            return await future
        finally:
            self._waiter = None

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, frames: bytes, routing_key: str, message_id: str) -> asyncio.Future[None]:
        """Write one publish (method, header, body frames); the future settles on its confirm."""
        future: asyncio.Future[None] = self.loop.create_future()
        deadline = self.loop.time() + self.confirm_timeout
        self._pending[self._next_tag] = _Pending(future, routing_key, message_id, deadline)
        self._next_tag += 1
        self._write(frames)
        if self._sweep is None:
            self._sweep = self.loop.call_at(deadline, self._expire)
        return future

    def pending_futures(self) -> list[asyncio.Future[None]]:
        return [p.future for p in self._pending.values() if not p.future.done()]

    def _settle(self, tag: int, multiple: bool, nack: bool) -> None:
        pending = self._pending
        if multiple:
            while pending:
                first = next(iter(pending))
                if first > tag:
                    break
                self._resolve(pending.pop(first), nack)
        else:
            entry = pending.pop(tag, None)
            if entry is not None:
                self._resolve(entry, nack)

    @staticmethod
    def _resolve(entry: _Pending, nack: bool) -> None:
        future = entry.future
        if future.done():  # its caller was cancelled
            return
        if nack:
            future.set_exception(Unconfirmed(
                "nacked by the broker (queue full or internal error)", "nacked"))
        elif entry.returned is not None:
            future.set_exception(Unconfirmed(
                f"unroutable, returned by the broker ({entry.returned})", "returned"))
        else:
            future.set_result(None)

    def _returned(self, incoming: _Incoming) -> None:
        args = incoming.args
        routing_key, message_id = args["routing_key"], incoming.message_id
        for entry in self._pending.values():
            if (entry.returned is None and entry.routing_key == routing_key
                    and entry.message_id == message_id):
                entry.returned = f"{args['reply_code']} {args['reply_text']}"
                return
        # No match: its publish already expired or was cancelled; the ack settles nothing.

    def _expire(self) -> None:
        self._sweep = None
        now = self.loop.time()
        pending = self._pending
        while pending:
            first = next(iter(pending))
            entry = pending[first]
            if entry.deadline > now:
                self._sweep = self.loop.call_at(entry.deadline, self._expire)
                return
            del pending[first]
            if not entry.future.done():
                entry.future.set_exception(Unconfirmed(
                    f"no confirm within {self.confirm_timeout} s", "expired"))

    # -- frames in -----------------------------------------------------------------------------

    def _dispatch(self, frame: wire.Frame) -> None:
        kind = frame.kind
        if kind == wire.FRAME_METHOD:
            method = wire.decode_method(frame.payload)
            mid = method.id
            if mid == wire.BASIC_ACK or mid == wire.BASIC_NACK:
                self._settle(method.args["delivery_tag"], method.args["multiple"],
                             mid == wire.BASIC_NACK)
            elif mid == wire.BASIC_RETURN:
                self._incoming = _Incoming(method.args)
            else:
                self._control(frame.channel, method)
        elif kind == wire.FRAME_HEADER:
            incoming = self._incoming
            if incoming is None or incoming.remaining >= 0:
                raise FrameError("content header frame without a basic.return before it")
            header = wire.decode_content_header(frame.payload)
            incoming.message_id = header.properties.get("message_id")
            incoming.remaining = header.body_size
            if header.body_size == 0:
                self._incoming = None
                self._returned(incoming)
        elif kind == wire.FRAME_BODY:
            incoming = self._incoming
            if incoming is None or incoming.remaining < 0:
                raise FrameError("content body frame without a content header before it")
            incoming.remaining -= len(frame.payload)
            if incoming.remaining <= 0:
                self._incoming = None
                self._returned(incoming)
        elif kind != wire.FRAME_HEARTBEAT:
            raise FrameError(f"unknown frame type {kind}")

    def _control(self, channel: int, method: Method) -> None:
        mid = method.id
        if mid == wire.CONNECTION_BLOCKED:
            self.blocked = str(method.args["reason"]) or "resource alarm"
        elif mid == wire.CONNECTION_UNBLOCKED:
            self.blocked = None
        elif mid == wire.CHANNEL_FLOW:
            # RabbitMQ no longer sends it, but the spec lets a peer pause our publishes.
            active = bool(method.args["active"])
            self.blocked = None if active else "channel.flow"
            self._write(wire.flow_ok(channel, active))
        elif mid in (wire.CONNECTION_CLOSE, wire.CHANNEL_CLOSE):
            self._write(wire.close_ok(channel))
            self._flush()
            what = "connection" if mid == wire.CONNECTION_CLOSE else "channel"
            raise BrokerClosed(f"the broker closed the {what}: {method.args['reply_code']} "
                               f"{method.args['reply_text']}")
        elif mid == wire.CONNECTION_CLOSE_OK:
            if self._transport is not None:
                self._transport.close()
        elif self._waiter is not None and mid in self._waiter[0]:
            future = self._waiter[1]
            if not future.done():
                future.set_result(method)
        elif not self.is_open and len(self._early) < 8:
            self._early.append(method)
        else:
            raise FrameError(f"unexpected method {mid} on channel {channel}")

    # -- frames out ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            self._last_sent = self.loop.time()
        out.clear()

    def _heartbeat(self) -> None:
        """Send a heartbeat when idle; give up on a peer silent for two intervals (spec 4.2.7)."""
        now = self.loop.time()
        if now - self._last_received > 2 * self.heartbeat:
            self.abort(ConnectionError(f"no data from the broker for {2 * self.heartbeat} s "
                                        "(missed heartbeats)"))
            return
        if now - self._last_sent >= self.heartbeat / 2:
            self._write(wire.HEARTBEAT_FRAME)
        self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    # -- closing -------------------------------------------------------------------------------

    async def close(self, timeout: float) -> None:
        """connection.close and wait for close-ok (bounded), then drop the transport."""
        if self._lost:
            return
        self.is_open = False
        self._write(wire.close(0))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort(ConnectionError("no close-ok from the broker"))

    def abort(self, exc: BaseException) -> None:
        transport = self._transport
        self._lost_with(exc)
        if transport is not None:
            transport.abort()

    def _lost_with(self, exc: BaseException) -> None:
        if self._lost:
            return
        self._lost = True
        self.is_open = False
        for handle in (self._sweep, self._beat):
            if handle is not None:
                handle.cancel()
        if self._waiter is not None and not self._waiter[1].done():
            self._waiter[1].set_exception(exc)
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(Unconfirmed(
                    f"connection lost before the confirm ({type(exc).__name__}: {exc})", "lost"))
        if not self.closed.done():
            self.closed.set_result(exc)
        self.on_lost(self, exc)


def negotiate_heartbeat(server: int, client: int) -> int:
    """RabbitMQ's rule: the lower of two non-zero proposals, else the non-zero one (0 = off).
    https://www.rabbitmq.com/docs/heartbeats#heartbeats-timeout"""
    return min(server, client) if server and client else max(server, client)


def tls_context(scheme: str) -> ssl.SSLContext | None:
    return ssl.create_default_context() if scheme == "amqps" else None
