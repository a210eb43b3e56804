"""Pace outbound calls per Twilio account: at most ``rate`` calls per second, the rest wait.

Twilio queues calls above an account's CPS (calls per second, 1 by default) and fails them
after a while; pacing here keeps every call inside the limit and the queue in RabbitMQ, where
it is durable. https://help.twilio.com/articles/223180028 (outbound calls per second)

Each account has its own slot schedule: a call takes the next free slot, ``1 / rate`` seconds
after the previous one, so a burst of N commands is spread over N / rate seconds whatever the
number of concurrent tasks. Time is injected (monotonic clock and sleep) so the schedule is
testable without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Pacer:
    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._monotonic, self._sleep = monotonic, sleep
        self._next_slot: dict[str, float] = {}

    def reserve(self, account: str, rate: float) -> float:
        """Book the account's next slot; return how long to wait for it (0 when free now)."""
        if rate <= 0:
            raise ValueError(f"calls per second must be positive, got {rate} for {account}")
        now = self._monotonic()
        slot = max(now, self._next_slot.get(account, now))
        self._next_slot[account] = slot + 1.0 / rate
        return slot - now

    async def wait(self, account: str, rate: float) -> None:
        """Return at the account's next free slot."""
        delay = self.reserve(account, rate)
        if delay > 0:
            await self._sleep(delay)
