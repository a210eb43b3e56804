"""The worker side of `hookline`: run (gateway + workers), worker, dead list|replay."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.errors import PoisonMessage
from schemas.topology import DEAD_QUEUE, TWIML_QUEUE
from tests.gateway.test_cli import (
    DEMO_SID,
    DEMO_TOKEN,
    ROOT,
    Serving,
    env,
    serving_process,
    wait_healthy,
)
from tests.support.logs import CapturedLogs
from tests.support.net import free_port
from tests.support.processes import close_pipes
from tests.support.samples import call_incoming, message_incoming
from tests.support.twilio_signing import signed_form_request
from tests.support.twiml_check import check_twiml
from tests.support.workers import RabbitHarness, RecordingHandler, eventually, running
from workers.console import main
from workers.runner import Runner

pytestmark = pytest.mark.usefixtures("reset_logging_after")


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[Serving]:
    """`hookline run` (the console script's module) on memory://, as the README starts it."""
    with serving_process("workers.console", tmp_path) as running:
        yield running


def post(url: str, params: dict[str, str]) -> httpx.Response:
    body, headers = signed_form_request(url, params, DEMO_TOKEN)
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_run_answers_with_the_routing_workers_twiml_and_stops_on_sigterm(
    run_process: Serving,
) -> None:
    """`hookline run` on memory:// answers a call and an SMS from the example's routing rules
    in the same process, shows the gateway's and the workers' metrics on its one admin
    listener, then SIGTERM stops the server first and the workers after it."""
    base_url, proc, admin = run_process
    voice = post(f"{base_url}/twilio/voice", {**call_incoming(DEMO_SID), "To": "+18005550000"})
    sms = post(f"{base_url}/twilio/messaging", message_incoming(DEMO_SID, body="hours?"))
    assert voice.status_code == sms.status_code == 200
    # Another number than the office's: the example's catch-all rule (say, then voicemail).
    assert [el.tag for el in check_twiml(voice.text, "voice")] == ["Say", "Say", "Record", "Hangup"]
    assert "Monday to Friday" in (check_twiml(sms.text, "messaging")[0].text or "")
    replied = (
        'hookline_worker_messages_total{outcome="replied",queue="hookline.twiml",'
        'worker="twiml"} 2.0'
    )
    deadline = time.monotonic() + 10
    while replied not in (text := httpx.get(f"{admin}/metrics").text):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    assert 'hookline_twiml_answer_seconds_count{outcome="worker"} 2.0' in text
    assert 'hookline_callbacks_total{kind="call.incoming",outcome="published"' in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert proc.stdout is not None
    lines = [orjson.loads(line) for line in proc.stdout.read().splitlines()]
    events = [line["event"] for line in lines]
    assert events.index("gateway_stopped") < events.index("worker_stopped")
    handled = [
        (line["worker"], line["outcome"]) for line in lines if line["event"] == "message_handled"
    ]
    # Both TwiML requests answered; the usage worker metered the received SMS.
    assert sorted(handled) == [("twiml", "replied"), ("twiml", "replied"), ("usage", "acked")]
    assert all(line["twiml"] == "worker" for line in lines if line["event"] == "callback_accepted")


def test_flows_worker_needs_the_public_url(capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline worker flows` with flows configured but no HOOKLINE_PUBLIC_URL: exit 1, named."""
    assert main(["worker", "flows"], env(HOOKLINE_AMQP_URL="amqp://guest:guest@127.0.0.1:1/")) == 1
    err = capsys.readouterr().err
    assert "HOOKLINE_PUBLIC_URL must be set" in err and "acme" in err


def test_worker_needs_a_shared_broker(capsys: pytest.CaptureFixture[str]) -> None:
    """A lone worker on memory:// would never see a message: refused with the reason."""
    assert main(["worker", "twiml"], env()) == 1
    assert "hookline run" in capsys.readouterr().err


def test_dead_needs_rabbitmq(capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline dead list` on memory:// explains why it cannot work."""
    assert main(["dead", "list"], env()) == 1
    assert "memory://" in capsys.readouterr().err


@pytest.mark.broker
async def test_poison_message_is_listed_and_replayed(
    amqp_url: str, capsys: pytest.CaptureFixture[str], captured_logs: CapturedLogs
) -> None:
    """A poison message ends in hookline.dead; `dead list` shows why; `dead replay --id` puts
    it back into its queue and out of hookline.dead."""
    harness = await RabbitHarness(amqp_url).start()
    await harness.purge(TWIML_QUEUE, DEAD_QUEUE)
    try:
        poison = RecordingHandler(
            TWIML_QUEUE,
            name="twiml",
            behave=lambda _d: PoisonMessage("not an event", reason="unparsable"),
        )
        runner = Runner(poison, harness.transport("twiml"))
        async with running(runner):
            await harness.publish(TWIML_QUEUE, {"junk": 1}, message_id="poison-42")
            await eventually(lambda: runner.counts.get("dead_lettered") == 1)
        amqp_env = env(HOOKLINE_AMQP_URL=amqp_url)
        assert await asyncio.to_thread(main, ["dead", "list"], amqp_env) == 0
        (listed,) = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert listed["message_id"] == "poison-42" and listed["reason"] == "unparsable"
        assert listed["queue"] == TWIML_QUEUE and listed["attempts"] == 1
        assert await harness.queue_length(DEAD_QUEUE) == 1  # listing removed nothing

        assert await asyncio.to_thread(main, ["dead", "replay", "--id", "nope"], amqp_env) == 1
        assert await asyncio.to_thread(main, ["dead", "replay", "--id", "poison-42"], amqp_env) == 0
        assert '"replayed":"poison-42"' in capsys.readouterr().out
        assert await harness.queue_length(DEAD_QUEUE) == 0
        (back,) = await harness.read_all(TWIML_QUEUE)
        assert back.body == {"junk": 1} and back.message_id == "poison-42"
        assert back.headers["x-hookline-attempt"] == 1
        assert "x-hookline-reason" not in back.headers
    finally:
        await harness.purge(TWIML_QUEUE, DEAD_QUEUE)
        await harness.close()


@pytest.mark.broker
def test_worker_process_stops_on_sigterm(amqp_url: str) -> None:
    """`hookline worker all` on RabbitMQ starts every worker, serves /readyz and /metrics on
    HOOKLINE_ADMIN_LISTEN and exits 0 on SIGTERM."""
    environment = env(
        HOOKLINE_AMQP_URL=amqp_url,
        HOOKLINE_PUBLIC_URL="https://hooks.example.com",
        HOOKLINE_WORKER_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
    )
    admin = f"http://{environment['HOOKLINE_WORKER_ADMIN_LISTEN']}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.console", "worker", "all"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or b"worker_started" in line:
                break
        while (ready := httpx.get(f"{admin}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.1)
        assert ready.json()["workers"]["twiml"] is True
        metrics = httpx.get(f"{admin}/metrics").text
        assert "# TYPE hookline_worker_messages_total counter" in metrics
        assert "# TYPE hookline_worker_handle_seconds histogram" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        rest = proc.stdout.read()
        assert b"worker_draining" in rest and b"worker_stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        close_pipes(proc)


@pytest.mark.broker
def test_run_on_rabbitmq_answers_from_its_own_workers(amqp_url: str, tmp_path: Path) -> None:
    """`hookline run` against RabbitMQ: its twiml worker answers its gateway's calls."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.console", "run", "--port", str(port)],
        env=env(HOOKLINE_AMQP_URL=amqp_url, HOOKLINE_DATA_DIR=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, proc)
        deadline = time.monotonic() + 10
        n = 0
        while True:  # the gateway sees the worker's consumer within a second of it starting
            n += 1
            params = {**call_incoming(DEMO_SID, n), "To": "+18005550000"}
            voice = post(f"{base_url}/twilio/voice", params)
            if "Record" in voice.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [el.tag for el in check_twiml(voice.text, "voice")] == [
            "Say",
            "Say",
            "Record",
            "Hangup",
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        close_pipes(proc)
    assert code == 0
