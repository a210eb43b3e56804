"""What one HTTP client may cost: time to send its request, size of its head, connections.

uvicorn bounds the idle time between requests of a kept-alive connection and, with
``limit_concurrency``, the connections served at once, but with the httptools parser it does
not bound how long a client may take to send a request head or body, nor how large the head
may grow: a silent connection stayed open for minutes, and unfinished multi-megabyte headers
were buffered for as long as the client liked. ``GuardedHttpToolsProtocol`` is uvicorn's
httptools protocol plus those bounds (``gateway.settings.ClientLimits``):

* the head (request line and headers) must arrive within ``header_timeout_s`` of the
  connection, or of the request's first byte on a kept-alive connection, else 408;
* the body must arrive within ``body_timeout_s`` of the head, else 408 (the endpoint then
  sees the client go away: gateway.http.middleware.ClientDisconnected);
* a head over ``max_header_bytes`` or with more than ``max_headers`` fields is 431.

Every refusal closes the connection. A request that arrives in one read, as providers' do,
arms no timer at all: timers are set only when a read leaves a head or a body unfinished.
The limits reach the protocol as an attribute of uvicorn's Config (``LIMITS_ATTRIBUTE``), which
travels with the Config to the processes of ``serve --workers N``.
https://www.rfc-editor.org/rfc/rfc9110#name-408-request-timeout and
https://www.rfc-editor.org/rfc/rfc6585#section-5 (431)
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any, Final

import httptools
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import ClientLimits

LIMITS_ATTRIBUTE: Final = "hookline_client_limits"

logger = structlog.get_logger("hookline.http")


class _HeadRefused(Exception):
    """Raised from a parser callback to stop parsing a head that broke a limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and size limits on what clients send."""

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ClientLimits = getattr(config, LIMITS_ATTRIBUTE, None) or ClientLimits()
        self._in_head = True  # the current request's head is not complete yet
        self._in_body = False  # its head is, its body is not
        self._head_bytes = 0  # bytes of reads that ended inside the head
        self._read_bytes = 0  # size of the read being parsed
        self._refusing = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A client that connects and says nothing is on the head's clock from now.
        self._arm(self.limits.header_timeout_s, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            return
        self._unset_keepalive_if_required()
        self._read_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # hookline serves no upgrades: the request goes on as plain HTTP
        except httptools.HttpParserError as exc:
            if isinstance(exc.__cause__ or exc.__context__, _HeadRefused):
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header_limit")
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, "invalid_http")
            return
        if self._in_head:
            # A read that ended inside the head is head (a pipelined request's tail aside).
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header_limit")
            elif self._timer is None:
                self._arm(self.limits.header_timeout_s, "header_timeout")
        elif self._in_body:
            if self._timer is None:
                self._arm(self.limits.body_timeout_s, "body_timeout")
        elif self._timer is not None:
            self._disarm()

    # Parser callbacks (uvicorn's, plus the bookkeeping of the limits). Header fields are
    # counted once the head is complete: until then their memory is bounded by the head's size.

    def on_message_begin(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if len(self.headers) > self.limits.max_headers:
            raise _HeadRefused(f"more than {self.limits.max_headers} header fields")
        if self._head_bytes + self._read_bytes > self.limits.max_header_bytes:
            # The read that completed the head may hold a large part of it: size it exactly
            # (only then: the common small request skips the sum).
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.limits.max_header_bytes:
                raise _HeadRefused(f"request head of {size} bytes")
        if self._timer is not None:
            self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._timer is not None:
            self._disarm()
        super().on_message_complete()

    # Refusals.

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, reason: str) -> None:
        self._timer = None
        cycle = self.cycle
        if self._in_body and cycle is not None and cycle.response_started:
            # Answered already (say a 413 before the body): the rest is not worth waiting for.
            self.transport.close()
            return
        self._refuse(HTTPStatus.REQUEST_TIMEOUT, reason)

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        """Answer ``status`` with its fixed phrase and close the connection."""
        if self._refusing or self.transport.is_closing():
            return
        self._refusing = True
        self._disarm()
        body = status.phrase.encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: text/plain; "
            f"charset=utf-8\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
        client = self.client
        logger.info(
            "client_refused",
            status=status.value,
            reason=reason,
            client=client[0] if client else None,
        )
