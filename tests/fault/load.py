"""Steady callback load for the fault tests, and the loss/duplicate accounting."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from tests.support.samples import message_status, sid
from tests.support.twilio_signing import signed_form_request

PATH = "/twilio/messaging/status"


@dataclass
class LoadResult:
    """What the provider side saw: which callbacks were answered 2xx, which were not."""

    accepted: set[str] = field(default_factory=set)
    refused: dict[str, int] = field(default_factory=dict)  # sid -> status or -1 (no answer)
    latencies: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.accepted) + len(self.refused)


async def send_one(
    http: httpx.AsyncClient,
    base_url: str,
    account: str,
    token: str,
    n: int,
    result: LoadResult,
    *,
    timeout: float = 10.0,
) -> None:
    params = message_status(account, n)
    body, headers = signed_form_request(f"{base_url}{PATH}", params, token)
    started = time.monotonic()
    try:
        response = await http.post(
            f"{base_url}{PATH}", content=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError:
        result.refused[sid("SM", n)] = -1
        return
    result.latencies.append(time.monotonic() - started)
    if 200 <= response.status_code < 300:
        result.accepted.add(sid("SM", n))
    else:
        result.refused[sid("SM", n)] = response.status_code


async def steady_load(
    base_url: str, account: str, token: str, *, count: int, rate: float, first: int = 1
) -> LoadResult:
    """Send ``count`` distinct status callbacks at ``rate`` per second, concurrently."""
    result = LoadResult()
    async with httpx.AsyncClient() as http:
        tasks = []
        for i in range(count):
            tasks.append(
                asyncio.create_task(send_one(http, base_url, account, token, first + i, result))
            )
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)
    return result


@dataclass
class Accounting:
    """Delivered events compared with what was answered 2xx."""

    sent: int
    answered_2xx: int
    delivered: int
    missing: int
    duplicated: int

    def __str__(self) -> str:
        return (
            f"sent={self.sent} answered_2xx={self.answered_2xx} delivered={self.delivered} "
            f"missing={self.missing} duplicated={self.duplicated}"
        )


def account(result: LoadResult, delivered_subjects: list[str]) -> Accounting:
    counts = Counter(delivered_subjects)
    return Accounting(
        sent=result.sent,
        answered_2xx=len(result.accepted),
        delivered=len(counts),
        missing=len(result.accepted - counts.keys()),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
    )
