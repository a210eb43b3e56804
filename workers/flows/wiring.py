"""Build the flows worker's handlers from Settings: ``hookline worker flows``.

The two handlers share one Twilio API client; each has its own database connection and
publisher. Step URLs need the public URL Twilio calls back (HOOKLINE_PUBLIC_URL, or the
address ``hookline run`` serves on), and positions need ``[gateway] flow_secret``; a tenant
with flows and neither is refused at start-up, naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.backend_registry import url_scheme
from gateway.broker.base import Publisher
from gateway.broker.factory import create_publisher
from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.clock import SystemClock
from gateway.errors import ConfigError
from gateway.flows.position import PositionSeal
from gateway.settings import Settings
from gateway.usage_config import Budget
from workers.backends import create_ledger, create_store
from workers.flows.twilio_api import TwilioRestApi
from workers.flows.worker import BotCalls, BotCommands
from workers.handler import Handler
from workers.usage.ledger import Ledger
from workers.usage.usage_worker import budget_exhausted


class LedgerBudget:
    """The usage ledger's answer to "is this tenant's month used up?" (usage metering)."""

    def __init__(self, ledger: Ledger, budgets: Mapping[str, Budget]) -> None:
        self._ledger, self._budgets = ledger, budgets

    async def open(self) -> None:
        await self._ledger.open()

    async def close(self) -> None:
        await self._ledger.close()

    async def exhausted(self, tenant: str, month: str) -> bool:
        return await budget_exhausted(self._ledger, self._budgets, tenant, month)


def flows_handlers(
    settings: Settings,
    *,
    memory_broker: MemoryBroker | None = None,
    public_url: str | None = None,
    twilio_api_url: str | None = None,
) -> list[Handler]:
    """BotCommands and BotCalls for these settings; nothing connects before ``start()``."""
    with_flows = [t.id for t in settings.tenants if t.flows is not None]
    base = settings.public_url or public_url
    if with_flows and base is None:
        raise ConfigError(
            f"worker flows: HOOKLINE_PUBLIC_URL must be set to the URL Twilio "
            f"calls back (tenants with flows: {', '.join(with_flows)})"
        )
    # Without flows no flow_secret is required: commands are then all refused (unknown
    # flow) and the worker only drains hookline.bot.calls.
    seal = PositionSeal(settings.flow_secret) if settings.flow_secret else None
    budgets = {t.id: t.budget for t in settings.tenants if t.budget is not None}
    api = TwilioRestApi(api_base=twilio_api_url)
    clock = SystemClock()
    return [
        BotCommands(
            tenants=settings.tenants,
            api=api,
            store=create_store(settings.db_url),
            publisher=_publisher(settings, memory_broker),
            seal=seal,
            public_url=base or "http://unused.invalid",
            clock=clock,
            budget=LedgerBudget(create_ledger(settings.db_url), budgets),
        ),
        BotCalls(
            tenants=settings.tenants,
            api=api,
            store=create_store(settings.db_url),
            publisher=_publisher(settings, memory_broker),
            clock=clock,
        ),
    ]


def _publisher(settings: Settings, memory_broker: MemoryBroker | None) -> Publisher:
    tenant_ids = [tenant.id for tenant in settings.tenants]
    if url_scheme(settings.amqp_url) == "memory":
        if memory_broker is None:
            raise ConfigError(
                "worker flows: HOOKLINE_AMQP_URL is memory://, whose queues live "
                "inside one process; run `hookline run` or use RabbitMQ"
            )
        return MemoryPublisher(memory_broker, tenant_ids)
    return create_publisher(settings.amqp_url, tenant_ids, name="hookline-worker-flows")
