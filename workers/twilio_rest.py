"""Where the official ``twilio`` client sends its REST requests.

Both users of the REST API (usage reconciliation, bot-call placement) accept an ``api_base``
that replaces https://api.twilio.com: an egress proxy, or the local fake API the tests run.
"""

from __future__ import annotations

from typing import Final

TWILIO_API: Final = "https://api.twilio.com"


def rebased(url: str, api_base: str | None) -> str:
    """``url`` on ``api_base`` instead of Twilio's API host; unchanged without one."""
    if api_base and url.startswith(TWILIO_API):
        return api_base.rstrip("/") + url[len(TWILIO_API) :]
    return url
