"""The TwiML RPC client on RabbitMQ (aio-pika): one exclusive reply queue per process.

Why a named exclusive queue rather than direct reply-to (``amq.rabbitmq.reply-to``): direct
reply-to ties replies to the one channel that consumes the pseudo-queue, and a robust
reconnection cannot restore that consumer before new requests go out, so replies would be lost
silently around every reconnection. A queue named by us (``hookline.reply.<host>.<pid>.<rnd>``,
exclusive, auto-delete) is re-declared and re-consumed by the robust connection, and costs one
queue per gateway process, never one per request.
https://www.rabbitmq.com/docs/direct-reply-to and https://www.rabbitmq.com/docs/queues#exclusive-queues

Requests are published ``mandatory`` on a confirming channel: a request no queue takes comes
back (``basic.return``: the ``returned`` outcome), a full ``hookline.twiml`` queue
(``reject-publish``) nacks it (``refused``). Confirms are pipelined, each caller awaits only
its own. A request carries a per-message TTL equal to its deadline, so one nobody consumed in
time expires in the queue instead of being answered uselessly later.
https://www.rabbitmq.com/docs/ttl#per-message-ttl-in-publishers

While ``hookline.twiml`` has no consumer at all (every TwiML worker down), waiting out the
deadline would only make each caller listen to silence first: the client reads the queue's
consumer count every second (``queue.declare`` passive, which returns it) and answers
``no_worker`` at once while it is 0. A worker that just started is seen within that second.
https://www.rabbitmq.com/amqp-0-9-1-reference#queue.declare-ok
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aio_pika.exceptions import DeliveryError
from aio_pika.exceptions import PublishError as ReturnedError

from gateway.broker.declare import declare_topology
from gateway.broker.failures import connect_failure
from gateway.broker.rpc import (
    Pending,
    RpcResult,
    reply_queue_name,
    reply_result,
    request_headers,
)
from gateway.log import mask_url_password
from schemas.events import CONTENT_TYPE, Event
from schemas.topology import TWIML_QUEUE, Topology, twiml_queue

log = structlog.get_logger("hookline.broker")

RECONNECT_INTERVAL_S: Final = 2.0
#: How often the consumer count of hookline.twiml is read (a passive queue.declare).
CONSUMER_POLL_S: Final = 1.0


class AmqpRpcClient:
    """RpcClient on a robust aio-pika connection of its own (``hookline-gateway-rpc``)."""

    def __init__(
        self, url: str, *, connect_timeout: float = 5.0, consumer_poll_s: float = CONSUMER_POLL_S
    ) -> None:
        self._url, self._masked = url, mask_url_password(url)
        self._connect_timeout = connect_timeout
        self._pending = Pending()
        self._reply_queue = reply_queue_name()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._up = False
        self._closed = False
        self._connector: asyncio.Task[None] | None = None
        self._poll_s = consumer_poll_s
        self._poller: asyncio.Task[None] | None = None
        # None while unknown: then requests are sent and wait (never a false "no worker").
        self.consumers: int | None = None

    @property
    def late_replies(self) -> int:
        return self._pending.late

    @property
    def ready(self) -> bool:
        return (
            self._up
            and not self._closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def start(self) -> None:
        if await self._connect():
            return
        self._connector = asyncio.create_task(self._connect_until_up(), name="rpc-connect")

    async def _connect_until_up(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_INTERVAL_S)
            if await self._connect():
                return

    async def _connect(self) -> bool:
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=self._connect_timeout,
                client_properties={"connection_name": "hookline-gateway-rpc"},
            )
        except Exception as exc:
            log.warning(
                "rpc_connect_failed",
                retry_in_s=RECONNECT_INTERVAL_S,
                error=connect_failure(exc, self._url, self._connect_timeout),
            )
            return False
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_topology(channel, Topology((), (twiml_queue(),)))
            # Known before the first request: without it, requests sent before the first
            # poll would wait out their deadline when no worker runs.
            declared = await channel.declare_queue(TWIML_QUEUE, passive=True, robust=False)
            self.consumers = declared.declaration_result.consumer_count
            queue = await channel.declare_queue(self._reply_queue, exclusive=True, auto_delete=True)
            # no_ack: a reply is useful once, to the caller waiting now; nothing to redeliver.
            await queue.consume(self._on_reply, no_ack=True)
        except Exception as exc:
            log.warning("rpc_setup_failed", url=self._masked, error=f"{type(exc).__name__}")
            await connection.close()
            return False
        connection.close_callbacks.add(self._on_closed)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection, self._channel, self._up = connection, channel, True
        self._poller = asyncio.create_task(self._poll_consumers(connection), name="rpc-poll")
        log.info("rpc_ready", url=self._masked, reply_queue=self._reply_queue)
        return True

    async def _poll_consumers(self, connection: AbstractRobustConnection) -> None:
        probe: AbstractRobustChannel | None = None
        while True:
            try:
                if probe is None or probe.is_closed:
                    probe = await connection.channel()
                # robust=False: a robust channel answers a repeated passive declare from its
                # cache, without asking the broker (aio_pika/robust_channel.py).
                queue = await probe.declare_queue(TWIML_QUEUE, passive=True, robust=False)
                self.consumers = queue.declaration_result.consumer_count
            except asyncio.CancelledError:
                raise
            except Exception:
                self.consumers, probe = None, None
            await asyncio.sleep(self._poll_s)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        self._pending.resolve(
            message.correlation_id,
            reply_result(message.body, message.content_type, message.headers),
        )

    def _on_closed(self, _sender: object, exc: BaseException | None) -> None:
        self._up = False
        # Replies to requests in flight went with the connection's exclusive queue.
        self._pending.fail_all(
            RpcResult("connection_lost", detail=f"broker connection closed: {exc!r}"[:200])
        )
        if not self._closed:
            log.warning("rpc_connection_lost", url=self._masked)

    def _on_reconnected(self, _sender: object) -> None:
        self._up = True
        log.info("rpc_reconnected", url=self._masked)

    async def close(self) -> None:
        self._closed = True
        for task in (self._connector, self._poller):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        connection, self._connection, self._channel = self._connection, None, None
        self._pending.fail_all(RpcResult("unavailable", detail="RPC client closed"))
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def request(self, event: Event, *, query: str, timeout_s: float) -> RpcResult:
        started = time.monotonic()
        channel = self._channel
        if channel is None or not self.ready:
            return RpcResult("unavailable", detail=f"no broker connection ({self._masked})")
        if self.consumers == 0:
            return RpcResult("no_worker", detail=f"no consumer on {TWIML_QUEUE}")
        correlation_id, future = self._pending.add()
        message = aio_pika.Message(
            body=event.to_json(),
            content_type=CONTENT_TYPE,
            type=event.type,
            message_id=correlation_id,
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            expiration=max(timeout_s, 0.001),
            headers=request_headers(event, query, timeout_s),  # type: ignore[arg-type]
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            await channel.default_exchange.publish(
                message, routing_key=TWIML_QUEUE, mandatory=True, timeout=timeout_s
            )
        except ReturnedError:
            self._pending.waiting.pop(correlation_id, None)
            return RpcResult("returned", detail=f"unroutable: no queue {TWIML_QUEUE}")
        except DeliveryError:
            self._pending.waiting.pop(correlation_id, None)
            return RpcResult("refused", detail=f"nacked ({TWIML_QUEUE} full)")
        except TimeoutError:
            self._pending.waiting.pop(correlation_id, None)
            return RpcResult("timeout", detail="no publish confirm before the deadline")
        except asyncio.CancelledError:
            self._pending.waiting.pop(correlation_id, None)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return RpcResult("connection_lost", detail="channel closed before the confirm")
        except Exception as exc:
            self._pending.waiting.pop(correlation_id, None)
            return RpcResult("connection_lost", detail=f"{type(exc).__name__}")
        return await self._pending.wait(
            correlation_id, future, timeout_s - (time.monotonic() - started)
        )
