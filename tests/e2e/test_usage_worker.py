"""Usage metering end to end: events on the real RabbitMQ, usage worker processes on the real
runner (two of them the real `hookline worker usage` command), the ledger on SQLite and the
real PostgreSQL. A worker SIGKILLed after its commit and before its acks, two workers
consuming at once, and duplicate deliveries still count every event exactly once, and each
budget threshold produces one usage.budget event id."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aio_pika
import orjson
import pytest

from schemas.topology import EVENTS_EXCHANGE, USAGE_QUEUE, tenant_queue
from tests.support.rabbit import RabbitClient
from tests.support.schema_check import assert_valid_event
from tests.support.usage import ACCOUNT, scenario
from tests.support.workers import RabbitHarness, eventually
from workers.backends import create_ledger

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
N = 300  # messages: 900 message events + 60 call events, plus 200 duplicate deliveries
EXPECTED = {
    "messages": N,
    "segments": 2 * N,
    "failed": N // 10,
    "calls": N // 10,
    "minutes": N // 5,
}
EXPECTED_COST = Decimal("0.0079") * 2 * N + Decimal("0.0140") * 2 * (N // 10)


@pytest.fixture
async def rabbit_harness(amqp_url: str) -> AsyncIterator[RabbitHarness]:
    """The session vhost with hookline's topology declared and the usage queues empty."""
    harness = await RabbitHarness(amqp_url).start()
    await harness.purge(USAGE_QUEUE, tenant_queue("acme"))
    try:
        yield harness
    finally:
        await harness.purge(USAGE_QUEUE, tenant_queue("acme"))
        await harness.close()


CONFIG = f"""
[usage]
[[usage.rates]]
provider = "twilio"
channel = "sms"
per_segment = "0.0079"
[[usage.rates]]
provider = "twilio"
channel = "voice"
prefix = "+1"
per_minute = "0.0140"

[[tenants]]
id = "acme"
[tenants.twilio]
account_sid = "{ACCOUNT}"
auth_token = "token"
[tenants.budget]
mode = "prepaid"
amount = "1.00"
"""


def holding_worker(amqp_url: str, db_url: str, progress: Path) -> subprocess.Popen[bytes]:
    """A usage worker that holds its first batch, committed and unacked, for 30 s."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.usage_worker", amqp_url, db_url, str(progress), "30"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def hookline_worker(amqp_url: str, db_url: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`hookline worker usage`, the console script's module, its JSON log lines to ``log``."""
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOOKLINE_CONFIG": str(config),
        "HOOKLINE_AMQP_URL": amqp_url,
        "HOOKLINE_DB_URL": db_url,
        "HOOKLINE_LOG_FORMAT": "json",
        "HOOKLINE_LOG_LEVEL": "info",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workers.console", "worker", "usage"],
            cwd=ROOT,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def handled(log: Path) -> int:
    return sum(
        1
        for line in log.read_text().splitlines()
        if line.startswith("{") and orjson.loads(line).get("event") == "message_handled"
    )


async def publish_events(amqp_url: str) -> int:
    """The scenario's events through hookline.events, the first 200 of them twice."""
    events = scenario(N)
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)
        for event in events + events[:200]:
            await exchange.publish(
                aio_pika.Message(
                    event.to_json(),
                    message_id=event.id,
                    content_type="application/cloudevents+json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=event.routing_key,
                mandatory=True,
            )
    finally:
        await connection.close()
    return len(events) + 200


async def totals(db_url: str) -> tuple[dict[str, int], Decimal, list[int]]:
    ledger = create_ledger(db_url)
    await ledger.open()
    try:
        rows = await ledger.usage("2026-11")
        counts = {name: sum(getattr(r, name) for r in rows) for name in EXPECTED}
        cost = sum((r.cost for r in rows), Decimal(0))
        alerts = sorted(a.threshold for a in await ledger.pending_alerts())
        return counts, cost, alerts
    finally:
        await ledger.close()


def read(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except (OSError, ValueError):
        return 0


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """SIGTERM each worker and wait for all of them; then check they all exited cleanly (a
    failed check must not leave a worker running after the test)."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
    assert [proc.returncode for proc in procs] == [0] * len(procs), "exit statuses"


async def test_killed_worker_and_two_concurrent_workers(
    rabbit_harness: RabbitHarness, amqp_url: str, ledger_url: str, tmp_path: Path
) -> None:
    """Kill one worker after a commit, before its acks; two more drain the queue together."""
    db_url = ledger_url
    victim_progress = tmp_path / "victim"
    victim = holding_worker(amqp_url, db_url, victim_progress)
    published = await publish_events(amqp_url)
    await eventually(lambda: read(victim_progress) >= 1, within=30)
    assert read(victim_progress) == 1, "the first worker should hold its first batch"
    counted, _, _ = await totals(db_url)
    assert 0 < counted["messages"] < N  # its batch is committed, its acks are not sent
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)

    config = tmp_path / "hookline.toml"
    config.write_text(CONFIG)
    logs = tmp_path / "first.log", tmp_path / "second.log"
    first, second = (hookline_worker(amqp_url, db_url, config, log) for log in logs)
    try:
        client = rabbit_harness.client
        await eventually(lambda: _drained(client), within=60)
        await eventually(lambda: _settled(db_url), within=30)
        await asyncio.sleep(1.0)  # anything still arriving now could only be over-counting
    finally:
        stop(first, second)
    assert handled(logs[0]) > 0 and handled(logs[1]) > 0, "both workers consumed"
    counts, cost, alerts = await totals(db_url)
    assert counts == EXPECTED and cost == EXPECTED_COST
    assert published == 3 * N + 2 * (N // 10) + 200
    # The budget (1.00) is crossed at 50, 80 and 100 %: every alert is published and marked;
    # on the tenant's queue each threshold has one event id (a re-publish reuses it).
    assert alerts == []
    budget_events = [
        body
        for _, body in await client.read_all(tenant_queue("acme"))
        if body["type"] == "io.hookline.usage.budget"
    ]
    assert sorted({e["data"]["threshold_percent"] for e in budget_events}) == [50, 80, 100]
    assert len({e["id"] for e in budget_events}) == 3
    for event in budget_events:
        assert_valid_event(event)


async def _drained(client: RabbitClient) -> bool:
    return await client.queue_length(USAGE_QUEUE) == 0


async def _settled(db_url: str) -> bool:
    counts, _, _ = await totals(db_url)
    return all(counts[name] >= value for name, value in EXPECTED.items())
