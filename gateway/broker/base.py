"""The Publisher protocol the ingress depends on."""

from __future__ import annotations

from typing import Protocol

from schemas.events import Event


class Publisher(Protocol):
    """Publishes events durably. ``publish`` returns only once the broker has the event.

    Raises ``gateway.errors.PublishError`` when the event was not confirmed (broker down,
    message returned as unroutable, nack, timeout).
    """

    async def start(self) -> None:
        """Connect and declare the topology; called once from the app lifespan."""

    async def close(self) -> None:
        """Close the connection; safe to call twice."""

    @property
    def ready(self) -> bool:
        """True while the broker connection is up (drives /readyz)."""

    async def publish(self, event: Event) -> None: ...
