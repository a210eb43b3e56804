"""Broker outages under load: every callback answered 2xx reaches the tenant queue, once.

The gateway runs on a real uvicorn socket; its AMQP connection goes through a TCP proxy in the
test process that can cut, refuse, stall and restore the link to the real RabbitMQ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette

from tests.fault.conftest import FaultTenant, delivered_subjects
from tests.fault.load import LoadResult, account, send_one, steady_load
from tests.support.rabbit import RabbitClient, TcpProxy
from tests.support.server import serving

pytestmark = pytest.mark.broker


async def wait_for_queue(rabbit: RabbitClient, queue: str, expected: int, within: float) -> int:
    """Poll the queue length until ``expected``; the queue may not exist yet (declared late)."""
    deadline = time.monotonic() + within
    while True:
        length = await rabbit.queue_length(queue) if await rabbit.queue_exists(queue) else 0
        if length >= expected or time.monotonic() > deadline:
            return length
        await asyncio.sleep(0.2)


async def test_broker_cut_under_steady_load_loses_nothing(
    proxy: TcpProxy,
    rabbit: RabbitClient,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """The link is cut for 3 s mid-load: all 2xx callbacks are delivered after recovery."""
    app = make_app(proxy.url)
    async with serving(app) as base_url:
        load = asyncio.create_task(
            steady_load(base_url, fault_tenant.account, fault_tenant.token, count=360, rate=60)
        )
        await asyncio.sleep(1.5)
        proxy.accepting = False
        proxy.sever()
        await asyncio.sleep(3.0)
        proxy.accepting = True
        result = await load
        durability = app.state.ingress.durability
        counts = durability.acceptor.counts
        await wait_for_queue(rabbit, fault_tenant.queue, len(result.accepted), within=30)
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    tally = account(result, subjects)
    print(
        f"\nbroker cut: {tally} published={counts.published} spooled={counts.spooled} "
        f"uncertain={durability.uncertain}"
    )
    assert result.refused == {}, "every callback is answered 2xx during the outage"
    assert counts.spooled > 0, "the outage really happened"
    assert tally.missing == 0, str(tally)
    # A publish in flight at the cut may have reached the broker although its confirm was lost;
    # it is spooled and replayed too (same id). Only those can be delivered twice.
    assert tally.duplicated <= durability.uncertain, str(tally)


async def test_stalled_broker_answers_within_the_deadline(
    proxy: TcpProxy,
    rabbit: RabbitClient,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """A broker that takes bytes but never confirms: answers within deadline + margin, spooled,
    then delivered once the link flows again."""
    app = make_app(proxy.url, publish_timeout_s=0.5)
    async with serving(app) as base_url:
        proxy.pause()
        result = LoadResult()
        async with httpx.AsyncClient() as http:
            await asyncio.gather(
                *(
                    send_one(http, base_url, fault_tenant.account, fault_tenant.token, n, result)
                    for n in range(1, 41)
                )
            )
        slowest = max(result.latencies)
        durability = app.state.ingress.durability
        counts = durability.acceptor.counts
        proxy.resume()
        await wait_for_queue(rabbit, fault_tenant.queue, len(result.accepted), within=30)
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    tally = account(result, subjects)
    print(f"\nstall: {tally} slowest answer {slowest * 1000:.0f} ms, spooled={counts.spooled}")
    assert len(result.accepted) == 40 and result.refused == {}
    assert slowest < 0.5 + 0.5, "answered within the publish deadline plus a margin"
    assert counts.spooled == 40
    assert tally.missing == 0, str(tally)
    assert tally.duplicated <= durability.uncertain, str(tally)


async def test_same_callback_twice_and_same_idempotency_token_give_one_event(
    rabbit: RabbitClient,
    amqp_url: str,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """A provider retry (same body, same I-Twilio-Idempotency-Token) yields one event."""
    from tests.support.samples import message_status
    from tests.support.twilio_signing import signed_form_request

    app = make_app(amqp_url)
    async with serving(app) as base_url, httpx.AsyncClient() as http:
        url = f"{base_url}/twilio/messaging/status"
        body, headers = signed_form_request(
            url, message_status(fault_tenant.account, 7), fault_tenant.token
        )
        headers["i-twilio-idempotency-token"] = "retry-token-7"
        first = await http.post(url, content=body, headers=headers)
        again = await http.post(url, content=body, headers=headers)
        together = await asyncio.gather(
            *(http.post(url, content=body, headers=headers) for _ in range(5))
        )
    assert {r.status_code for r in (first, again, *together)} == {204}
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    assert len(subjects) == 1
    assert app.state.ingress.durability.acceptor.counts.duplicates == 6


async def test_spool_full_answers_503_and_acknowledges_only_what_is_durable(
    proxy: TcpProxy,
    rabbit: RabbitClient,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
) -> None:
    """Broker unreachable and the spool at its cap: 503 (Twilio retries), never a 2xx."""
    proxy.accepting = False
    app = make_app(proxy.url, spool_max_events=3)
    async with serving(app) as base_url:
        result = LoadResult()
        async with httpx.AsyncClient() as http:
            for n in range(1, 7):
                await send_one(http, base_url, fault_tenant.account, fault_tenant.token, n, result)
            admin = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app.state.admin_app),
                base_url="http://admin.internal",
            )
            async with admin:
                ready = await admin.get("/readyz")
        proxy.accepting = True
        await wait_for_queue(rabbit, fault_tenant.queue, 3, within=30)
    assert len(result.accepted) == 3 and set(result.refused.values()) == {503}
    assert ready.status_code == 503 and ready.json()["broker"] == "down"
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    assert sorted(subjects) == sorted(result.accepted)


async def test_unwritable_spool_means_503_while_the_broker_is_down(
    proxy: TcpProxy,
    fault_tenant: FaultTenant,
    make_app: Callable[..., Starlette],
    tmp_path: object,
) -> None:
    """With no usable spool (data dir is a file) and no broker, callbacks get 503."""
    from pathlib import Path

    blocker = Path(str(tmp_path)) / "not-a-dir"
    blocker.write_text("x")
    proxy.accepting = False
    app = make_app(proxy.url, data_dir=blocker)
    async with serving(app) as base_url:
        result = LoadResult()
        async with httpx.AsyncClient() as http:
            await send_one(http, base_url, fault_tenant.account, fault_tenant.token, 1, result)
    assert result.accepted == set() and result.refused == {"SM" + f"{1:032x}": 503}
