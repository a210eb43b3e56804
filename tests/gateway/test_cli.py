"""The `hookline` command: check, topology declare, tail, run and serve as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import orjson
import pytest

from gateway.cli import main
from gateway.http.app import create_app
from gateway.settings import load_settings
from tests.support.net import free_port
from tests.support.processes import close_pipes
from tests.support.rabbit import RabbitClient
from tests.support.samples import message_status
from tests.support.twilio_signing import signed_form_request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hookline.toml"
DEMO_SID, DEMO_TOKEN = "AC00000000000000000000000000000001", "demo-token-not-secret"


pytestmark = pytest.mark.usefixtures("reset_logging_after")


def env(**extra: str) -> dict[str, str]:
    """A clean environment for the command: only what the test sets, and an admin listener
    on a free port (never the shared default 9180)."""
    base = {
        "PATH": os.environ.get("PATH", ""),
        "HOOKLINE_CONFIG": str(EXAMPLE),
        "HOOKLINE_LOG_FORMAT": "json",
        "HOOKLINE_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
    }
    base.update(extra)
    return base


def admin_url(environment: dict[str, str]) -> str:
    """The base URL of the admin listener (/readyz, /metrics) of a process run with it."""
    return f"http://{environment['HOOKLINE_ADMIN_LISTEN']}"


class Serving(NamedTuple):
    """A running `hookline run`: its public URL, the process, its admin listener's URL."""

    base_url: str
    proc: subprocess.Popen[bytes]
    admin_url: str


def test_version_is_the_one_in_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline --version` prints pyproject's version and exits 0."""
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with pytest.raises(SystemExit) as stopped:
        main(["--version"], env())
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"hookline {expected}\n"


def test_installed_console_script_prints_the_version() -> None:
    """The installed `hookline` script (workers.console:main) answers --version the same way."""
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    script = Path(sys.executable).parent / "hookline"
    done = subprocess.run(
        [str(script), "--version"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"hookline {expected}\n"


def test_check_passes_on_the_example_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hookline check` exits 0 and reports config, broker and database on the example config."""
    code = main(["check"], env(HOOKLINE_DATA_DIR=str(tmp_path)))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ok   config:" in out and "2 tenant(s)" in out
    assert "ok   usage: 9 rate(s), 1 number rental(s), 1 tenant budget(s), USD" in out
    assert "ok   broker: memory://" in out and "ok   database: sqlite" in out


def test_check_fails_naming_the_bad_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad setting makes `hookline check` exit 1 with the variable named."""
    code = main(["check"], env(HOOKLINE_LOG_LEVEL="loud"))
    assert code == 1
    assert "HOOKLINE_LOG_LEVEL" in capsys.readouterr().err


