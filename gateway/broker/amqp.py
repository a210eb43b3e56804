"""Publish events to RabbitMQ with publisher confirms and mandatory routing (aio-pika).

``publish`` returns only once the broker has taken responsibility for the event: it was routed
to at least one queue and confirmed (``basic.ack``). Every other outcome raises
``gateway.errors.PublishError`` so the ingress can spool the event instead of losing it:

* connection or channel down (we fail fast instead of waiting for the robust reconnection, so
  a callback is never held up by an outage);
* ``basic.return``: the event matched no binding, we publish ``mandatory`` so RabbitMQ tells us
  instead of dropping it (https://www.rabbitmq.com/docs/publishers#unroutable);
* ``basic.nack``: e.g. a queue at its length limit with ``reject-publish``
  (https://www.rabbitmq.com/docs/confirms#publisher-confirms);
* no confirm within ``confirm_timeout`` seconds.

Confirms are pipelined: many ``publish`` calls share one channel and each awaits only its own
delivery tag, so throughput is not bounded by one round trip per event.
https://aio-pika.readthedocs.io/en/latest/rabbitmq-tutorial/7-publisher-confirms.html
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final
from urllib.parse import unquote

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from aio_pika.exceptions import DeliveryError
from aio_pika.exceptions import PublishError as ReturnedError

from gateway.broker.factory import mask_url
from gateway.broker.topology import declare_topology
from gateway.errors import PublishError
from schemas.events import CONTENT_TYPE, Event
from schemas.topology import EVENTS_EXCHANGE, build_topology

log = structlog.get_logger("hookline.broker")

APP_ID: Final = "hookline"
CONNECTION_NAME: Final = "hookline-gateway"


class AmqpPublisher:
    """The Publisher of gateway.broker.base on a robust aio-pika connection."""

    def __init__(
        self,
        url: str,
        tenant_ids: Sequence[str],
        *,
        confirm_timeout: float = 2.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 2.0,
    ) -> None:
        self._url = url
        self._masked_url = mask_url(url)
        self._password = _password_of(url)
        self._tenant_ids = tuple(tenant_ids)
        self._confirm_timeout = confirm_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._closed = False
        # Up from start() and from the robust connection's reconnect callback, which runs only
        # once the channel and its declarations are restored; down from the close callback.
        self._up = False
        # event id -> done when the publish of that id in flight finishes; see publish().
        self._inflight: dict[str, asyncio.Future[None]] = {}

    @property
    def ready(self) -> bool:
        connection, channel = self._connection, self._channel
        return (
            self._up
            and not self._closed
            and connection is not None
            and channel is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and not channel.is_closed
        )

    async def start(self) -> None:
        """Connect, open a confirming channel and declare the topology; fails fast.

        A broker that is unreachable at start-up raises PublishError (the robust connection
        only reconnects after a first success). Calling start again is a no-op.
        """
        if self._closed:
            raise PublishError(f"publisher for {self._masked_url} is closed; create a new one")
        if self._connection is not None:
            return
        try:
            connection = await aio_pika.connect_robust(
                self._url,
                timeout=self._connect_timeout,
                reconnect_interval=self._reconnect_interval,
                client_properties={"connection_name": CONNECTION_NAME},
            )
        except Exception as exc:
            raise PublishError(
                f"cannot connect to the broker at {self._masked_url}: {self._describe(exc)}"
            ) from exc
        try:
            # on_return_raises: a basic.return fails the publish that caused it, instead of
            # only calling return callbacks while the publish reports success.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await declare_topology(channel, build_topology(self._tenant_ids))
            exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        except Exception as exc:
            await connection.close()
            raise PublishError(
                f"cannot declare the topology on {self._masked_url}: {self._describe(exc)}"
            ) from exc
        connection.close_callbacks.add(self._on_connection_closed)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connection, self._channel, self._exchange = connection, channel, exchange
        self._up = True
        log.info("broker_connected", url=self._masked_url)
        log.info("topology_declared", url=self._masked_url, tenants=len(self._tenant_ids))

    async def close(self) -> None:
        """Let in-flight publishes finish (up to confirm_timeout), then close. Idempotent."""
        if self._closed:
            return
        self._closed = True  # new publishes fail fast from here on
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), timeout=self._confirm_timeout)
        connection = self._connection
        self._connection = self._channel = self._exchange = None
        if connection is None:
            return
        try:
            await connection.close()
        except Exception as exc:
            log.warning("broker_close_failed", url=self._masked_url, error=self._describe(exc))
        log.info("broker_closed", url=self._masked_url)

    async def publish(self, event: Event) -> None:
        # aiormq matches a basic.return to its publish by message_id (aiormq/channel.py,
        # _on_return_frame); two publishes of one id in flight at once could take each other's
        # outcome, and a returned event would then be reported confirmed. Same-id publishes
        # (a provider retry racing the original) are therefore serialized; others run freely.
        while (pending := self._inflight.get(event.id)) is not None:
            await asyncio.wait([pending])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[event.id] = done
        try:
            await self._publish(event)
        finally:
            del self._inflight[event.id]
            done.set_result(None)

    async def _publish(self, event: Event) -> None:
        exchange = self._exchange
        if exchange is None or not self.ready:
            state = "closed" if self._closed else (
                "not started" if self._connection is None else "broker connection down"
            )
            raise self._failure(event, state)
        message = aio_pika.Message(
            body=event.to_json(),
            content_type=CONTENT_TYPE,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.id,
            type=event.type,
            timestamp=datetime.now(UTC),
            app_id=APP_ID,
            headers={"tenant": event.tenant},
        )
        try:
            await exchange.publish(
                message, routing_key=event.routing_key, mandatory=True,
                timeout=self._confirm_timeout,
            )
        except ReturnedError as exc:  # a DeliveryError subclass: test it first
            error = self._failure(event, f"unroutable, returned by the broker ({exc.args[0]})")
            log.warning("event_returned", event_id=event.id, routing_key=event.routing_key)
            raise error from exc
        except DeliveryError as exc:
            log.warning("event_nacked", event_id=event.id, routing_key=event.routing_key)
            raise self._failure(event, "nacked by the broker (queue full or internal error)") \
                from exc
        except TimeoutError as exc:
            raise self._failure(event, f"no confirm within {self._confirm_timeout} s") from exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled: honour it
            # aiormq cancels pending confirms when the channel closes without an error.
            raise self._failure(event, "channel closed before the confirm") from None
        except Exception as exc:
            raise self._failure(event, self._describe(exc)) from exc

    def _failure(self, event: Event, cause: str) -> PublishError:
        return PublishError(f"event {event.id} ({event.routing_key}) not published: {cause}")

    def _describe(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self._password, "****") if self._password else text

    def _on_connection_closed(self, _sender: object, exc: BaseException | None) -> None:
        self._up = False
        if self._closed:
            return
        log.warning(
            "broker_connection_lost", url=self._masked_url,
            error=self._describe(exc) if exc else None,
        )

    def _on_reconnected(self, _sender: object) -> None:
        self._up = True
        log.info("broker_reconnected", url=self._masked_url)


def _password_of(url: str) -> str:
    _scheme, _sep, rest = url.partition("://")
    userinfo, at, _hostpart = rest.rpartition("@")
    return unquote(userinfo.partition(":")[2]) if at else ""
