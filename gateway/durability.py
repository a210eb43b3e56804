"""What a gateway process runs beside the HTTP server so that nothing accepted is lost.

* the broker connection, retried in the background when the broker is down at start-up (the
  gateway still starts and spools);
* the process's own spool and its replayer, draining to the broker oldest first;
* a sweeper that adopts spool files left by dead processes on the same data dir and drains them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import structlog

from gateway.acceptance import Acceptor
from gateway.broker.base import Publisher
from gateway.errors import HooklineError, PublishError
from gateway.replay import Replayer, replay_orphans
from gateway.spool import Spool, SpoolError

logger = structlog.get_logger("hookline.durability")

RECONNECT_INTERVAL: Final = 2.0
ORPHAN_SWEEP_INTERVAL: Final = 30.0
# On shutdown, one last drain of the spool is attempted for at most this long; what is left
# stays on disk and the next process on this data dir replays it.
FINAL_DRAIN_SECONDS: Final = 5.0


class Durability:
    """Owns the publisher's lifecycle, the spool, the replayer and the orphan sweeper."""

    def __init__(
        self,
        publisher: Publisher,
        data_dir: Path,
        *,
        publish_timeout: float = 2.0,
        spool_max_events: int = 1_000_000,
        spool_max_bytes: int = 1 << 30,
    ) -> None:
        self.publisher = publisher
        self.data_dir = data_dir
        self._publish_timeout = publish_timeout
        self._spool_limits = {"max_events": spool_max_events, "max_bytes": spool_max_bytes}
        self.spool: Spool | None = None
        self.replayer: Replayer | None = None
        self.acceptor: Acceptor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Acceptor:
        """Open the spool, connect (or keep trying in the background), start the replayer."""
        try:
            self.spool = await Spool.open(self.data_dir, **self._spool_limits)
        except SpoolError as exc:
            # Keep serving: callbacks still succeed while the broker confirms, and get 503
            # (so Twilio retries) while it does not. Loud, because durability is degraded.
            logger.error("spool_unavailable", error=str(exc), data_dir=str(self.data_dir))
        if self.spool is not None:
            self.replayer = Replayer(self.spool, self.publisher)
        self.acceptor = Acceptor(
            self.publisher,
            self.spool,
            publish_timeout=self._publish_timeout,
            on_spooled=self.replayer.wake if self.replayer else None,
        )
        try:
            await self.publisher.start()
        except PublishError as exc:
            logger.warning("broker_unavailable", error=str(exc), spooling=self.spool is not None)
            self._spawn(self._connect_until_up())
        if self.replayer is not None:
            self._spawn(self.replayer.run())
        self._spawn(self._sweep_orphans())
        return self.acceptor

    async def close(self) -> dict[str, Any]:
        """Stop background work, try one last bounded drain, close everything; return counts."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        replayed_at_exit = 0
        spool, replayer = self.spool, self.replayer
        if spool is not None and replayer is not None and spool.count() and self.publisher.ready:
            with contextlib.suppress(TimeoutError, HooklineError):
                async with asyncio.timeout(FINAL_DRAIN_SECONDS):
                    replayed_at_exit = await replayer.drain()
        await self.publisher.close()
        left = self.spool.count() if self.spool is not None else 0
        if self.spool is not None:
            await self.spool.close()
        counts = self.acceptor.counts.as_dict() if self.acceptor is not None else {}
        return {
            **counts,
            "replay_uncertain": self.replay_uncertain,
            "replayed_at_exit": replayed_at_exit,
            "left_in_spool": left,
        }

    @property
    def replay_uncertain(self) -> int:
        return self.replayer.uncertain if self.replayer is not None else 0

    @property
    def uncertain(self) -> int:
        """Publishes (live or replayed) whose outcome is unknown: the bound on duplicates."""
        live = self.acceptor.counts.uncertain if self.acceptor is not None else 0
        return live + self.replay_uncertain

    @property
    def broker_state(self) -> str:
        return self.acceptor.broker_state if self.acceptor is not None else "down"

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def _connect_until_up(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_INTERVAL)
            try:
                await self.publisher.start()
            except PublishError as exc:
                logger.debug("broker_still_unavailable", error=str(exc))
                continue
            logger.info("broker_available")
            if self.replayer is not None:
                self.replayer.wake()
            return

    async def _sweep_orphans(self) -> None:
        """Adopt and drain spool files of dead processes, now and every sweep interval."""
        while True:
            if self.publisher.ready:
                try:
                    replayed = await replay_orphans(self.data_dir, self.publisher)
                except HooklineError as exc:
                    logger.warning("spool_adopt_failed", error=str(exc))
                else:
                    if replayed:
                        logger.info("spool_orphans_replayed", replayed=replayed)
            await asyncio.sleep(ORPHAN_SWEEP_INTERVAL)
