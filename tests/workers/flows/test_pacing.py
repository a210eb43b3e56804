"""Call pacing: a burst is spread at the account's rate, accounts do not slow each other."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from workers.flows.pacing import Pacer


class VirtualTime:
    """A monotonic clock that moves only when a task sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_twenty_calls_at_one_per_second_take_nineteen_seconds() -> None:
    """20 concurrent commands at 1 call/s get slots one second apart, never two in a second."""
    clock = VirtualTime()
    pacer = Pacer(clock.monotonic, clock.sleep)
    placed = sorted(clock.now + pacer.reserve("AC1", 1.0) for _ in range(20))
    gaps = [b - a for a, b in itertools.pairwise(placed)]
    assert min(gaps) == pytest.approx(1.0)
    assert placed[-1] - placed[0] == pytest.approx(19.0)


def test_accounts_are_paced_independently() -> None:
    """A busy account does not delay another account's first call."""
    clock = VirtualTime()
    pacer = Pacer(clock.monotonic, clock.sleep)
    assert [pacer.reserve("AC1", 2.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert pacer.reserve("AC2", 2.0) == 0.0


def test_an_idle_account_starts_fresh() -> None:
    """After a quiet spell the next call goes at once (no burst credit, no debt)."""
    clock = VirtualTime()
    pacer = Pacer(clock.monotonic, clock.sleep)
    pacer.reserve("AC1", 1.0)
    clock.now += 60
    assert pacer.reserve("AC1", 1.0) == 0.0
    assert pacer.reserve("AC1", 1.0) == 1.0


def test_a_rate_of_zero_is_refused() -> None:
    """A non-positive rate is a configuration bug: ValueError naming the account."""
    with pytest.raises(ValueError, match="AC9"):
        Pacer().reserve("AC9", 0)


async def test_real_time_pacing_holds_at_ten_per_second() -> None:
    """On the real clock, 10 calls at 10/s span at least 0.9 s."""
    pacer = Pacer()
    started = time.monotonic()
    stamps: list[float] = []

    async def place() -> None:
        await pacer.wait("AC1", 10.0)
        stamps.append(time.monotonic())

    await asyncio.gather(*(place() for _ in range(10)))
    assert max(stamps) - started >= 0.9 - 0.01
