"""Which worker kinds this build has: ``hookline worker <name>`` looks them up here.

Each entry builds its handler from the process's Settings. A feature adds its worker with one
line (``"usage": usage_handler``); kinds named in DESIGN section 3 but not installed yet are
reported as such by the CLI instead of failing obscurely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from gateway.settings import Settings
from workers.handler import Handler
from workers.twiml import TwimlHandler
from workers.usage.handler import create_usage_handler

HandlerFactory = Callable[[Settings], Handler]

#: Every kind DESIGN section 3 names, in the order ``worker all`` starts them.
KINDS: Final = ("twiml", "usage", "flows")


def twiml_handler(settings: Settings) -> Handler:
    return TwimlHandler(settings.tenants, public_url=settings.public_url)


def usage_handler(settings: Settings) -> Handler:
    return create_usage_handler(settings)


HANDLERS: Final[Mapping[str, HandlerFactory]] = {
    "twiml": twiml_handler,
    "usage": usage_handler,
}


def installed() -> list[str]:
    """The kinds this build can run, in KINDS order (then any others)."""
    return [kind for kind in KINDS if kind in HANDLERS] + \
        [kind for kind in HANDLERS if kind not in KINDS]
