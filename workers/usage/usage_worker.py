"""The usage worker: a batch Handler (workers.handler) on ``hookline.usage``.

Per batch: every delivery is parsed on its own (an unparsable event is a PoisonMessage for that
delivery only); the facts of the rest go to the ledger in one transaction; a ledger outage
raises TransientError for the whole batch, so the runtime retries it and nothing is acked
before it is committed. A redelivered batch is harmless: the ledger counts each event id once.

Budget alerts use the ledger as an outbox: the transaction that crosses a threshold records it
(once per tenant, month and threshold, by primary key); after the commit the handler publishes
every alert not yet marked published, then marks it. A crash in between re-publishes the alert
with the same deterministic event id on the next batch or start, which consumers deduplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import structlog

from gateway.broker.base import Publisher
from gateway.clock import Clock, SystemClock
from gateway.errors import PoisonMessage, PublishError
from gateway.settings import Settings
from gateway.tenants import TENANT_ID_PATTERN
from gateway.usage_config import Budget, decimal_text
from schemas.events import Event
from schemas.topology import USAGE_QUEUE
from workers.backends import create_ledger
from workers.handler import Delivery, Result, require_routed_tenant
from workers.usage.facts import UsageFact, fact_from_event
from workers.usage.ledger import Ledger, LedgerUnavailable, UsagePolicy

DEFAULT_BATCH_SIZE: Final = 256
DEFAULT_BATCH_WAIT_S: Final = 0.2

log = structlog.get_logger("hookline.usage")


def usage_policy(settings: Settings) -> UsagePolicy:
    """The rate card and every tenant's budget, from validated settings."""
    budgets: dict[str, Budget] = {}
    for tenant in settings.tenants:
        if tenant.budget is not None:
            budgets[tenant.id] = tenant.budget
    return UsagePolicy(settings.rate_card, budgets)


async def budget_exhausted(
    ledger: Ledger, budgets: Mapping[str, Budget], tenant: str, month: str
) -> bool:
    """True when the tenant's metered cost of month YYYY-MM has reached its budget amount
    (prepaid allocation or postpaid credit limit). A tenant without a budget is never
    exhausted. Bot calls are refused while this is true."""
    budget = budgets.get(tenant)
    if budget is None:
        return False
    return await ledger.month_spend(tenant, month) >= budget.amount


def parse_delivery(delivery: Delivery) -> UsageFact | None:
    """The fact of one delivery, None when it meters nothing; PoisonMessage when unparsable
    or when its tenant is not the one of its routing key (``tenant_mismatch``)."""
    try:
        event = Event.from_json(delivery.body)
    except ValueError as exc:
        raise PoisonMessage(f"usage: undecodable event: {exc}", reason="malformed_event") from None
    if not TENANT_ID_PATTERN.fullmatch(event.tenant):
        raise PoisonMessage(
            f"usage: event {event.id}: tenant must match "
            f"{TENANT_ID_PATTERN.pattern}, got {event.tenant[:60]!r}",
            reason="malformed_event",
        )
    # Never meter tenant B's bill from an event published under tenant A's routing key.
    require_routed_tenant(delivery, event.tenant, "usage: event")
    return fact_from_event(event)


class UsageHandler:
    """Counts status events into the ledger and publishes usage.budget events.

    It owns the ledger and the publisher it is given: ``start`` opens both, ``close`` closes
    both. Without a publisher, crossed thresholds stay pending in the ledger.
    """

    name = "usage"
    queue = USAGE_QUEUE

    def __init__(
        self,
        ledger: Ledger,
        policy: UsagePolicy,
        publisher: Publisher | None = None,
        *,
        clock: Clock | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
    ) -> None:
        self.ledger, self.policy, self.publisher = ledger, policy, publisher
        self.clock: Clock = clock or SystemClock()
        self.batch_size, self.batch_wait_s = batch_size, batch_wait_s

    async def start(self) -> None:
        await self.ledger.open()
        if self.publisher is not None:
            await self.publisher.start()
        await self.publish_pending()

    async def close(self) -> None:
        try:
            await self.ledger.close()
        finally:
            if self.publisher is not None:
                await self.publisher.close()

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Result]:
        results: list[Result] = [None] * len(batch)
        facts: list[UsageFact] = []
        for index, delivery in enumerate(batch):
            try:
                fact = parse_delivery(delivery)
            except PoisonMessage as exc:
                log.warning(
                    "usage_event_rejected",
                    reason=exc.reason,
                    error=str(exc),
                    message_id=delivery.message_id,
                )
                results[index] = exc
                continue
            if fact is not None:
                facts.append(fact)
        if facts:
            # LedgerUnavailable is a TransientError: the runtime retries the whole batch.
            outcome = await self.ledger.ingest(facts, self.policy, self.clock.now())
            log.debug(
                "usage_batch_ingested",
                applied=outcome.applied,
                duplicates=outcome.duplicates,
                deliveries=len(batch),
            )
            for alert in outcome.alerts:
                log.info(
                    "budget_threshold_crossed",
                    tenant=alert.tenant,
                    month=alert.month,
                    threshold_percent=alert.threshold,
                    mode=alert.mode,
                    budget=decimal_text(alert.amount),
                    spent=decimal_text(alert.spent),
                    exhausted=alert.spent >= alert.amount,
                )
        await self.publish_pending()
        return results

    async def publish_pending(self) -> int:
        """Publish the alerts not yet published; return how many were. Never raises for a
        broker or ledger outage: the alerts stay pending and the next batch tries again."""
        if self.publisher is None:
            return 0
        try:
            pending = await self.ledger.pending_alerts()
        except LedgerUnavailable as exc:
            log.warning("budget_events_unreadable", error=str(exc))
            return 0
        published = []
        for alert in pending:
            try:
                await self.publisher.publish(alert.to_event())
            except PublishError as exc:
                log.warning(
                    "budget_event_publish_failed",
                    tenant=alert.tenant,
                    month=alert.month,
                    threshold_percent=alert.threshold,
                    error=str(exc),
                )
                break
            published.append(alert)
            log.info(
                "budget_event_published",
                tenant=alert.tenant,
                month=alert.month,
                threshold_percent=alert.threshold,
                event_id=alert.event_id,
            )
        if published:
            try:
                await self.ledger.mark_published(published, self.clock.now())
            except LedgerUnavailable as exc:
                log.warning("budget_events_unmarked", error=str(exc), count=len(published))
        return len(published)


def create_usage_handler(settings: Settings, publisher: Publisher | None = None) -> UsageHandler:
    """The usage handler for these settings; nothing connects before ``start()``.

    ``publisher`` defaults to one on HOOKLINE_AMQP_URL. With ``memory://`` there is no broker
    a tenant could read budget events from, so none is made: crossed thresholds are logged and
    stay pending in the ledger, to be published once the worker runs against RabbitMQ.
    """
    from gateway.backend_registry import url_scheme
    from gateway.broker.factory import create_publisher

    if publisher is None and url_scheme(settings.amqp_url) != "memory":
        publisher = create_publisher(
            settings.amqp_url, [t.id for t in settings.tenants], name="hookline-worker-usage"
        )
    return UsageHandler(create_ledger(settings.db_url), usage_policy(settings), publisher)
