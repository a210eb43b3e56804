"""The consumer runtime: consume, batch, hand to a Handler, settle, log one line per message.

Settlement (``gateway.errors`` names the decisions):

* success (``None`` or an ``RpcReply``): the reply is published first, then the message is acked;
  nothing is acked before its handler finished, so a crash means redelivery, never loss;
* a failure (``PoisonMessage``, ``TransientError``, a crash) of an RPC request (one with
  ``reply_to``): an error reply (``x-hookline-error: <reason>``, empty body) goes to the
  requester at once, so it answers with its fallback now rather than at its deadline; then
  the message is settled as below;
* ``PoisonMessage``: dead-lettered at once to ``hookline.dead`` (via ``hookline.dlx``) with
  reason, error, original queue, worker and attempt count in its headers;
* ``TransientError`` (or an unexpected exception: a bug must not dead-letter good messages at
  the first attempt): attempt *n* is copied to the holding queue
  ``<queue>.retry.<delay>s`` (``schemas.topology.retry_queues``), whose TTL dead-letters it
  back into the work queue after the delay, and the original is acked. The queue keeps
  flowing meanwhile. After the last delay the next failure dead-letters it.

Prefetch is ``batch_size * concurrency``: a batch handler gets full batches, an RPC handler
(batch 1) gets many messages in flight at once. On SIGTERM (``stop`` set) the runner cancels
its consumer, finishes what was delivered (bounded by ``drain_timeout_s``) and closes; what
is still unsettled then goes back to the queue when the channel closes.
https://www.rabbitmq.com/docs/confirms#consumer-acknowledgements
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Final, Literal

import structlog

from gateway.errors import ConfigError, ConsumerError, PoisonMessage, TransientError
from gateway.log import scrub
from gateway.metrics import WorkerMetrics
from schemas.topology import (
    DEADLINE_HEADER,
    RETRY_DELAYS_S,
)
from workers.handler import Delivery, Handler, Result, RpcReply, error_reply
from workers.transport import (
    BrokerUnavailable,
    DeadLetter,
    Inbound,
    Transport,
)

log = structlog.get_logger("hookline.worker")

DEFAULT_DRAIN_TIMEOUT_S: Final = 30.0
MAX_CONNECT_DELAY_S: Final = 30.0
_STOP: Final = Inbound(Delivery(body=b"", routing_key=""))  # end of the delivery stream


class Runner:
    """Runs one Handler on one Transport until ``stop`` is set."""

    def __init__(
        self,
        handler: Handler,
        transport: Transport,
        *,
        retry_delays_s: Sequence[int] | None = None,
        concurrency: int | None = None,
        drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        # Optional handler attributes (additive to the contract): a handler may choose its own
        # back-off schedule and how many batches run at once.
        delays = (
            retry_delays_s
            if retry_delays_s is not None
            else getattr(handler, "retry_delays_s", RETRY_DELAYS_S)
        )
        self.retry_delays_s = tuple(int(delay) for delay in delays)
        self.concurrency: int = concurrency or int(getattr(handler, "concurrency", 1))
        if self.concurrency < 1 or handler.batch_size < 1:
            raise ConfigError(
                f"worker {handler.name}: batch_size and concurrency must be >= 1, got "
                f"{handler.batch_size} and {self.concurrency}"
            )
        self.handler = handler
        self.transport = transport
        self.drain_timeout_s = drain_timeout_s
        self.ready = asyncio.Event()
        self.counts: dict[str, int] = {}
        self.metrics = metrics
        self._buffer: asyncio.Queue[Inbound] = asyncio.Queue()

    @property
    def prefetch(self) -> int:
        return self.handler.batch_size * self.concurrency

    async def run(self, stop: asyncio.Event) -> None:
        handler = self.handler
        try:
            await handler.start()
            if not await self._open(stop):
                return
            log.info(
                "worker_started",
                worker=handler.name,
                queue=handler.queue,
                prefetch=self.prefetch,
                batch_size=handler.batch_size,
                retry_delays_s=list(self.retry_delays_s),
            )
            self.ready.set()
            watcher = asyncio.create_task(self._stop_on(stop))
            try:
                await self._loop()
            finally:
                watcher.cancel()
        finally:
            try:
                await self.transport.close()
            finally:
                await handler.close()
        log.info("worker_stopped", worker=handler.name, **self.counts)

    async def _open(self, stop: asyncio.Event) -> bool:
        """Open the transport, retrying with back-off while the broker is unreachable (a worker
        started before RabbitMQ, or inside `hookline run`, waits for it); False if stopped."""
        delay = 1.0
        while True:
            try:
                await self.transport.open(
                    self.handler.queue, self.prefetch, self._buffer.put_nowait
                )
                return True
            except BrokerUnavailable as exc:
                log.warning(
                    "worker_connect_failed",
                    worker=self.handler.name,
                    error=str(exc),
                    retry_in_s=delay,
                )
                await self.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
                return False
            delay = min(delay * 2, MAX_CONNECT_DELAY_S)

    async def _stop_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        log.info("worker_draining", worker=self.handler.name, buffered=self._buffer.qsize())
        await self.transport.stop_consuming()
        self._buffer.put_nowait(_STOP)

    async def _loop(self) -> None:
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        try:
            while batch := await self._next_batch():
                await slots.acquire()
                task = asyncio.create_task(self._process(batch))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _task: slots.release())
        finally:
            if running:
                _done, late = await asyncio.wait(running, timeout=self.drain_timeout_s)
                for task in late:
                    task.cancel()
                if late:
                    log.warning(
                        "worker_drain_timeout",
                        worker=self.handler.name,
                        unfinished=len(late),
                        timeout_s=self.drain_timeout_s,
                    )

    async def _next_batch(self) -> list[Inbound]:
        first = await self._buffer.get()
        if first is _STOP:
            return []
        batch = [first]
        deadline = time.monotonic() + self.handler.batch_wait_s
        while len(batch) < self.handler.batch_size:
            try:
                item = self._buffer.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._buffer.get(), remaining)
                except TimeoutError:
                    break
            if item is _STOP:
                self._buffer.put_nowait(_STOP)  # seen again by the next call: the loop ends
                break
            batch.append(item)
        return batch

    async def _process(self, batch: list[Inbound]) -> None:
        started = time.monotonic()
        now_ms = time.time() * 1000
        expired = [inbound for inbound in batch if _deadline_passed(inbound.delivery, now_ms)]
        for inbound in expired:  # its requester answered with a fallback already
            await self._settle(inbound, "expired", 0.0)
        batch = [inbound for inbound in batch if inbound not in expired]
        if not batch:
            return
        results = await self._handle([inbound.delivery for inbound in batch])
        latency_ms = round((time.monotonic() - started) * 1000, 2)
        for inbound, result in zip(batch, results, strict=True):
            await self._settle(inbound, result, latency_ms)

    async def _handle(self, deliveries: list[Delivery]) -> Sequence[Result]:
        try:
            results = await self.handler.handle(deliveries)
        except ConsumerError as exc:
            return [exc] * len(deliveries)
        except Exception as exc:
            error = TransientError(
                f"handler {self.handler.name} raised {type(exc).__name__}: {exc}"
            )
            log.exception("handler_crashed", worker=self.handler.name, batch=len(deliveries))
            return [error] * len(deliveries)
        if len(results) != len(deliveries):
            error = TransientError(
                f"handler {self.handler.name} returned {len(results)} "
                f"results for a batch of {len(deliveries)}"
            )
            return [error] * len(deliveries)
        return results

    async def _settle(
        self, inbound: Inbound, result: Result | Literal["expired"], latency_ms: float
    ) -> None:
        delivery = inbound.delivery
        fields: dict[str, object] = {
            "worker": self.handler.name,
            "queue": self.handler.queue,
            "message_id": delivery.message_id,
            "attempt": delivery.attempt,
            "latency_ms": latency_ms,
        }
        try:
            outcome = await self._decide(inbound, result, fields)
        except Exception as exc:  # e.g. the connection dropped: RabbitMQ redelivers it
            fields.update(outcome="settle_failed", error=scrub(f"{type(exc).__name__}: {exc}"))
            self._count("settle_failed", result, latency_ms)
            log.warning("message_handled", **fields)
            return
        fields["outcome"] = outcome
        self._count(outcome, result, latency_ms)
        level = "info" if outcome in ("acked", "replied", "expired") else "warning"
        getattr(log, level)("message_handled", **fields)

    async def _decide(
        self, inbound: Inbound, result: Result | Literal["expired"], fields: dict[str, object]
    ) -> str:
        delivery = inbound.delivery
        if result == "expired":
            fields["reason"] = "deadline_passed"
            await self.transport.ack(inbound)
            return "expired"
        if result is None:
            await self.transport.ack(inbound)
            return "acked"
        if isinstance(result, RpcReply):
            if not delivery.reply_to:
                fields["reason"] = "no_reply_to"
                await self.transport.ack(inbound)
                return "acked"
            await self.transport.reply(inbound, result)
            await self.transport.ack(inbound)
            return "replied"
        fields.update(reason=result.reason, error=scrub(str(result)))
        if delivery.reply_to:
            await self._reply_failure(inbound, result.reason, fields)
        if not isinstance(result, PoisonMessage) and delivery.attempt <= len(self.retry_delays_s):
            delay = self.retry_delays_s[delivery.attempt - 1]
            fields["retry_in_s"] = delay
            await self.transport.retry(inbound, delay, delivery.attempt + 1)
            return "retried"
        if not isinstance(result, PoisonMessage):
            fields["reason"] = "attempts_exhausted"
        dead = DeadLetter(
            reason=str(fields["reason"]),
            error=scrub(str(result)),
            queue=self.handler.queue,
            worker=self.handler.name,
            attempts=delivery.attempt,
        )
        await self.transport.dead_letter(inbound, dead)
        return "dead_lettered"

    async def _reply_failure(
        self, inbound: Inbound, reason: str, fields: dict[str, object]
    ) -> None:
        """Tell an RPC requester now that no answer is coming (it would otherwise wait out its
        deadline in silence); the message is settled as usual after. Best effort: a lost
        error reply only means the requester waits for its deadline."""
        try:
            await self.transport.reply(inbound, error_reply(reason))
        except Exception as exc:
            fields["error_reply"] = f"failed: {type(exc).__name__}"
        else:
            fields["error_reply"] = "sent"

    def _count(self, outcome: str, result: Result | Literal["expired"], latency_ms: float) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        metrics = self.metrics
        if metrics is not None:
            worker, queue = self.handler.name, self.handler.queue
            metrics.settled(worker, queue, outcome)
            if result != "expired":  # an expired message is settled without being handled
                metrics.handled(worker, queue, latency_ms / 1000)


def _deadline_passed(delivery: Delivery, now_ms: float) -> bool:
    """An RPC request carries its deadline (``x-hookline-deadline-ms``, epoch ms)."""
    deadline = delivery.headers.get(DEADLINE_HEADER)
    return (
        isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline < now_ms
    )


async def run_until_stopped(runners: Sequence[Runner], stop: asyncio.Event) -> None:
    """Run several runners; the first one to fail stops the others, then its error is raised."""
    tasks = [
        asyncio.create_task(runner.run(stop), name=f"worker-{runner.handler.name}")
        for runner in runners
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [task for task in done if task.exception() is not None]
        if failed:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise failed[0].exception()  # type: ignore[misc]
    finally:
        stop.set()
        for task in tasks:
            if not task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
