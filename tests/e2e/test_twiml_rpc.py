"""TwiML over RPC: signed calls through the ASGI app, answered by a worker over the broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.tenants import EMPTY_TWIML, StaticTenantRegistry, Tenant
from schemas.topology import TWIML_QUEUE, tenant_queue
from tests.support.logs import CapturedLogs
from tests.support.rabbit import RabbitClient, wait_until
from tests.support.routing import ACME_SID, ACME_TOKEN, OFFICE_NUMBER, routed_tenant
from tests.support.samples import call_incoming, message_incoming
from tests.support.twiml_check import check_twiml
from tests.support.twiml_stack import EchoHandler, twiml_stack, worker
from workers.handler import RpcReply
from workers.twiml_worker import TwimlHandler

FALLBACK = "<Response><Say>Acme fallback</Say></Response>"


def tenant(timeout_ms: int = 1000) -> Tenant:
    return routed_tenant(answer_timeout_ms=timeout_ms)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.broker)])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else str(request.getfixturevalue("amqp_url"))


@pytest.fixture
async def cleanup(broker_url: str | None) -> AsyncIterator[None]:
    """Empty the queues these tests fill, before and after (the session vhost is shared)."""

    async def purge() -> None:
        if broker_url is None:
            return
        client = await RabbitClient(broker_url).connect()
        for queue in (TWIML_QUEUE, tenant_queue("acme")):
            if await client.queue_exists(queue):
                await client.purge(queue)
        await client.close()

    await purge()
    yield
    await purge()


def call(n: int = 1, to: str = OFFICE_NUMBER) -> dict[str, str]:
    params = call_incoming(ACME_SID, n)
    params["To"] = to
    return params


async def test_signed_call_gets_the_workers_twiml(
    broker_url: str | None, cleanup: None, captured_logs: CapturedLogs
) -> None:
    """A signed incoming call is answered with the routing worker's TwiML; the event is kept."""
    acme = tenant()
    async with (
        twiml_stack([acme], broker_url) as stack,
        worker(stack, TwimlHandler(StaticTenantRegistry([acme]))),
    ):
        response = await stack.post_signed("/twilio/voice", call(to="+18005559999"), ACME_TOKEN)
        message = await stack.post_signed(
            "/twilio/messaging", message_incoming(ACME_SID, body="hours please"), ACME_TOKEN
        )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/xml")
    root = check_twiml(response.text, "voice")
    assert [(el.tag, el.get("reason")) for el in root] == [("Reject", "busy")]
    assert [el.text for el in check_twiml(message.text, "messaging")] == ["Open 9 to 5."]
    line = next(
        line
        for line in captured_logs.events("callback_accepted")
        if line["path"] == "/twilio/voice"
    )
    assert line["twiml"] == "worker" and line["outcome"] == "published"


async def test_no_worker_gets_the_fallback_within_the_deadline(
    broker_url: str | None, cleanup: None, captured_logs: CapturedLogs
) -> None:
    """Without any worker the fallback comes at once, and never later than deadline + 100 ms."""
    async with twiml_stack([tenant(timeout_ms=500)], broker_url) as stack:
        await wait_until(lambda: getattr(stack.rpc, "consumers", 0) is not None)
        started = time.monotonic()
        response = await stack.post_signed("/twilio/voice", call(), ACME_TOKEN)
        elapsed = time.monotonic() - started
        message = await stack.post_signed(
            "/twilio/messaging", message_incoming(ACME_SID), ACME_TOKEN
        )
    assert response.text == FALLBACK and elapsed < 0.5 + 0.1
    assert message.text == EMPTY_TWIML
    check_twiml(response.text, "voice")
    check_twiml(message.text, "messaging")
    line = next(
        line
        for line in captured_logs.events("callback_accepted")
        if line["path"] == "/twilio/voice"
    )
    assert line["twiml"] == "fallback" and line["twiml_reason"] == "no_worker"


async def test_silent_worker_times_out_within_deadline(
    broker_url: str | None, cleanup: None, captured_logs: CapturedLogs
) -> None:
    """A worker that is there but too slow: fallback at the deadline (+100 ms at most), the
    late reply is dropped and counted."""
    async with twiml_stack([tenant(timeout_ms=300)], broker_url) as stack:
        handler = EchoHandler(delay_s=0.8)
        async with worker(stack, handler):
            started = time.monotonic()
            response = await stack.post_signed("/twilio/voice", call(), ACME_TOKEN)
            elapsed = time.monotonic() - started
            await wait_until(lambda: stack.rpc.late_replies == 1)
            metrics = await stack.admin.get("/metrics")
    assert response.text == FALLBACK
    assert 0.3 <= elapsed < 0.3 + 0.1
    assert handler.answered == 1
    assert "hookline_twiml_late_replies_total 1" in metrics.text
    assert "hookline_twiml_fallbacks_total 1" in metrics.text
    line = next(
        line
        for line in captured_logs.events("callback_accepted")
        if line["path"] == "/twilio/voice"
    )
    assert line["twiml_reason"] == "timeout"


