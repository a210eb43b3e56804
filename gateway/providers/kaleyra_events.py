"""Normalize verified Kaleyra.io callbacks into hookline events (docs/architecture.md#events).

Pure code: ``normalize`` is a function of the route's kind, the tenant the verifier resolved,
the callback's fields and the receipt time; a spool replay yields the same event, id included.
The data shape of each kind is pinned by ``schemas/jsonschema/<kind>.json`` (provider kaleyra).

Kaleyra lets the customer name the fields: a callback profile body is a template whose
``<variables>`` Kaleyra fills in, and the legacy ``dlrurl`` is a URL with ``{placeholders}``.
``FIELD_ALIASES`` therefore accepts the kaleyra.io variable names, the legacy placeholder names
and the names of hookline's recommended templates (README), case-insensitively. Sources:
- SMS callback statuses Sent/Delivered/Failed/Undelivered:
  https://developers.kaleyra.io/docs/sms-callback
- status and status details ("Delivered"/"DELIVERED"), message ids "<uuid>:<part>":
  https://developers.kaleyra.io/docs/sms-status and https://developers.kaleyra.io/docs/sms-api-status
- status and trace codes (SUBMITTED, ENROUTE, NOT-SENT, SENT - NO DLR, CON-DND, INVALID-SUB, ...):
  https://developers.kaleyra.io/docs/sms-status-and-status-trace-codes
- SMPP-style legacy statuses DELIVRD/UNDELIV/EXPIRED/FAILED:
  https://messaging.kaleyra.com/support/solutions/articles/3000091798-delivery-reports
- incoming SMS variables (source, recipient, ..., timestamp "2025-04-17 18:35:20", parts[n]):
  https://developers.kaleyra.io/docs/create-sms-callback-profile-to-receive-incoming-sms-messages
- SMS callback profiles: https://developers.kaleyra.io/docs/create-callback-profile-for-sms
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from gateway.errors import MalformedPayload
from gateway.providers.request import Params, bounded_count, raw_view
from gateway.tenants import Tenant
from schemas.events import MESSAGE_INCOMING, MESSAGE_STATUS, Event, event_id, format_time

PROVIDER: Final = "kaleyra"
UNKNOWN: Final = "unknown"
CHANNEL: Final = "sms"

# Accepted field name (compared lower-cased) -> canonical name. When several aliases of one
# canonical name are present, the first listed here that has a non-empty value wins.
FIELD_ALIASES: Final[dict[str, str]] = {
    # Message id "<uuid>:<part>". {sid} is the legacy dlrurl placeholder of the message id (not
    # the account SID, which callbacks never carry); {msgid} is a legacy fallback.
    "message_id": "message_id", "id": "message_id", "sid": "message_id", "msgid": "message_id",
    "status": "status",
    "status_details": "status_detail", "status_detail": "status_detail",
    "status_trace": "status_detail",
    "error_code": "error_code",
    "description": "description",
    "to": "to", "mobile": "to", "recipient": "to",
    "from": "from", "sender": "from", "source": "from",
    "message": "body", "body": "body",
    "keyword": "keyword", "operator": "operator", "circle": "circle",
    "units": "segments", "segments": "segments", "parts": "segments", "parts[n]": "segments",
    "credits": "credits",
    "custom": "custom", "custom1": "custom1", "custom2": "custom2",
    "reference": "reference", "kid": "kid",
    # Times: "YYYY-MM-DD HH:MM:SS" in the tenant's zone, or epoch seconds/milliseconds
    # ({sentat}, {delivat}, {submitat} are epoch seconds in the legacy dlrurl).
    "sent_at": "sent_at", "senttime": "sent_at", "sentat": "sent_at",
    "submitted_at": "submitted_at", "submittime": "submitted_at", "submitat": "submitted_at",
    "delivered_at": "delivered_at", "delivered": "delivered_at", "delivat": "delivered_at",
    "timestamp": "received_at", "received_at": "received_at",
}  # fmt: skip

# Kaleyra status (as spelled in its docs) -> normalized status (schemas.events.MESSAGE_STATUSES).
# Looked up case-insensitively, ignoring spaces, "-" and "_" ("NotSent" = "NOT-SENT"). "Sent"
# means handed to the operator, so operator-side states (SUBMITTED, ENROUTE, AWAITED-DLR, SENT -
# NO DLR) are "sent". Never sent by Kaleyra (blocked, DND, opt-out, no credits, ...) is "failed";
# reached the network but not the handset (EXPIRED, invalid subscriber, handset off) is
# "undelivered", as Kaleyra's own "Undelivered" covers a wrong number. Anything else: "unknown".
MESSAGE_STATUS_MAP: Final[dict[str, str]] = {
    "Sent": "sent", "Delivered": "delivered", "Failed": "failed", "Undelivered": "undelivered",
    "NotSent": "failed", "SUBMITTED": "sent", "ENROUTE": "sent", "SENT - NO DLR": "sent",
    "DELIVRD": "delivered", "UNDELIV": "undelivered", "EXPIRED": "undelivered",
    "REJECTD": "failed", "REJECTED": "failed",
    # Statuses of the legacy v4 SMS API (Solutions Infini, now Kaleyra); no public page lists
    # them any more, their meaning follows their names.
    "AWAITED-DLR": "sent", "DND": "failed", "INV-NUMBER": "undelivered",
    # Trace codes (status details) that also arrive as a status.
    "CON-DND": "failed", "BLACKLIST": "failed", "OPT-OUT": "failed", "NOTALLOWED": "failed",
    "NO-CREDITS": "failed", "BLOCKED-COUNTRY": "failed", "KYC-NOT-APPROVED": "failed",
    "TEMPLATE-NOT-FOUND": "failed", "INVALID-SUB": "undelivered", "MOB-OFF": "undelivered",
}  # fmt: skip

_SQUASH: Final = re.compile(r"[\s_-]+")
_STATUS_LOOKUP: Final = {_SQUASH.sub("", k.lower()): v for k, v in MESSAGE_STATUS_MAP.items()}
# Kaleyra ids are a UUID plus ":<part>"; accept any short run of visible ASCII (legacy ids
# differ) and refuse whitespace, control characters and huge values, which would corrupt the
# event subject and id.
_MESSAGE_ID: Final = re.compile(r"[!-~]{1,100}")
_CREDITS: Final = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,12})?")
_LOCAL_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
)
_NUMBERED_PART: Final = re.compile(r"parts\[[0-9]{1,3}\]")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# A builder returns: the message id, what else names the provider fact, the data without "raw".
_Built = tuple[str, tuple[str, ...], dict[str, Any]]


def normalize(kind: str, tenant: Tenant, params: Params, now: datetime) -> Event:
    """Turn one verified Kaleyra callback of ``tenant`` into the event of ``kind``.

    ``now`` is the receipt time and becomes the event time (it must be timezone-aware).
    Raises MalformedPayload when the callback has no usable message id; ValueError for a kind
    this module does not build or a tenant without a Kaleyra account (bugs, not bad requests).
    """
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"cannot build Kaleyra {kind!r} events; known: {sorted(_BUILDERS)}")
    if now.tzinfo is None:
        raise ValueError(f"receipt time must be timezone-aware, got naive {now!r}")
    account = tenant.kaleyra
    if account is None:
        raise ValueError(f"tenant {tenant.id!r} has no Kaleyra account")
    fields = canonical_fields(params)
    message_id, fact, data = builder(fields, params, ZoneInfo(account.timezone), kind)
    data["kaleyra_sid"] = account.sid
    data["raw"] = raw_view(params)
    # The receipt time is deliberately not part of the id: a retry is the same fact.
    return Event(
        id=event_id(PROVIDER, account.sid, kind, message_id, *fact),
        kind=kind,
        tenant=tenant.id,
        provider=PROVIDER,
        source=f"{PROVIDER}/{account.sid}",
        subject=message_id,
        time=now,
        data=data,
    )


def canonical_fields(params: Params) -> dict[str, str]:
    """Canonical name -> first value of the highest-priority alias present and non-blank."""
    by_name: dict[str, list[str]] = {}
    for name, values in params.items():
        by_name.setdefault(name.strip().lower(), values)
    fields: dict[str, str] = {}
    for alias, canonical in FIELD_ALIASES.items():
        found = by_name.get(alias)
        if canonical not in fields and found and found[0].strip():
            fields[canonical] = found[0]
    return fields


def map_status(value: str | None) -> str:
    """The normalized status of a Kaleyra status or status detail ("unknown" if not known)."""
    return _STATUS_LOOKUP.get(_squash(value), UNKNOWN) if value else UNKNOWN


def _message_status(fields: dict[str, str], params: Params, zone: ZoneInfo, kind: str) -> _Built:
    message_id = _message_id(fields, kind)
    status_value, detail = _opt(fields, "status"), _opt(fields, "status_detail")
    status = map_status(status_value)
    if status == UNKNOWN:  # e.g. no status, only the detail "DELIVERED"
        status = map_status(detail)
    error_code = _opt(fields, "error_code")
    # Failed or undelivered with a detail other than the status: the trace code says why
    # (CON-DND, INVALID-SUB, ...).
    if (
        error_code is None
        and detail is not None
        and status in ("failed", "undelivered")
        and _squash(detail) != _squash(status_value)
    ):
        error_code = detail
    data = {
        "message_id": message_id,
        "status": status,
        "provider_status": status_value or detail,
        "to": _opt(fields, "to"),
        "from": _opt(fields, "from"),
        "channel": CHANNEL,
        "segments": _segments(fields, params),
        "credits": _credits(fields),
        "sent_at": _time(fields.get("sent_at"), zone),
        "submitted_at": _time(fields.get("submitted_at"), zone),
        "delivered_at": _time(fields.get("delivered_at"), zone),
        "error_code": error_code,
        "description": _opt(fields, "description"),
        "custom": {name: fields.get(name) for name in ("custom", "custom1", "custom2")},
    }
    # Kaleyra reports each state of a message once and a retry resends it unchanged, so the
    # message id and its state name the fact; the provider's own spelling and detail are part
    # of it because Sent -> Delivered, or a legacy DELIVRD after a kaleyra.io Delivered, is news.
    return message_id, (status, _squash(status_value), _squash(detail)), data


def _message_incoming(fields: dict[str, str], params: Params, zone: ZoneInfo, kind: str) -> _Built:
    message_id = _message_id(fields, kind)
    data = {
        "message_id": message_id,
        # Kaleyra's own status of an incoming message (its sample says "SENT") describes its
        # side of the delivery; for the tenant the fact is that the message was received.
        "status": "received",
        "provider_status": _opt(fields, "status") or _opt(fields, "status_detail"),
        "from": _opt(fields, "from"),
        "to": _opt(fields, "to"),
        "body": fields.get("body", ""),
        "keyword": _opt(fields, "keyword"),
        "channel": CHANNEL,
        "segments": _segments(fields, params),
        "operator": _opt(fields, "operator"),
        "circle": _opt(fields, "circle"),
        "received_at": _time(fields.get("received_at"), zone),
    }
    # A message arrives once: a retry carries the same id.
    return message_id, (), data


_BUILDERS: Final[dict[str, Callable[[dict[str, str], Params, ZoneInfo, str], _Built]]] = {
    MESSAGE_STATUS: _message_status,
    MESSAGE_INCOMING: _message_incoming,
}


def _message_id(fields: dict[str, str], kind: str) -> str:
    value = fields.get("message_id")
    if value is None:
        names = ", ".join(a for a, c in FIELD_ALIASES.items() if c == "message_id")
        raise MalformedPayload(f"{kind} callback is missing the message id (one of: {names})")
    value = value.strip()
    if _MESSAGE_ID.fullmatch(value) is None:
        raise MalformedPayload(
            f"{kind} callback: the message id is not a Kaleyra message id: {value[:40]!r}"
        )
    return value


def _opt(fields: dict[str, str], name: str) -> str | None:
    """A field without surrounding whitespace; absent and blank both become None."""
    value = fields.get(name)
    return (value.strip() or None) if value is not None else None


def _squash(value: str | None) -> str:
    return _SQUASH.sub("", value.lower()) if value else ""


def _segments(fields: dict[str, str], params: Params) -> int | None:
    """units/parts as a count; else the number of numbered parts[1], parts[2] ... fields."""
    raw = fields.get("segments")
    count = bounded_count(raw.strip() if raw else None, "segments", "segments")
    if count is None:
        names = {name.strip().lower() for name in params}
        count = sum(1 for name in names if _NUMBERED_PART.fullmatch(name)) or None
    return count


def _credits(fields: dict[str, str]) -> str | None:
    """Credits charged, as the decimal string Kaleyra sent ("2.0000"); None if not a decimal."""
    value = _opt(fields, "credits")
    return value if value is not None and _CREDITS.fullmatch(value) else None


def _time(value: str | None, zone: ZoneInfo) -> str | None:
    """RFC 3339 UTC of a Kaleyra time, or None when absent or not a time (raw keeps it).

    "YYYY-MM-DD HH:MM:SS" without a zone is in the tenant's zone; an explicit offset or Z is
    honoured; 10 digits are epoch seconds, 13 digits epoch milliseconds; anything else (a
    "1" flag, a date alone) is not a time.
    """
    text = value.strip() if value else ""
    try:
        if text.isascii() and text.isdigit() and len(text) in (10, 13):
            unit = timedelta(seconds=1) if len(text) == 10 else timedelta(milliseconds=1)
            return format_time(_EPOCH + int(text) * unit)
        if _LOCAL_TIME.fullmatch(text) is None:
            return None
        moment = datetime.fromisoformat(text)
        return format_time(moment if moment.tzinfo else moment.replace(tzinfo=zone))
    except (ValueError, OverflowError):  # month 13, an offset past year 1 or 9999 ...
        return None
