"""The bench's RabbitMQ: rabbitmqctl, its throwaway vhost, reading queues back, outages."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import orjson

from benchmarks.callbacks import number_of
from benchmarks.common import BenchError


def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise BenchError(
            f"rabbitmqctl {' '.join(args)} failed: {(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def check_rabbitmq(amqp_url: str) -> tuple[str, int | None]:
    """RabbitMQ version and beam.smp pid; a clear error when it is not there."""
    parts = urlsplit(amqp_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((host, port)) != 0:
            raise BenchError(
                f"RabbitMQ is not reachable at {host}:{port} (start it, e.g. "
                "`service rabbitmq-server start`, or pass --amqp-url)"
            )
    if shutil.which("rabbitmqctl") is None:
        raise BenchError(
            "rabbitmqctl not found: the bench creates its vhost with it (run as "
            "root on the RabbitMQ host)"
        )
    status = rabbitmqctl("status", check=False)
    if "RabbitMQ version" not in status:
        raise BenchError(f"`rabbitmqctl status` does not answer: {status.strip()[:300]}")
    version = re.search(r"RabbitMQ version: (\S+)", status)
    pid = re.search(r"OS PID: (\d+)", status)
    return (version.group(1) if version else "?"), (int(pid.group(1)) if pid else None)


class Vhost:
    def __init__(self, amqp_url: str) -> None:
        self.name = f"hookline-bench-{secrets.token_hex(4)}"
        parts = urlsplit(amqp_url)
        self.user = parts.username or "guest"
        self.url = urlunsplit((parts.scheme, parts.netloc, "/" + self.name, "", ""))
        self.created = False

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        self.created = True
        rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        """Delete the vhost; if RabbitMQ is away (restarting), wait for it up to a minute
        rather than leave the vhost and its queues behind."""
        if not self.created:
            return
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(
                ["rabbitmqctl", "-q", "delete_vhost", self.name],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode == 0 or "does not exist" in done.stderr + done.stdout:
                self.created = False
                return
            if time.monotonic() > deadline:
                print(
                    f"could not delete vhost {self.name}: "
                    f"{(done.stderr or done.stdout).strip()[:200]}",
                    file=sys.stderr,
                )
                return
            time.sleep(3)


async def _with_channel(url: str, work: Callable[[Any], Any]) -> Any:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        return await work(channel)


def queue_counts(url: str, names: Sequence[str]) -> dict[str, int]:
    async def work(channel: Any) -> dict[str, int]:
        counts = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            counts[name] = int(queue.declaration_result.message_count or 0)
        return counts

    result: dict[str, int] = asyncio.run(_with_channel(url, work))
    return result


def purge(url: str, names: Sequence[str]) -> None:
    async def work(channel: Any) -> None:
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            await queue.purge()

    asyncio.run(_with_channel(url, work))


async def _drain_queue(channel: Any, name: str, numbers: Counter[int]) -> int:
    """Consume (auto-ack) every message of one queue into ``numbers``; returns how many carried
    no bench MessageSid."""
    queue = await channel.declare_queue(name, passive=True)
    expected = int(queue.declaration_result.message_count or 0)
    if not expected:
        return 0
    got = foreign = 0
    finished = asyncio.Event()
    last = time.monotonic()

    async def on_message(message: Any) -> None:
        nonlocal got, foreign, last
        got += 1
        last = time.monotonic()
        doc = orjson.loads(message.body)
        subject = doc.get("subject") if isinstance(doc, dict) else None
        n = number_of(subject) if isinstance(subject, str) else None
        if n is None:
            foreign += 1
        else:
            numbers[n] += 1
        if got >= expected:
            finished.set()

    tag = await queue.consume(on_message, no_ack=True)
    while not finished.is_set() and time.monotonic() - last < 10:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), 1)
    await queue.cancel(tag)
    if got < expected:
        raise BenchError(f"{name}: read {got} of {expected} messages")
    return foreign


def drain_numbers(url: str, names: Sequence[str]) -> tuple[Counter[int], int]:
    """Consume every message of the queues: callback numbers seen, and how many messages
    carried no bench MessageSid."""

    async def work(channel: Any) -> tuple[Counter[int], int]:
        numbers: Counter[int] = Counter()
        foreign = 0
        for name in names:
            foreign += await _drain_queue(channel, name, numbers)
        return numbers, foreign

    result: tuple[Counter[int], int] = asyncio.run(_with_channel(url, work))
    return result


BROKER_RETRIES = 3
_OUTAGE_MARKS = (
    "Connect call failed",
    "Connection refused",
    "CONNECTION_FORCED",
    "Connection reset",
    "connection reset",
    "closed",
    "not reachable",
)


def broker_up(amqp_url: str) -> bool:
    parts = urlsplit(amqp_url)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((parts.hostname or "127.0.0.1", parts.port or 5672)) == 0


def broker_outage(amqp_url: str, exc: BaseException) -> bool:
    """Whether a failed run failed because RabbitMQ went away (a shared broker restarted)."""
    if not broker_up(amqp_url):
        return True
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(
        isinstance(e, ConnectionError | aio_pika.exceptions.AMQPError) for e in chain
    ) or any(mark in str(e) for e in chain for mark in _OUTAGE_MARKS)
