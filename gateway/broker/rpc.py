"""Ask the TwiML workers for an answer over the broker (RPC), with a hard deadline.

A request is the call's or message's event (CloudEvents JSON) published to ``hookline.twiml``
with ``reply_to`` (this process's one reply queue) and a fresh ``correlation_id``; the worker's
reply comes back on the reply queue and is matched to its waiting caller by that id. Every
caller awaits only its own future, so concurrent calls never wait for each other.
https://www.rabbitmq.com/tutorials/tutorial-six-python (request/reply pattern)

``request`` never raises for a broker problem: the outcome says what happened and the HTTP
layer answers with the tenant's fallback. A reply that arrives after its caller gave up (or
for an id this process does not know) is dropped and counted in ``late_replies``. A worker
whose handler failed on the request answers at once with an error reply (the header
``x-hookline-error``): the outcome ``worker_error``, so the caller falls back without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from gateway.broker.memory import MemoryBroker, MemoryMessage
from gateway.errors import PublishError
from schemas.events import Event
from schemas.topology import (
    DEADLINE_HEADER,
    ERROR_HEADER,
    REPLY_QUEUE_PREFIX,
    TWIML_QUEUE,
    build_topology,
)

#: Headers of a request besides its deadline (schemas.topology.DEADLINE_HEADER): the query
#: string of the HTTP request (menus keep their state there) and the event id (message_id is
#: the correlation id, unique per request).
QUERY_HEADER: Final = "x-hookline-query"
EVENT_ID_HEADER: Final = "x-hookline-event-id"

Outcome = Literal[
    "replied",
    "timeout",
    "returned",
    "refused",
    "unavailable",
    "no_worker",
    "connection_lost",
    "worker_error",
]


@dataclass(frozen=True, slots=True)
class RpcResult:
    """What came of one request: a reply body, or why there is none."""

    outcome: Outcome
    body: bytes | None = None
    content_type: str | None = None
    detail: str = ""


class RpcClient(Protocol):
    """The TwiML RPC client of one gateway process."""

    async def start(self) -> None:
        """Open the reply queue; never raises for an unreachable broker (requests then fail
        fast with ``unavailable`` while it retries in the background)."""

    async def close(self) -> None: ...

    @property
    def late_replies(self) -> int:
        """Replies dropped because nobody waited for them any more."""

    async def request(self, event: Event, *, query: str, timeout_s: float) -> RpcResult: ...


def reply_result(
    body: bytes, content_type: str | None, headers: Mapping[str, object] | None
) -> RpcResult:
    """A reply as an outcome: the worker's answer, or ``worker_error`` when the worker's
    runtime says (``x-hookline-error: <reason>``) that its handler failed on the request."""
    error = (headers or {}).get(ERROR_HEADER)
    if error is not None:
        reason = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
        return RpcResult("worker_error", detail=f"worker failed: {reason[:100]}")
    return RpcResult("replied", body, content_type)


def reply_queue_name() -> str:
    """``hookline.reply.<host>.<pid>.<random>``: one per process, named by us (not by the
    server) so that a robust reconnection can re-declare the same queue."""
    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]
    return f"{REPLY_QUEUE_PREFIX}{host}.{os.getpid()}.{secrets.token_hex(4)}"


def request_headers(event: Event, query: str, timeout_s: float) -> dict[str, object]:
    return {
        DEADLINE_HEADER: int((time.time() + timeout_s) * 1000),
        QUERY_HEADER: query,
        EVENT_ID_HEADER: event.id,
        "tenant": event.tenant,
    }


class Pending:
    """Futures of the requests in flight, by correlation id."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[RpcResult]] = {}
        self.late = 0

    def add(self) -> tuple[str, asyncio.Future[RpcResult]]:
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[RpcResult] = asyncio.get_running_loop().create_future()
        self.waiting[correlation_id] = future
        return correlation_id, future

    def resolve(self, correlation_id: str | None, result: RpcResult) -> None:
        future = self.waiting.pop(correlation_id or "", None)
        if future is None or future.done():
            self.late += 1
            return
        future.set_result(result)

    def fail_all(self, result: RpcResult) -> None:
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_result(result)

    async def wait(
        self, correlation_id: str, future: asyncio.Future[RpcResult], remaining_s: float
    ) -> RpcResult:
        try:
            return await asyncio.wait_for(future, max(remaining_s, 0.0))
        except TimeoutError:
            return RpcResult("timeout", detail=f"no reply within {remaining_s * 1000:.0f} ms")
        finally:
            self.waiting.pop(correlation_id, None)


class MemoryRpcClient:
    """The RPC client on the embedded broker: the workers of ``hookline run`` answer it."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._pending = Pending()
        self._queue = reply_queue_name()
        self._task: asyncio.Task[None] | None = None

    @property
    def late_replies(self) -> int:
        return self._pending.late

    async def start(self) -> None:
        self._broker.declare(build_topology(()))
        self._broker.declare_private(self._queue)
        self._task = asyncio.create_task(self._consume(), name="rpc-replies")

    async def _consume(self) -> None:
        stream = self._broker.consume_messages(self._queue)
        async with contextlib.aclosing(stream):
            async for message in stream:
                self._pending.resolve(
                    message.correlation_id,
                    reply_result(message.body, message.content_type, message.headers),
                )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._broker.delete_queue(self._queue)
        self._pending.fail_all(RpcResult("unavailable", detail="RPC client closed"))

    async def request(self, event: Event, *, query: str, timeout_s: float) -> RpcResult:
        started = time.monotonic()
        if self._task is None:
            return RpcResult("unavailable", detail="RPC client not started")
        if self._broker.consumer_count(TWIML_QUEUE) == 0:
            # In-process, an absent worker is known for sure: do not make the caller wait.
            return RpcResult("no_worker", detail=f"no consumer on {TWIML_QUEUE}")
        correlation_id, future = self._pending.add()
        try:
            self._broker.publish(
                MemoryMessage(
                    exchange="",
                    routing_key=TWIML_QUEUE,
                    body=event.to_json(),
                    message_id=correlation_id,
                    type=event.type,
                    persistent=False,
                    headers=request_headers(event, query, timeout_s),
                    reply_to=self._queue,
                    correlation_id=correlation_id,
                )
            )
        except PublishError as exc:
            self._pending.waiting.pop(correlation_id, None)
            return RpcResult("refused", detail=str(exc))
        return await self._pending.wait(
            correlation_id, future, timeout_s - (time.monotonic() - started)
        )
