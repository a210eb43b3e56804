"""The CloudEvents 1.0 envelope every hookline event travels in (docs/architecture.md#events).

Events are published in structured JSON mode: the whole envelope is the AMQP body, with
``content_type=application/cloudevents+json`` and ``message_id`` equal to the event ``id``.
See https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md and the JSON format
https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/formats/json-format.md.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

SPEC_VERSION: Final = "1.0"
CONTENT_TYPE: Final = "application/cloudevents+json"
DATA_CONTENT_TYPE: Final = "application/json"
TYPE_PREFIX: Final = "io.hookline."

# Event kinds: the routing key is "<tenant>.<provider>.<kind>", the type "io.hookline.<kind>".
CALL_INCOMING: Final = "call.incoming"
CALL_STATUS: Final = "call.status"
CALL_FLOW: Final = "call.flow"
MESSAGE_INCOMING: Final = "message.incoming"
MESSAGE_STATUS: Final = "message.status"
CALL_BOT_RESULT: Final = "call.bot.result"
USAGE_BUDGET: Final = "usage.budget"
KINDS: Final = frozenset(
    {
        CALL_INCOMING,
        CALL_STATUS,
        CALL_FLOW,
        MESSAGE_INCOMING,
        MESSAGE_STATUS,
        CALL_BOT_RESULT,
        USAGE_BUDGET,
    }
)

PROVIDERS: Final = frozenset({"twilio", "kaleyra", "hookline"})

# Normalized message statuses, whatever the provider (docs/architecture.md#events). The provider's
# value always travels beside it as ``provider_status``.
MESSAGE_STATUSES: Final = frozenset(
    {
        "queued",
        "sent",
        "delivered",
        "undelivered",
        "failed",
        "read",
        "canceled",
        "accepted",
        "scheduled",
        "received",
        "unknown",
    }
)
# Normalized call statuses: Twilio's CallStatus values plus "unknown".
# https://www.twilio.com/docs/voice/api/call-resource#call-status-values
CALL_STATUSES: Final = frozenset(
    {
        "queued",
        "initiated",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "no-answer",
        "canceled",
        "failed",
        "unknown",
    }
)

# Fixed namespace so that ids are stable across processes, hosts and releases.
_ID_NAMESPACE: Final = uuid.UUID("6c1f3f0e-5d2a-4c1b-9a8e-2f4b7c9d0e11")
_NAMESPACE_BYTES: Final = _ID_NAMESPACE.bytes
_CLEAR_VERSION_VARIANT: Final = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_V5_RFC_VARIANT: Final = (0x5000 << 64) | (0x8000 << 48)


def event_id(*parts: str) -> str:
    """Deterministic event id: the same provider fact always gives the same id.

    ``parts`` name the fact (provider, account, kind, SID, status, sequence ...); a provider
    retry or a spool replay of the same callback therefore yields the same id and consumers
    deduplicate on it.
    """
    # uuid.uuid5 by hand (RFC 4122 section 4.3: SHA-1 of namespace + name, first 16 bytes,
    # version 5, RFC variant), without building a UUID object: this runs for every callback.
    # A test holds it equal to uuid.uuid5.
    digest = hashlib.sha1(
        _NAMESPACE_BYTES + "\x1f".join(parts).encode(), usedforsecurity=False
    ).digest()
    value = (int.from_bytes(digest[:16], "big") & _CLEAR_VERSION_VARIANT) | _V5_RFC_VARIANT
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix, second precision unless there are microseconds."""
    if moment.tzinfo is None:
        raise ValueError(f"event time must be timezone-aware, got naive {moment!r}")
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One normalized event. ``data`` holds the normalized fields plus ``raw``."""

    id: str
    kind: str
    tenant: str
    provider: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.kind

    @property
    def routing_key(self) -> str:
        return f"{self.tenant}.{self.provider}.{self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": format_time(self.time),
            "datacontenttype": DATA_CONTENT_TYPE,
            "tenant": self.tenant,
            "provider": self.provider,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, body: bytes | str) -> Event:
        """Parse a structured-mode envelope (raises ValueError naming what is wrong)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"event body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"event body must be a JSON object, got {type(doc).__name__}")
        missing = [
            k
            for k in ("id", "type", "tenant", "provider", "source", "subject", "time")
            if not isinstance(doc.get(k), str)
        ]
        if missing:
            raise ValueError(f"event is missing string attributes: {', '.join(missing)}")
        if doc.get("specversion") != SPEC_VERSION:
            raise ValueError(
                f"expected specversion {SPEC_VERSION!r}, got {doc.get('specversion')!r}"
            )
        event_type: str = doc["type"]
        if not event_type.startswith(TYPE_PREFIX):
            raise ValueError(f"expected a type starting {TYPE_PREFIX!r}, got {event_type!r}")
        data = doc.get("data", {})
        if not isinstance(data, dict):
            raise ValueError(f"event data must be an object, got {type(data).__name__}")
        time = datetime.fromisoformat(doc["time"].replace("Z", "+00:00"))
        return cls(
            id=doc["id"],
            kind=event_type.removeprefix(TYPE_PREFIX),
            tenant=doc["tenant"],
            provider=doc["provider"],
            source=doc["source"],
            subject=doc["subject"],
            time=time,
            data=data,
        )
