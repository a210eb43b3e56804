"""Which worker kinds this build has: ``hookline worker <name>`` looks them up here.

Each entry builds the handlers of its kind (one queue each) from the process's Settings and
the context it runs in; a new kind is one entry here and one name in KINDS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.broker.memory import MemoryBroker
from gateway.flows.position import PositionSeal
from gateway.settings import Settings
from workers.flows.wiring import flows_handlers
from workers.handler import Handler
from workers.twiml_worker import TwimlHandler
from workers.usage.usage_worker import create_usage_handler


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """Where the workers run: ``hookline run`` shares its embedded broker and knows the
    address it serves on (the public URL when HOOKLINE_PUBLIC_URL is unset)."""

    memory_broker: MemoryBroker | None = None
    public_url: str | None = None


HandlerFactory = Callable[[Settings, WorkerContext], Sequence[Handler]]

#: Every kind of docs/operations.md#command-line, in the order ``worker all`` and ``run`` use.
KINDS: Final = ("twiml", "usage", "flows")


def twiml_handlers(settings: Settings, _context: WorkerContext) -> Sequence[Handler]:
    seal = PositionSeal(settings.flow_secret) if settings.flow_secret else None
    return [TwimlHandler(settings.tenants, public_url=settings.public_url, seal=seal)]


def usage_handlers(settings: Settings, _context: WorkerContext) -> Sequence[Handler]:
    return [create_usage_handler(settings)]


def flows_of(settings: Settings, context: WorkerContext) -> Sequence[Handler]:
    return flows_handlers(
        settings, memory_broker=context.memory_broker, public_url=context.public_url
    )


HANDLERS: Final[Mapping[str, HandlerFactory]] = {
    "twiml": twiml_handlers,
    "usage": usage_handlers,
    "flows": flows_of,
}
