"""Fixtures of the fault tests: a tenant, and a gateway whose broker link goes through a proxy."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant
from schemas.topology import tenant_queue
from tests.support.rabbit import RabbitClient, TcpProxy
from tests.support.twilio_signing import twilio_tenant


@dataclass
class FaultTenant:
    tenant: Tenant
    account: str
    token: str

    @property
    def queue(self) -> str:
        return tenant_queue(self.tenant.id)


@pytest.fixture
def fault_tenant() -> FaultTenant:
    account, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
    return FaultTenant(
        twilio_tenant(f"fault-{secrets.token_hex(3)}", account, token), account, token
    )


@pytest.fixture
def make_app(fault_tenant: FaultTenant, tmp_path: Path) -> Callable[..., Starlette]:
    """Build a gateway app for the fault tenant; keyword arguments override Settings."""

    def build(amqp_url: str, **overrides: Any) -> Starlette:
        settings = Settings(
            tenants=StaticTenantRegistry([fault_tenant.tenant]),
            amqp_url=amqp_url,
            data_dir=overrides.pop("data_dir", tmp_path),
            **overrides,
        )
        return create_app(settings)

    return build


async def delivered_subjects(rabbit: RabbitClient, queue: str) -> list[str]:
    return [doc["subject"] for _props, doc in await rabbit.read_all(queue)]


@pytest.fixture
async def proxy(broker_proxy: TcpProxy) -> AsyncIterator[TcpProxy]:
    yield broker_proxy