async def test_200_concurrent_calls_get_their_own_answers(
    broker_url: str | None, cleanup: None
) -> None:
    """200 calls at once: each gets the answer made for its own CallSid, none falls back."""
    async with twiml_stack([tenant(timeout_ms=10_000)], broker_url) as stack:
        handler = EchoHandler(delay_s=0.05)
        async with worker(stack, handler):
            responses = await asyncio.gather(
                *(stack.post_signed("/twilio/voice", call(n), ACME_TOKEN) for n in range(200))
            )
    answers = [check_twiml(r.text, "voice")[0].text for r in responses]
    expected = [call(n)["CallSid"] for n in range(200)]
    assert answers == expected and len(set(answers)) == 200


async def test_reply_that_is_not_twiml_falls_back(broker_url: str | None, cleanup: None) -> None:
    """A broken worker reply (not TwiML) never reaches Twilio: the fallback goes instead."""

    class Broken(EchoHandler):
        async def handle(self, batch: object) -> list[RpcReply]:
            return [RpcReply(b"oops", "text/plain")]

    async with twiml_stack([tenant()], broker_url) as stack, worker(stack, Broken()):
        response = await stack.post_signed("/twilio/voice", call(), ACME_TOKEN)
    assert response.text == FALLBACK


async def test_menu_step_round_trip(broker_url: str | None, cleanup: None) -> None:
    """The menu's Gather action comes back with Digits and the step query, and is routed."""
    acme = tenant()
    async with (
        twiml_stack([acme], broker_url) as stack,
        worker(stack, TwimlHandler(StaticTenantRegistry([acme]))),
    ):
        params = {**call(), "Digits": "2"}
        response = await stack.post_signed(
            "/twilio/voice", params, ACME_TOKEN, query="hl_step=menu%3Amain&hl_try=1"
        )
    root = check_twiml(response.text, "voice")
    assert [(el.tag, el.text) for el in root] == [
        ("Say", "Support is online at example.com."),
        ("Hangup", None),
    ]


@pytest.mark.broker
async def test_one_reply_queue_per_process(amqp_url: str) -> None:
    """Requests of one process share one reply queue, not one per request."""
    async with twiml_stack([tenant()], amqp_url) as stack, worker(stack, EchoHandler()):
        await asyncio.gather(
            *(stack.post_signed("/twilio/voice", call(n), ACME_TOKEN) for n in range(20))
        )
        queues = await _reply_queues(amqp_url)
    assert len(queues) == 1
    client = await RabbitClient(amqp_url).connect()
    await client.purge(tenant_queue("acme"))
    await client.close()


async def _reply_queues(amqp_url: str) -> list[str]:
    from urllib.parse import unquote, urlsplit

    vhost = unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "list_queues",
        "-p",
        vhost,
        "name",
        "-q",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    return [name for name in stdout.decode().split() if name.startswith("hookline.reply.")]


async def test_crashing_worker_gets_the_fallback_at_once(
    broker_url: str | None, cleanup: None, captured_logs: CapturedLogs
) -> None:
    """A handler that raises answers the requester with an error reply: the fallback comes
    well before the deadline, logged as twiml_reason=worker_error, and the request is
    dead-lettered."""

    class Crashing(EchoHandler):
        async def handle(self, batch: object) -> list[RpcReply]:
            raise ValueError("invalid literal for int() with base 10: '²'")

    async with (
        twiml_stack([tenant(timeout_ms=3000)], broker_url) as stack,
        worker(stack, Crashing()) as runner,
    ):
        started = time.monotonic()
        response = await stack.post_signed("/twilio/voice", call(), ACME_TOKEN)
        elapsed = time.monotonic() - started
        await wait_until(lambda: runner.counts.get("dead_lettered") == 1)
    assert response.text == FALLBACK and elapsed < 1.0
    line = next(
        line
        for line in captured_logs.events("callback_accepted")
        if line["path"] == "/twilio/voice"
    )
    assert line["twiml"] == "fallback" and line["twiml_reason"] == "worker_error"
    handled = next(
        line for line in captured_logs.events("message_handled") if line.get("worker") == "twiml"
    )
    assert handled["outcome"] == "dead_lettered" and handled["error_reply"] == "sent"


async def test_superscript_menu_attempt_is_answered_not_crashed(
    broker_url: str | None, cleanup: None, captured_logs: CapturedLogs
) -> None:
    """A signed menu step with hl_try=² (a Unicode digit int() refuses) gets the menu's retry
    TwiML from the routing worker at once, not silence until the deadline."""
    acme = tenant(timeout_ms=3000)
    async with (
        twiml_stack([acme], broker_url) as stack,
        worker(stack, TwimlHandler(StaticTenantRegistry([acme]))),
    ):
        started = time.monotonic()
        response = await stack.post_signed(
            "/twilio/voice", call(), ACME_TOKEN, query="hl_step=menu%3Amain&hl_try=%C2%B2"
        )
        elapsed = time.monotonic() - started
    root = check_twiml(response.text, "voice")
    assert [el.tag for el in root] == ["Say", "Gather", "Redirect"] and elapsed < 1.0
    line = next(
        line
        for line in captured_logs.events("callback_accepted")
        if line["path"] == "/twilio/voice"
    )
    assert line["twiml"] == "worker"
