"""Durable acceptance: a callback is answered 2xx only once its event is safe.

Safe means confirmed by the broker, or fsynced to the local spool (gateway.spool) when the
broker cannot confirm within the deadline. A provider retry of a callback already made safe is
acknowledged without a second publish (bounded dedupe window); across processes and restarts
consumers deduplicate by the event ``id``, which is deterministic (schemas.events.event_id).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import structlog

from gateway.broker.base import Publisher
from gateway.errors import PublishError, UnroutableEvent
from schemas.events import Event

logger = structlog.get_logger("hookline.acceptance")

Outcome = Literal["published", "spooled", "duplicate"]

DEFAULT_PUBLISH_TIMEOUT: Final = 2.0
DEFAULT_DEDUPE_SIZE: Final = 65_536
#: An idempotency header longer than this is not used as a key (the event id still dedupes):
#: Twilio's tokens are a few dozen characters, and a key must never cost what the caller sends.
MAX_IDEMPOTENCY_TOKEN_CHARS: Final = 256
_KEY_BYTES: Final = 16
# After a publish times out, new events go straight to the spool for this long instead of each
# waiting out the deadline again (a stalled or resource-blocked broker); the replayer's first
# confirmed publish closes the breaker sooner.
DEFAULT_BREAKER_SECONDS: Final = 5.0


class SpoolLike(Protocol):
    async def put(self, event: Event) -> None: ...

    def count(self) -> int: ...


DedupeKey = bytes


def dedupe_keys(event: Event, idempotency_token: str | None) -> tuple[DedupeKey, ...]:
    """The keys under which a callback counts as already made safe, scoped by tenant.

    A key is a 16-byte BLAKE2b digest of (tenant, provider, what, value): the event id, and the
    provider's idempotency header when there is one (scoped by kind as well). Scoping means one
    tenant's callback, whatever id or header it carries, can only ever deduplicate that same
    tenant's callbacks; digests make every key the same small size whatever a caller sends.
    """
    scope = f"{event.tenant}\x1f{event.provider}\x1f"
    keys = [_digest(f"{scope}id\x1f{event.id}")]
    if idempotency_token is not None and len(idempotency_token) <= MAX_IDEMPOTENCY_TOKEN_CHARS:
        keys.append(_digest(f"{scope}token\x1f{event.kind}\x1f{idempotency_token}"))
    return tuple(keys)


def _digest(text: str) -> DedupeKey:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_KEY_BYTES).digest()


class DedupeWindow:
    """The most recent keys (``dedupe_keys``) already made safe, bounded LRU.

    Worst case memory is ``size`` entries of a 16-byte key each, whatever the callers send
    (about 13 MB at the default 65,536, measured with tracemalloc).
    """

    def __init__(self, size: int = DEFAULT_DEDUPE_SIZE) -> None:
        if size < 1:
            raise ValueError(f"dedupe window size must be at least 1, got {size}")
        self._size = size
        self._seen: OrderedDict[DedupeKey, None] = OrderedDict()

    def __contains__(self, key: DedupeKey) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: DedupeKey) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(slots=True)
class _Deadline:
    task: asyncio.Task[Any]
    at: float
    cancelling: int  # the task's cancel requests when the deadline started
    expired: bool = False
    finished: bool = False


class DeadlineSweep:
    """Cancels the tasks that outlive a deadline, with one timer for all of them.

    The semantics of ``asyncio.timeout`` (the expiry cancels the task, and only that cancel
    becomes a timeout; a cancel from elsewhere stays a cancel), without a timer armed and
    disarmed per publish: every deadline here is the same length, so they expire in the order
    they started and one timer, set for the oldest, serves them all.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: deque[_Deadline] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> _Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("DeadlineSweep.start() must be called from a task")
        loop = asyncio.get_running_loop()
        entry = _Deadline(task, loop.time() + self.seconds, task.cancelling())
        self._entries.append(entry)
        if self._timer is None:
            self._timer = loop.call_at(entry.at, self._sweep)
        return entry

    @staticmethod
    def timed_out(entry: _Deadline) -> bool:
        """For a CancelledError caught under ``entry``: was it our expiry and only that?"""
        return entry.expired and entry.task.uncancel() <= entry.cancelling

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        entries = self._entries
        while entries:
            first = entries[0]
            if first.finished:
                entries.popleft()
            elif first.at > now:
                self._timer = loop.call_at(first.at, self._sweep)
                return
            else:
                entries.popleft()
                first.expired = True
                first.task.cancel()


