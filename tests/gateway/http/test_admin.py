"""The admin listener: /readyz and /metrics live there, never on the public listener."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.cli import main
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry
from tests.gateway.test_cli import env
from tests.support.gateway import (
    ACME_SID,
    GLOBEX_TOKEN,
    PUBLIC_URL,
    default_tenants,
    gateway_client,
)
from tests.support.net import free_port
from tests.support.samples import message_status
from tests.support.server import serving


async def test_public_listener_serves_no_metrics_and_no_readiness() -> None:
    """Rejection counters by reason told which tenants exist: they are not on the public side."""
    async with gateway_client() as gw:
        await gw.post_signed(
            "/twilio/messaging/status", message_status(ACME_SID), token=GLOBEX_TOKEN
        )
        public = [(await gw.http.get(path)).status_code for path in ("/metrics", "/readyz")]
        metrics = await gw.admin.get("/metrics")
        ready = await gw.admin.get("/readyz")
        healthy = await gw.http.get("/healthz")
    assert public == [404, 404]
    assert 'hookline_callbacks_rejected_total{reason="signature_invalid"} 1' in metrics.text
    assert ready.status_code == 200 and healthy.status_code == 200


async def test_admin_listener_is_its_own_socket(tmp_path: Path) -> None:
    """With admin_listen set, the lifespan serves /readyz and /metrics on that address."""
    port = free_port()
    tenants = default_tenants()
    settings = Settings(
        tenants=StaticTenantRegistry(tenants),
        public_url=PUBLIC_URL,
        data_dir=tmp_path,
        admin_listen=("127.0.0.1", port),
    )
    app = create_app(
        settings, publisher=MemoryPublisher(MemoryBroker(), ["acme", "globex"]), clock=FakeClock()
    )
    async with serving(app) as base, httpx.AsyncClient() as http:
        admin = f"http://127.0.0.1:{port}"
        assert (await http.get(f"{admin}/readyz")).json()["status"] == "ready"
        assert "hookline_broker_up 1" in (await http.get(f"{admin}/metrics")).text
        assert (await http.get(f"{admin}/twilio/voice")).status_code == 404
        assert (await http.get(f"{base}/metrics")).status_code == 404
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):  # closed with the gateway
            await http.get(f"http://127.0.0.1:{port}/readyz", timeout=1)


def test_serve_with_the_admin_port_taken_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An admin address already in use: exit 1 and one clear line on stderr, before starting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(
            ["serve", "--port", str(free_port())],
            env(HOOKLINE_ADMIN_LISTEN=f"127.0.0.1:{port}", HOOKLINE_DATA_DIR=str(tmp_path)),
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"hookline: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_admin_listen_is_validated() -> None:
    """HOOKLINE_ADMIN_LISTEN must be HOST:PORT; the default is loopback 9180."""
    from gateway.errors import ConfigError
    from gateway.settings import load_settings

    assert load_settings({}).admin_listen == ("127.0.0.1", 9180)
    assert load_settings({"HOOKLINE_ADMIN_LISTEN": "[::1]:9000"}).admin_listen == ("::1", 9000)
    for bad in ("9180", "host", "h:x", "http://h:1"):
        with pytest.raises(ConfigError, match="HOOKLINE_ADMIN_LISTEN: expected HOST:PORT"):
            load_settings({"HOOKLINE_ADMIN_LISTEN": bad})
