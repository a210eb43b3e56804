"""Hand-built events for tests that need one without going through a provider."""

from __future__ import annotations

from datetime import UTC, datetime

from schemas.events import Event, event_id


def make_event(n: int = 1, status: str = "delivered") -> Event:
    sid = f"SM{n:032x}"
    return Event(
        id=event_id("twilio", "AC1", "message.status", sid, status),
        kind="message.status",
        tenant="acme",
        provider="twilio",
        source="twilio/AC1",
        subject=sid,
        time=datetime(2026, 11, 23, tzinfo=UTC),
        data={"status": status, "raw": {}},
    )