@dataclass
class AcceptanceCounts:
    published: int = 0
    spooled: int = 0
    duplicates: int = 0
    refused: int = 0
    # Publishes attempted but not confirmed (timed out, or failed while waiting for the
    # confirm): the broker may still have taken the event, which is then also replayed from
    # the spool. These are the only source of duplicate deliveries (same id).
    uncertain: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "published": self.published,
            "spooled": self.spooled,
            "duplicates": self.duplicates,
            "refused": self.refused,
            "uncertain": self.uncertain,
        }


@dataclass
class Acceptor:
    """Makes one event safe: publish with a deadline, else spool; dedupes retries."""

    publisher: Publisher
    spool: SpoolLike | None
    publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT
    breaker_seconds: float = DEFAULT_BREAKER_SECONDS
    dedupe: DedupeWindow = field(default_factory=DedupeWindow)
    on_spooled: Callable[[], None] | None = None
    # Called with the seconds from publish to the broker's confirm (the latency histogram).
    on_confirmed: Callable[[float], None] | None = None
    counts: AcceptanceCounts = field(default_factory=AcceptanceCounts)
    _inflight: dict[DedupeKey, asyncio.Future[Outcome]] = field(default_factory=dict)
    _breaker_until: float = 0.0
    _deadlines: DeadlineSweep | None = None

    @property
    def broker_state(self) -> str:
        """up, degraded (publishes time out: spooling) or down, for /readyz and logs."""
        if not self.publisher.ready:
            return "down"
        return "degraded" if time.monotonic() < self._breaker_until else "up"

    def close_breaker(self) -> None:
        """The broker confirmed again (e.g. a replayed event): publish directly again."""
        self._breaker_until = 0.0

    async def accept(self, event: Event, idempotency_token: str | None = None) -> Outcome:
        """Return how the event was made safe; raise PublishError/SpoolError when it was not."""
        keys = dedupe_keys(event, idempotency_token)
        for key in keys:
            if key in self.dedupe:
                self.counts.duplicates += 1
                return "duplicate"
        for key in keys:
            pending = self._inflight.get(key)
            if pending is not None:
                # The same callback is being made safe right now: share its outcome.
                try:
                    await asyncio.shield(pending)
                except Exception:  # noqa: S110 - the first attempt failed: try ourselves
                    pass
                else:
                    self.counts.duplicates += 1
                    return "duplicate"
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._inflight[key] = future
        try:
            outcome = await self._make_safe(event)
        except BaseException as exc:
            self.counts.refused += 1
            future.set_exception(exc if isinstance(exc, Exception) else PublishError("cancelled"))
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        else:
            future.set_result(outcome)
            for key in keys:
                self.dedupe.add(key)
            return outcome
        finally:
            for key in keys:
                if self._inflight.get(key) is future:
                    del self._inflight[key]

    async def _make_safe(self, event: Event) -> Outcome:
        if self.broker_state == "up":
            deadlines = self._deadlines
            if deadlines is None or deadlines.seconds != self.publish_timeout:
                deadlines = self._deadlines = DeadlineSweep(self.publish_timeout)
            # The publish runs in this task under the deadline (not wait_for): a shutdown that
            # cancels the request cancels the publish with it.
            deadline = deadlines.start()
            sent = time.perf_counter()
            try:
                try:
                    await self.publisher.publish(event)
                except asyncio.CancelledError:
                    if not deadlines.timed_out(deadline):
                        raise
                    raise TimeoutError from None
                finally:
                    deadline.finished = True
            except TimeoutError:
                self.counts.uncertain += 1
                self._breaker_until = time.monotonic() + self.breaker_seconds
                logger.warning(
                    "publish_timed_out", event_id=event.id, timeout_s=self.publish_timeout
                )
            except PublishError as exc:
                if not isinstance(exc, UnroutableEvent):  # returned: surely not delivered
                    self.counts.uncertain += 1
                if self.spool is None:
                    raise
                logger.warning("publish_failed", event_id=event.id, error=str(exc))
            else:
                self.counts.published += 1
                if self.on_confirmed is not None:
                    self.on_confirmed(time.perf_counter() - sent)
                return "published"
        if self.spool is None:
            raise PublishError(
                f"event {event.id} not published: broker {self.broker_state} "
                "and no spool configured"
            )
        await self.spool.put(event)
        self.counts.spooled += 1
        if self.on_spooled is not None:
            self.on_spooled()
        return "spooled"
