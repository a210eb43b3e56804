"""A gateway app on the embedded broker, driven over real ASGI HTTP, for endpoint tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from gateway.broker.base import Publisher
from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import FakeClock
from gateway.http.app import create_app
from gateway.settings import Settings
from gateway.tenants import StaticTenantRegistry, Tenant
from schemas.events import Event
from schemas.topology import tenant_queue
from tests.support.twilio_signing import signed_form_request, twilio_tenant

PUBLIC_URL = "https://hooks.example.com"
ACME_SID = "AC" + "a1" * 16
ACME_TOKEN = "acme-token-0123456789abcdef"
GLOBEX_SID = "AC" + "b2" * 16
GLOBEX_TOKEN = "globex-token-fedcba9876543210"


def default_tenants() -> list[Tenant]:
    return [
        twilio_tenant("acme", ACME_SID, ACME_TOKEN),
        twilio_tenant("globex", GLOBEX_SID, GLOBEX_TOKEN),
    ]


class GatewayClient:
    """An httpx client on the app plus the embedded broker behind it."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        broker: MemoryBroker,
        settings: Settings,
        admin: httpx.AsyncClient,
    ) -> None:
        self.http = http
        self.broker = broker
        self.settings = settings
        #: The admin listener's app (/readyz, /metrics), over ASGI like ``http``.
        self.admin = admin

    async def post_signed(
        self,
        path: str,
        params: Mapping[str, str] | list[tuple[str, str]],
        token: str = ACME_TOKEN,
        *,
        headers: Mapping[str, str] | None = None,
        query: str = "",
    ) -> httpx.Response:
        """POST a form callback signed by the official twilio validator over the public URL."""
        target = f"{path}?{query}" if query else path
        body, signed_headers = signed_form_request(
            f"{PUBLIC_URL}{target}",
            dict(params) if isinstance(params, Mapping) else params,
            token,
            headers=dict(headers or {}),
        )
        return await self.http.post(target, content=body, headers=signed_headers)

    def tenant_events(self, tenant_id: str) -> list[Event]:
        return self.broker.drain(tenant_queue(tenant_id))

    def total_messages(self) -> int:
        return sum(self.broker.queue_length(name) for name in self.broker.queue_names)


@asynccontextmanager
async def gateway_client(
    tenants: list[Tenant] | None = None,
    *,
    publisher: Publisher | None = None,
    client: tuple[str, int] = ("203.0.113.9", 40000),
    **settings_overrides: Any,
) -> AsyncIterator[GatewayClient]:
    """Run the app's lifespan and yield a client for it (the app never touches the network)."""
    tenant_list = default_tenants() if tenants is None else tenants
    with tempfile.TemporaryDirectory(prefix="hookline-test-") as data_dir:
        settings = Settings(
            tenants=StaticTenantRegistry(tenant_list),
            public_url=settings_overrides.pop("public_url", PUBLIC_URL),
            data_dir=Path(settings_overrides.pop("data_dir", data_dir)),
            **settings_overrides,
        )
        broker = MemoryBroker()
        publisher = publisher or MemoryPublisher(broker, [tenant.id for tenant in tenant_list])
        app = create_app(settings, publisher=publisher, clock=FakeClock())
        transport = httpx.ASGITransport(app=app, client=client)
        http = httpx.AsyncClient(transport=transport, base_url="http://gateway.internal")
        admin = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app.state.admin_app), base_url="http://admin.internal"
        )
        async with app.router.lifespan_context(app), http, admin:
            yield GatewayClient(http, broker, settings, admin)
