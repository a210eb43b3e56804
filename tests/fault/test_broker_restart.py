"""RabbitMQ itself stops and starts (`rabbitmqctl stop_app` / `start_app`) under load.

This test stops the whole broker node, so it must never run beside other broker tests: pytest
runs the suite serially, and the broker is restarted in a `finally` whatever happens.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import pytest
from starlette.applications import Starlette

from tests.fault.conftest import FaultTenant, delivered_subjects
from tests.fault.load import account, steady_load
from tests.fault.test_outages import wait_for_queue
from tests.support.rabbit import RabbitClient
from tests.support.server import serving

pytestmark = pytest.mark.broker


async def rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 120)
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()[-500:]}")


async def settled_subjects(amqp_url: str, queue: str, expected: int) -> list[str]:
    """Wait (on a fresh connection: the broker restarted) until ``expected`` events arrived."""
    rabbit = await RabbitClient(amqp_url).connect()
    try:
        await wait_for_queue(rabbit, queue, expected, within=60)
        return await delivered_subjects(rabbit, queue)
    finally:
        await rabbit.close()


async def test_broker_stop_and_start_under_load(
    amqp_url: str,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """The broker node stops for seconds mid-load and comes back: nothing answered 2xx is lost."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to stop and start the broker")
    app = make_app(amqp_url)
    async with serving(app) as base_url:
        load = asyncio.create_task(
            steady_load(base_url, fault_tenant.account, fault_tenant.token, count=400, rate=50)
        )
        await asyncio.sleep(1.5)
        try:
            await rabbitmqctl("stop_app")
            await asyncio.sleep(2.0)
        finally:
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        result = await load
        durability = app.state.ingress.durability
        counts = durability.acceptor.counts
        subjects = await settled_subjects(amqp_url, fault_tenant.queue, len(result.accepted))
    tally = account(result, subjects)
    print(f"\nbroker restart: {tally} published={counts.published} spooled={counts.spooled}")
    assert result.refused == {}, "callbacks are answered 2xx while the broker is away"
    assert counts.spooled > 0, "the outage really happened"
    assert tally.missing == 0, str(tally)
    assert tally.duplicated <= durability.uncertain, str(tally)


async def watermark() -> str:
    """The broker's current vm_memory_high_watermark, to restore it exactly."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "eval",
        "application:get_env(rabbit, vm_memory_high_watermark).",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode().strip().rsplit("\n", 1)[-1]  # e.g. {ok,0.4}
    if not (text.startswith("{ok,") and text.endswith("}")):
        raise AssertionError(f"cannot read the memory watermark: {text!r}")
    return text[4:-1]


async def test_memory_alarm_blocks_publishers_and_callbacks_still_answer(
    amqp_url: str,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """A real resource alarm (memory watermark 0) blocks publishing: callbacks are answered
    within the deadline from the spool, and delivered once the alarm clears."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to raise a memory alarm")
    app = make_app(amqp_url, publish_timeout_s=0.5)
    previous = await watermark()
    async with serving(app) as base_url:
        try:
            await rabbitmqctl("set_vm_memory_high_watermark", "0")
            await asyncio.sleep(1.0)  # the alarm reaches the connection as connection.blocked
            result = await steady_load(
                base_url, fault_tenant.account, fault_tenant.token, count=60, rate=30
            )
        finally:
            await rabbitmqctl("set_vm_memory_high_watermark", previous)
        durability = app.state.ingress.durability
        counts = durability.acceptor.counts
        subjects = await settled_subjects(amqp_url, fault_tenant.queue, len(result.accepted))
    tally = account(result, subjects)
    slowest = max(result.latencies)
    print(
        f"\nmemory alarm: {tally} slowest answer {slowest * 1000:.0f} ms "
        f"published={counts.published} spooled={counts.spooled} uncertain={durability.uncertain}"
    )
    assert result.refused == {} and counts.spooled > 0
    assert slowest < 0.5 + 0.75, "no request waits on the blocked connection past the deadline"
    assert tally.missing == 0, str(tally)
    assert tally.duplicated <= durability.uncertain, str(tally)