@pytest.mark.broker
def test_check_reaches_the_real_broker(
    amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hookline check` connects to RabbitMQ and prints its version, never the password."""
    code = main(["check"], env(HOOKLINE_AMQP_URL=amqp_url, HOOKLINE_DATA_DIR=str(tmp_path)))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "RabbitMQ" in out and "guest:guest" not in out


def test_check_reports_an_unreachable_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable broker is a FAIL line and exit 1."""
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    code = main(["check"], env(HOOKLINE_AMQP_URL=url, HOOKLINE_DATA_DIR=str(tmp_path)))
    out = capsys.readouterr().out
    assert code == 1 and "FAIL broker" in out and "guest:guest" not in out


@pytest.mark.broker
def test_topology_declare_is_idempotent(amqp_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline topology declare` twice creates the queues once and succeeds both times."""
    assert main(["topology", "declare"], env(HOOKLINE_AMQP_URL=amqp_url)) == 0
    assert main(["topology", "declare"], env(HOOKLINE_AMQP_URL=amqp_url)) == 0
    assert "2 tenant queue(s)" in capsys.readouterr().out

    async def exists() -> list[bool]:
        client = await RabbitClient(amqp_url).connect()
        try:
            return [
                await client.queue_exists(q)
                for q in (
                    "hookline.tenant.demo",
                    "hookline.tenant.acme",
                    "hookline.usage",
                    "hookline.dead",
                )
            ]
        finally:
            await client.close()

    assert asyncio.run(exists()) == [True, True, True, True]


def test_tail_refuses_unknown_tenant_and_memory_broker(capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline tail` names an unknown tenant, and explains why memory:// cannot be tailed."""
    assert main(["tail", "--tenant", "nobody"], env()) == 1
    assert "nobody" in capsys.readouterr().err
    assert main(["tail", "--tenant", "demo"], env()) == 1
    assert "memory://" in capsys.readouterr().err


@pytest.mark.broker
def test_tail_prints_a_tenants_events(amqp_url: str, tmp_path: Path) -> None:
    """`hookline tail --tenant demo` prints the demo tenant's events as JSON lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "tail", "--tenant", "demo"],
        env=env(HOOKLINE_AMQP_URL=amqp_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_line(proc, b"tail_started")  # bound: what the gateway publishes now reaches it

        async def publish() -> None:
            settings = load_settings(
                env(HOOKLINE_AMQP_URL=amqp_url, HOOKLINE_DATA_DIR=str(tmp_path))
            )
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                body, headers = signed_form_request(
                    "http://gw/twilio/messaging/status", message_status(DEMO_SID), DEMO_TOKEN
                )
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
                    # The ASGI transport's server is ("gw", 80): sign for that URL.
                    response = await http.post(
                        "/twilio/messaging/status", content=body, headers=headers
                    )
                    assert response.status_code == 204, response.text

        asyncio.run(publish())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        event = orjson.loads(line)
        assert event["tenant"] == "demo" and event["type"] == "io.hookline.message.status"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)


def wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 30) -> None:
    """Read the process's stderr until a line holding ``marker``; fail naming what came."""
    assert proc.stderr is not None
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stderr.readline()
            if not line:  # the process ended
                break
            if marker in line:
                return
            seen.append(line)
    raise AssertionError(f"no {marker!r} line within {timeout} s; stderr: {b''.join(seen)!r}")


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hookline exited early with {proc.returncode}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("hookline did not become healthy")


@contextlib.contextmanager
def serving_process(module: str, tmp_path: Path) -> Iterator[Serving]:
    """`python -m <module> run` with the embedded defaults, until healthy; killed after."""
    port = free_port()
    environment = env(HOOKLINE_DATA_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "run", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, proc)
        yield Serving(base_url, proc, admin_url(environment))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        close_pipes(proc)


@pytest.fixture
def run_process(tmp_path: Path) -> Iterator[Serving]:
    """`hookline run` with the embedded defaults (the gateway module's own `run`)."""
    with serving_process("gateway.cli", tmp_path) as running:
        yield running


def test_run_accepts_a_signed_callback_and_stops_on_sigterm(
    run_process: Serving,
) -> None:
    """`hookline run` on memory:// takes a signed callback, logs JSON and exits 0 on SIGTERM."""
    base_url, proc, admin = run_process
    url = f"{base_url}/twilio/messaging/status"
    body, headers = signed_form_request(url, message_status(DEMO_SID), DEMO_TOKEN)
    response = httpx.post(url, content=body, headers=headers)
    assert response.status_code == 204
    assert httpx.get(f"{admin}/readyz").status_code == 200
    # Only providers' routes and the liveness probe on the public listener.
    assert httpx.get(f"{base_url}/readyz").status_code == 404
    assert httpx.get(f"{base_url}/metrics").status_code == 404
    assert "hookline_callbacks_total" in httpx.get(f"{admin}/metrics").text
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why.
    assert proc.wait(15) in (0, -signal.SIGTERM)
    assert proc.stdout is not None
    lines = [orjson.loads(line) for line in proc.stdout.read().splitlines()]
    accepted = [line for line in lines if line["event"] == "callback_accepted"]
    assert len(accepted) == 1 and accepted[0]["tenant"] == "demo"
    assert "gateway_stopped" in [line["event"] for line in lines]
    assert DEMO_TOKEN not in str(lines)


@pytest.mark.broker
def test_serve_with_two_workers(amqp_url: str, tmp_path: Path) -> None:
    """`hookline serve --workers 2` runs two processes, both ready on the real broker."""
    port = free_port()
    environment = env(HOOKLINE_AMQP_URL=amqp_url, HOOKLINE_DATA_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base_url, proc)
        deadline = time.monotonic() + 20
        while httpx.get(f"{admin_url(environment)}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)
        url = f"{base_url}/twilio/messaging/status"
        statuses = set()
        for n in range(20):
            body, headers = signed_form_request(url, message_status(DEMO_SID, n), DEMO_TOKEN)
            statuses.add(httpx.post(url, content=body, headers=headers).status_code)
        assert statuses == {204}
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        code = proc.returncode
    assert code in (0, -signal.SIGTERM)
    lines = [orjson.loads(line) for line in output.splitlines()]
    assert sum(line["event"] == "callback_accepted" for line in lines) == 20


def test_check_and_run_agree_on_amqp_url_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`?heartbeat=30` is refused by `check` as by every other command (one validation)."""
    code = main(["check"], env(HOOKLINE_AMQP_URL="amqp://u:secret@127.0.0.1/?heartbeat=30"))
    err = capsys.readouterr().err
    assert code == 1
    assert "HOOKLINE_AMQP_URL: query options (?heartbeat=...) are not supported" in err
    assert "secret" not in err


def test_check_warns_loudly_without_a_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No HOOKLINE_CONFIG and no ./hookline.toml: `check` says so instead of 'ok config'."""
    monkeypatch.chdir(tmp_path)
    environment = env(HOOKLINE_DATA_DIR=str(tmp_path / "data"))
    del environment["HOOKLINE_CONFIG"]
    assert main(["check"], environment) == 0
    out = capsys.readouterr().out
    assert "ok   config" not in out
    assert "warn config: no config file: hookline.toml does not exist" in out


def test_help_names_the_configuration_variables(capsys: pytest.CaptureFixture[str]) -> None:
    """`hookline --help` tells a newcomer where the configuration comes from."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "HOOKLINE_CONFIG" in out and "HOOKLINE_AMQP_URL" in out


def callback_total(text: str) -> float:
    """The sum of every hookline_callbacks_total sample in a /metrics answer."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("hookline_callbacks_total{")
    )


@pytest.mark.broker
def test_serve_with_two_workers_reports_one_set_of_metrics(amqp_url: str, tmp_path: Path) -> None:
    """With `serve --workers 2`, every scrape of /metrics, whichever process answers, counts
    the callbacks of both processes (prometheus_client multiprocess mode)."""
    port = free_port()
    environment = env(HOOKLINE_AMQP_URL=amqp_url, HOOKLINE_DATA_DIR=str(tmp_path))
    stale = tmp_path / "metrics" / "counter_999999.db"  # a previous run's file: not counted
    stale.parent.mkdir()
    stale.write_bytes(b"stale")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--workers", "2"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    base_url, admin = f"http://127.0.0.1:{port}", admin_url(environment)
    try:
        wait_healthy(base_url, proc)
        deadline = time.monotonic() + 20
        while httpx.get(f"{admin}/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)
        url = f"{base_url}/twilio/messaging/status"
        for n in range(20):  # a new connection each: the two processes share them
            body, headers = signed_form_request(url, message_status(DEMO_SID, n), DEMO_TOKEN)
            assert httpx.post(url, content=body, headers=headers).status_code == 204
        time.sleep(1.5)  # scrape-time gauges are copied to the shared files once a second
        scrapes = [httpx.get(f"{admin}/metrics").text for _ in range(12)]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code in (0, -signal.SIGTERM)
    assert [callback_total(text) for text in scrapes] == [20.0] * 12
    assert not stale.exists()
    for text in scrapes:
        assert "hookline_broker_up 1.0" in text
        assert "hookline_publish_confirm_seconds_count 20.0" in text
