"""One AMQP 0-9-1 connection with one confirming channel, as an asyncio.Protocol.

The transport half of gateway.broker.fastamqp: handshake, declarations, pipelined publishes with
publisher confirms, and everything the broker may send back. Frames are pamqp's objects
(gateway.broker.wire). Why it is shaped this way:

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
from typing import Any, Final, TypeVar, cast

from pamqp import body, commands, header, heartbeat

from gateway.broker import wire
from gateway.broker.wire import FrameError, Method

M = TypeVar("M", bound=Method)

CHANNEL: Final = 1
CLIENT_FRAME_MAX: Final = 131072


class Unconfirmed(Exception):
    """A publish the broker did not confirm; ``cause`` says why, ``kind`` for the logs."""

    def __init__(self, cause: str, kind: str = "failed") -> None:
        super().__init__(cause)
        self.cause = cause
        self.kind = kind  # "returned", "nacked", "expired", "lost"


class BrokerClosed(Exception):
    """The broker closed the connection or the channel (e.g. ACCESS_REFUSED, NOT_FOUND).

    ``reply_code`` and ``reply_text`` are the broker's (0 and "" when the client gave up);
    gateway.broker.failures turns them into a sentence.
    """

    def __init__(self, message: str, reply_code: int = 0, reply_text: str = "") -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text


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

    method: commands.Basic.Return
    message_id: str | None = None
    remaining: int = -1  # -1: header not received yet
    body: list[bytes] = field(default_factory=list)


class Link(asyncio.Protocol):
    """The connection. ``open`` completes the handshake; ``publish`` returns a confirm future."""

    def __init__(
        self, confirm_timeout: float, on_lost: Callable[[Link, BaseException | None], None]
    ) -> None:
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
        self._waiter: tuple[type[Method], asyncio.Future[Method]] | None = None
        self._pending: dict[int, _Pending] = {}
        self._next_tag = 1
        self._incoming: _Incoming | None = None
        self._sweep: asyncio.TimerHandle | None = None
        self._beat: asyncio.TimerHandle | None = None
        self._last_received = self._last_sent = self.loop.time()
        self._lost = False
        self._early: list[Method] = []  # replies that came before their waiter was set
        self.closed: asyncio.Future[BaseException | None] = self.loop.create_future()
        self.server_properties: dict[str, Any] = {}

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's do not subclass asyncio.Transport, hence no isinstance.
        self._transport = stream = cast(asyncio.Transport, transport)
        stream.write(wire.PROTOCOL_HEADER)

    def data_received(self, data: bytes) -> None:
        self._last_received = self.loop.time()
        try:
            for channel, frame in self._parser.feed(data):
                self._dispatch(channel, frame)
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

    async def handshake(
        self,
        username: str,
        password: str,
        vhost: str,
        heartbeat: int,
        client_properties: dict[str, Any],
    ) -> None:
        """connection.start .. open-ok, channel.open, confirm.select (spec 2.2.4)."""
        start = await self._expect(0, commands.Connection.Start)
        self.server_properties = dict(start.server_properties or {})
        mechanisms = str(start.mechanisms).split()
        if "PLAIN" not in mechanisms:
            raise BrokerClosed(f"the broker offers {mechanisms}, this client speaks PLAIN only")
        # PLAIN: "\0user\0password" (RFC 4616), the mechanism RabbitMQ enables by default.
        self._send(
            0,
            commands.Connection.StartOk(
                client_properties=client_properties,
                mechanism="PLAIN",
                response=f"\0{username}\0{password}",
                locale="en_US",
            ),
        )
        tune = await self._expect(0, commands.Connection.Tune)
        self.frame_max = min(tune.frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
        self.heartbeat = negotiate_heartbeat(tune.heartbeat, heartbeat)
        self._send(
            0, commands.Connection.TuneOk(tune.channel_max or 2047, self.frame_max, self.heartbeat)
        )
        self._send(0, commands.Connection.Open(vhost))
        await self._expect(0, commands.Connection.OpenOk)
        self._send(CHANNEL, commands.Channel.Open())
        await self._expect(CHANNEL, commands.Channel.OpenOk)
        self._send(CHANNEL, commands.Confirm.Select())
        await self._expect(CHANNEL, commands.Confirm.SelectOk)
        self.is_open = True
        if self.heartbeat:
            self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    async def call(self, request: Method, reply: type[M]) -> M:
        """Send one synchronous method on the channel and wait for its reply."""
        self._send(CHANNEL, request)
        return await self._expect(CHANNEL, reply)

    async def _expect(self, channel: int, method: type[M]) -> M:
        if self._lost:
            raise ConnectionError("connection closed")
        for early in self._early:
            if isinstance(early, method):
                self._early.remove(early)
                return early
        future: asyncio.Future[Method] = self.loop.create_future()
        self._waiter = (method, future)
        try:
            return cast(M, await future)
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
            future.set_exception(
                Unconfirmed("nacked by the broker (queue full or internal error)", "nacked")
            )
        elif entry.returned is not None:
            future.set_exception(
                Unconfirmed(f"unroutable, returned by the broker ({entry.returned})", "returned")
            )
        else:
            future.set_result(None)

    def _returned(self, incoming: _Incoming) -> None:
        method = incoming.method
        routing_key, message_id = method.routing_key, incoming.message_id
        for entry in self._pending.values():
            if (
                entry.returned is None
                and entry.routing_key == routing_key
                and entry.message_id == message_id
            ):
                entry.returned = f"{method.reply_code} {method.reply_text}"
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
                entry.future.set_exception(
                    Unconfirmed(f"no confirm within {self.confirm_timeout} s", "expired")
                )

    # -- frames in -----------------------------------------------------------------------------

    def _dispatch(self, channel: int, frame: wire.Incoming) -> None:
        kind = type(frame)
        if kind is commands.Basic.Ack or kind is commands.Basic.Nack:
            ack = cast(commands.Basic.Ack, frame)
            self._settle(ack.delivery_tag, ack.multiple, kind is commands.Basic.Nack)
        elif kind is commands.Basic.Return:
            self._incoming = _Incoming(cast(commands.Basic.Return, frame))
        elif kind is header.ContentHeader:
            incoming = self._incoming
            if incoming is None or incoming.remaining >= 0:
                raise FrameError("content header frame without a basic.return before it")
            content = cast(header.ContentHeader, frame)
            incoming.message_id = content.properties.message_id
            incoming.remaining = content.body_size
            if content.body_size == 0:
                self._incoming = None
                self._returned(incoming)
        elif kind is body.ContentBody:
            incoming = self._incoming
            if incoming is None or incoming.remaining < 0:
                raise FrameError("content body frame without a content header before it")
            incoming.remaining -= len(cast(body.ContentBody, frame).value)
            if incoming.remaining <= 0:
                self._incoming = None
                self._returned(incoming)
        elif isinstance(frame, Method):
            self._control(channel, frame)
        elif kind is not heartbeat.Heartbeat:
            raise FrameError(f"unexpected frame {frame!r}")

    def _control(self, channel: int, method: Method) -> None:
        if isinstance(method, commands.Connection.Blocked):
            self.blocked = str(method.reason) or "resource alarm"
        elif isinstance(method, commands.Connection.Unblocked):
            self.blocked = None
        elif isinstance(method, commands.Channel.Flow):
            # RabbitMQ no longer sends it, but the spec lets a peer pause our publishes.
            self.blocked = None if method.active else "channel.flow"
            self._send(channel, commands.Channel.FlowOk(method.active))
        elif isinstance(method, (commands.Connection.Close, commands.Channel.Close)):
            is_connection = isinstance(method, commands.Connection.Close)
            self._send(
                channel,
                commands.Connection.CloseOk() if is_connection else commands.Channel.CloseOk(),
            )
            self._flush()
            what = "connection" if is_connection else "channel"
            code, text = method.reply_code or 0, method.reply_text or ""
            raise BrokerClosed(f"the broker closed the {what}: {code} {text}", code, text)
        elif isinstance(method, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif self._waiter is not None and isinstance(method, self._waiter[0]):
            future = self._waiter[1]
            if not future.done():
                future.set_result(method)
        elif not self.is_open and len(self._early) < 8:
            self._early.append(method)
        else:
            raise FrameError(f"unexpected method {method.name} on channel {channel}")

    # -- frames out ----------------------------------------------------------------------------

    def _send(self, channel: int, method: Method) -> None:
        self._write(wire.encode_method(channel, method))

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
            self.abort(
                ConnectionError(
                    f"no data from the broker for {2 * self.heartbeat} s (missed heartbeats)"
                )
            )
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
        self._send(0, commands.Connection.Close(200, "Goodbye", 0, 0))
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
                entry.future.set_exception(
                    Unconfirmed(
                        f"connection lost before the confirm ({type(exc).__name__}: {exc})", "lost"
                    )
                )
        if not self.closed.done():
            self.closed.set_result(exc)
        self.on_lost(self, exc)


def negotiate_heartbeat(server: int, client: int) -> int:
    """RabbitMQ's rule: the lower of two non-zero proposals, else the non-zero one (0 = off).
    https://www.rabbitmq.com/docs/heartbeats#heartbeats-timeout"""
    return min(server, client) if server and client else max(server, client)


def tls_context(scheme: str) -> ssl.SSLContext | None:
    return ssl.create_default_context() if scheme == "amqps" else None
