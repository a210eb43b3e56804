"""The gateway process dies or stops under load: nothing answered 2xx is lost.

The gateway runs as a real `hookline serve` process; its AMQP link goes through the test's TCP
proxy so the test can hold events in the spool at the moment of the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.fault.conftest import FaultTenant, delivered_subjects
from tests.fault.load import account, steady_load
from tests.fault.test_outages import wait_for_queue
from tests.support.net import free_port
from tests.support.rabbit import RabbitClient, TcpProxy

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]

Starter = Callable[[], "asyncio.Future[asyncio.subprocess.Process]"]


def write_config(path: Path, tenant: FaultTenant) -> Path:
    path.write_text(
        f'[[tenants]]\nid = "{tenant.tenant.id}"\n\n[tenants.twilio]\n'
        f'account_sid = "{tenant.account}"\nauth_token = "{tenant.token}"\n',
        encoding="utf-8",
    )
    return path


class GatewayProcess:
    """`hookline serve` as a child process on a fixed port and data dir."""

    def __init__(self, config: Path, amqp_url: str, data_dir: Path, port: int) -> None:
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOOKLINE_CONFIG": str(config),
            "HOOKLINE_AMQP_URL": amqp_url,
            "HOOKLINE_DATA_DIR": str(data_dir),
            "HOOKLINE_LOG_FORMAT": "json",
            "HOOKLINE_ADMIN_LISTEN": f"127.0.0.1:{free_port()}",
        }
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.output = b""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--port",
            str(self.port),
            env=self.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise AssertionError(f"gateway exited with {self.proc.returncode}")
                try:
                    if (await http.get(f"{self.base_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        raise AssertionError("gateway did not become healthy")

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
        self.output += out
        return self.proc.returncode if self.proc.returncode is not None else 0

    def log_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.output.splitlines() if line.startswith(b"{")]


@pytest.fixture
async def gateway_process(
    tmp_path: Path, fault_tenant: FaultTenant, broker_proxy: TcpProxy
) -> AsyncIterator[GatewayProcess]:
    config = write_config(tmp_path / "hookline.toml", fault_tenant)
    process = GatewayProcess(config, broker_proxy.url, tmp_path / "data", free_port())
    yield process
    if process.proc is not None and process.proc.returncode is None:
        process.proc.kill()
        await process.proc.wait()


async def test_sigkill_under_load_then_restart_delivers_everything(
    gateway_process: GatewayProcess,
    broker_proxy: TcpProxy,
    rabbit: RabbitClient,
    fault_tenant: FaultTenant,
) -> None:
    """Kill -9 while events wait in the spool; the restarted gateway replays them all."""
    gw = gateway_process
    await gw.start()
    load = asyncio.create_task(
        steady_load(gw.base_url, fault_tenant.account, fault_tenant.token, count=300, rate=100)
    )
    await asyncio.sleep(1.0)
    broker_proxy.accepting = False
    broker_proxy.sever()
    await asyncio.sleep(1.0)
    assert await gw.stop(signal.SIGKILL) == -signal.SIGKILL
    result = await load
    broker_proxy.accepting = True
    await gw.start()  # same data dir: claims the dead process's spool file and replays it
    await wait_for_queue(rabbit, fault_tenant.queue, len(result.accepted), within=30)
    await gw.stop(signal.SIGTERM)
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    tally = account(result, subjects)
    replayed = [line for line in gw.log_lines() if line["event"] == "spool_replayed"]
    print(f"\nsigkill: {tally}; replay lines after restart: {replayed}")
    # Publishes in flight at the cut may have reached the broker with their confirm lost:
    # each is logged (publish_failed / publish_timed_out), spooled and replayed (same id).
    lines = gw.log_lines()
    uncertain = sum(line["event"] in ("publish_failed", "publish_timed_out") for line in lines)
    uncertain += sum(
        int(str(line.get("replay_uncertain", 0)))
        for line in lines
        if line["event"] == "gateway_stopped"
    )
    assert 100 <= len(result.accepted) < 300, "the kill really cut the load short"
    assert tally.missing == 0, str(tally)
    assert tally.duplicated <= uncertain, f"{tally}, uncertain publishes: {uncertain}"
    assert replayed, "the restarted gateway replayed the spool"


async def test_sigterm_under_load_finishes_in_flight_and_logs_counts(
    gateway_process: GatewayProcess,
    rabbit: RabbitClient,
    fault_tenant: FaultTenant,
) -> None:
    """SIGTERM mid-load: requests in flight finish, every 2xx is delivered, counts are logged."""
    gw = gateway_process
    await gw.start()
    load = asyncio.create_task(
        steady_load(gw.base_url, fault_tenant.account, fault_tenant.token, count=200, rate=100)
    )
    await asyncio.sleep(1.0)
    code = await gw.stop(signal.SIGTERM)
    result = await load
    await wait_for_queue(rabbit, fault_tenant.queue, len(result.accepted), within=15)
    subjects = await delivered_subjects(rabbit, fault_tenant.queue)
    tally = account(result, subjects)
    [stopped] = [line for line in gw.log_lines() if line["event"] == "gateway_stopped"]
    print(f"\nsigterm: {tally}; {stopped}")
    assert code in (0, -signal.SIGTERM)
    assert tally.missing == 0 and tally.duplicated == 0, str(tally)
    assert stopped["published"] + stopped["spooled"] == len(result.accepted)
    assert stopped["left_in_spool"] == 0
