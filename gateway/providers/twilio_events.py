"""Normalize verified Twilio callbacks into hookline events (contract: docs/architecture.md#events).

Pure code: ``normalize`` is a function of the route's kind, the tenant the verifier resolved,
the callback's parameters and the receipt time. It reads no clock and does no I/O, so a spool
replay of the same callback yields the same event, id included. The data shape of each kind
is pinned by ``schemas/jsonschema/<kind>.json``. Twilio's parameter references:
- messages: https://www.twilio.com/docs/messaging/guides/webhook-request and
  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status
- calls: https://www.twilio.com/docs/voice/twiml#request-parameters and
  https://www.twilio.com/docs/voice/api/call-resource#statuscallback
- recordings: https://www.twilio.com/docs/voice/api/recording#recordingstatuscallback
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from operator import itemgetter
from typing import Any, Final

from gateway.errors import MalformedPayload
from gateway.providers.request import Params, bounded_count, first, raw_view
from gateway.tenants import Tenant
from schemas.events import (
    CALL_INCOMING,
    CALL_STATUS,
    CALL_STATUSES,
    MESSAGE_INCOMING,
    MESSAGE_STATUS,
    Event,
    event_id,
    format_time,
)

PROVIDER: Final = "twilio"
UNKNOWN: Final = "unknown"

# Twilio message status (lower-cased) -> normalized status (schemas.events.MESSAGE_STATUSES).
# Twilio's values: https://www.twilio.com/docs/messaging/api/message-resource#message-status-values
# Transitional states fold into the state they lead to ("sending" is still on Twilio's side, like
# "queued"; "receiving" ends in "received"); "partially_delivered" (some MMS/RCS parts failed) is
# reported as "undelivered" so that metering and alerting treat it as a failure to deliver.
# Anything not listed becomes "unknown"; ``provider_status`` always keeps Twilio's own value.
MESSAGE_STATUS_MAP: Final[dict[str, str]] = {
    "accepted": "accepted",
    "scheduled": "scheduled",
    "canceled": "canceled",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "undelivered",
    "partially_delivered": "undelivered",
    "receiving": "received",
    "received": "received",
}
# Twilio's CallStatus values are already the normalized ones; anything else is "unknown".
# https://www.twilio.com/docs/voice/api/call-resource#call-status-values
CALL_STATUS_MAP: Final[dict[str, str]] = {s: s for s in CALL_STATUSES if s != UNKNOWN}

# Address prefixes Twilio uses for non-SMS channels ("whatsapp:+1415...", "messenger:123",
# "rcs:brand_agent"); an unknown prefix gives channel "unknown" rather than a wrong "sms".
# https://www.twilio.com/docs/whatsapp/api#using-twilio-phone-numbers-with-whatsapp
CHANNEL_PREFIXES: Final = {"whatsapp": "whatsapp", "messenger": "messenger", "rcs": "rcs"}

# Message SIDs arrive as MessageSid; older integrations and some callbacks only carry the
# legacy SmsSid / SmsMessageSid, which hold the same value.
MESSAGE_SID_PARAMS: Final = ("MessageSid", "SmsSid", "SmsMessageSid")
CALL_SID_PARAMS: Final = ("CallSid",)
ACCOUNT_SID_PARAMS: Final = ("AccountSid",)

# Twilio SIDs are two letters and 32 hex digits; accept any short run of visible ASCII so test
# accounts still work, but refuse whitespace, control characters and huge values, which would
# corrupt the event source, subject and routing.
_SID: Final = re.compile(r"[!-~]{1,64}")
# A longer run of digits cannot be a count or a duration Twilio sends, and 18 digits always fit
# the signed 64-bit integers JSON encoders (orjson) and consumers handle.
_MAX_INT_DIGITS: Final = 18
# RFC 2822 dates are about 31 characters; refuse to parse anything much longer.
_MAX_DATE_CHARS: Final = 64

# A builder returns: the SID, what else names the provider fact, the data without "raw".
_Built = tuple[str, tuple[str, ...], dict[str, Any]]


def normalize(kind: str, tenant: Tenant, params: Params, now: datetime) -> Event:
    """Turn one verified Twilio callback into the event of ``kind``.

    ``now`` is the receipt time and becomes the event time (it must be timezone-aware).
    Raises MalformedPayload when the callback lacks its SID or AccountSid; raises ValueError for
    a kind this module does not build (a bug in the route table, not in the request).
    """
    builder = _BUILDERS.get(kind)
    if builder is None:
        raise ValueError(f"cannot build Twilio {kind!r} events; known: {sorted(_BUILDERS)}")
    if now.tzinfo is None:
        raise ValueError(f"receipt time must be timezone-aware, got naive {now!r}")
    account = _sid(params, ACCOUNT_SID_PARAMS, kind)
    sid, fact, data = builder(params, account, kind)
    data["raw"] = raw_view(params)
    # The receipt time is deliberately not part of the id: a retry is the same fact.
    return Event(
        id=event_id(PROVIDER, account, kind, sid, *fact),
        kind=kind,
        tenant=tenant.id,
        provider=PROVIDER,
        source=f"{PROVIDER}/{account}",
        subject=sid,
        time=now,
        data=data,
    )


def _message_status(params: Params, account: str, kind: str) -> _Built:
    sid = _sid(params, MESSAGE_SID_PARAMS, kind)
    # SmsStatus is the legacy twin of MessageStatus; both carry the same value when present.
    provider_status = _opt(params, "MessageStatus") or _opt(params, "SmsStatus")
    folded, status = _fold(provider_status, MESSAGE_STATUS_MAP)
    error_code = _opt(params, "ErrorCode")
    data = {
        "message_sid": sid,
        "account_sid": account,
        "status": status,
        "provider_status": provider_status,
        "from": _opt(params, "From"),
        "to": _opt(params, "To"),
        "channel": _channel(params, sid),
        "error_code": error_code,
        "segments": _count(params, "NumSegments", "segments"),
        "messaging_service_sid": _opt(params, "MessagingServiceSid"),
    }
    # Twilio posts one callback per status transition of a message, and retries resend it
    # unchanged: (SID, status) names the fact. The error code is part of it because a later
    # "failed"/"undelivered" report with another error (carrier DLR vs Twilio) is news.
    return sid, (folded, error_code or ""), data


def _message_incoming(params: Params, account: str, kind: str) -> _Built:
    sid = _sid(params, MESSAGE_SID_PARAMS, kind)
    provider_status = _opt(params, "SmsStatus") or _opt(params, "MessageStatus")
    data = {
        "message_sid": sid,
        "account_sid": account,
        "status": _fold(provider_status, MESSAGE_STATUS_MAP)[1],
        "provider_status": provider_status,
        "from": _opt(params, "From"),
        "to": _opt(params, "To"),
        "body": first(params, "Body", ""),
        "channel": _channel(params, sid),
        "num_media": _count(params, "NumMedia", "num_media"),
        "media": _media(params),
        "segments": _count(params, "NumSegments", "segments"),
        "messaging_service_sid": _opt(params, "MessagingServiceSid"),
    }
    # A message arrives once: a retry or the fallback URL carries the same MessageSid.
    return sid, (), data


def _call_status(params: Params, account: str, kind: str) -> _Built:
    sid = _sid(params, CALL_SID_PARAMS, kind)
    provider_status = _opt(params, "CallStatus")
    folded, status = _fold(provider_status, CALL_STATUS_MAP)
    recording = _recording(params)
    data = {
        "call_sid": sid,
        "account_sid": account,
        "status": status,
        "provider_status": provider_status,
        "direction": _opt(params, "Direction"),
        "from": _opt(params, "From"),
        "to": _opt(params, "To"),
        # CallDuration is in seconds; Twilio's "Duration" is billed minutes (stays in raw).
        "duration_s": _count(params, "CallDuration", "duration_s"),
        "sequence_number": _count(params, "SequenceNumber", "sequence_number"),
        "answered_by": _opt(params, "AnsweredBy"),
        "timestamp": _rfc2822_to_rfc3339(first(params, "Timestamp")),
        "recording": recording,
    }
    # A call's status callbacks are numbered by SequenceNumber and a retry resends the same
    # number, so (SID, status, sequence) names one callback; the status still counts when the
    # number is absent (plain StatusCallback sends only "completed"). Recording status
    # callbacks carry no CallStatus: a call can have several recordings, each reported as
    # in-progress, then completed/absent/failed, so (RecordingSid, RecordingStatus) joins in.
    rec_sid = recording["sid"] if recording else ""
    rec_status = (recording["status"] or "").strip().lower() if recording else ""
    sequence = first(params, "SequenceNumber") or ""
    return sid, (folded, sequence, rec_sid, rec_status), data


def _call_incoming(params: Params, account: str, kind: str) -> _Built:
    sid = _sid(params, CALL_SID_PARAMS, kind)
    provider_status = _opt(params, "CallStatus")
    data = {
        "call_sid": sid,
        "account_sid": account,
        "status": _fold(provider_status, CALL_STATUS_MAP)[1],
        "provider_status": provider_status,
        "direction": _opt(params, "Direction"),
        "from": _opt(params, "From"),
        "to": _opt(params, "To"),
        "caller_name": _opt(params, "CallerName"),
        "forwarded_from": _opt(params, "ForwardedFrom"),
    }
    # One incoming call is one fact: the fallback URL or a <Redirect> back to the voice URL
    # re-requests TwiML for the same CallSid, which must not look like a second call.
    return sid, (), data


_BUILDERS: Final[dict[str, Callable[[Params, str, str], _Built]]] = {
    MESSAGE_STATUS: _message_status,
    MESSAGE_INCOMING: _message_incoming,
    CALL_STATUS: _call_status,
    CALL_INCOMING: _call_incoming,
}


def _sid(params: Params, names: tuple[str, ...], kind: str) -> str:
    """The first non-empty of ``names``; MalformedPayload if none, or if it is not SID-like."""
    for name in names:
        value = first(params, name)
        if value:
            if _SID.fullmatch(value) is None:
                raise MalformedPayload(
                    f"{kind} callback: {name} is not a Twilio SID: {value[:40]!r}"
                )
            return value
    wanted = " or ".join(names)
    raise MalformedPayload(f"{kind} callback is missing the {wanted} parameter")


def _opt(params: Params, name: str) -> str | None:
    """The first value of an optional parameter; absent and empty both become None."""
    values = params.get(name)
    return (values[0] or None) if values else None


def _count(params: Params, name: str, field: str) -> int | None:
    """A numeric parameter within its bound (gateway.providers.request.FIELD_MAXIMUMS)."""
    return bounded_count(first(params, name), field, name)


def _fold(provider_status: str | None, table: dict[str, str]) -> tuple[str, str]:
    """(case-folded provider status for the id, normalized status)."""
    if provider_status is None:
        return "", UNKNOWN
    folded = provider_status.strip().lower()
    return folded, table.get(folded, UNKNOWN)


def _channel(params: Params, sid: str) -> str:
    """sms, mms, whatsapp, messenger, rcs, or unknown for an address prefix not known yet."""
    # WhatsApp status callbacks name the channel outright (ChannelPrefix=whatsapp).
    prefix = first(params, "ChannelPrefix")
    if prefix and prefix.lower() in CHANNEL_PREFIXES:
        return CHANNEL_PREFIXES[prefix.lower()]
    for name in ("From", "To"):
        address = first(params, name)
        if address:
            head, colon, _ = address.partition(":")
            if colon:  # phone numbers and short codes never contain a colon
                return CHANNEL_PREFIXES.get(head.strip().lower(), UNKNOWN)
    # MMS: media attached, or Twilio's "MM" SID prefix (status callbacks carry no NumMedia).
    if (_count(params, "NumMedia", "num_media") or 0) > 0 or sid.startswith("MM"):
        return "mms"
    return "sms"


def _media(params: Params) -> list[dict[str, str | None]]:
    """Every MediaUrl<N> present, in index order, with its MediaContentType<N> (or None).

    Decision: all present indices, not only those below NumMedia. Twilio sends exactly NumMedia
    of them, so the two agree on real callbacks; when NumMedia is junk (and becomes null) the
    URLs Twilio did send are still listed instead of silently dropped.
    """
    found: list[tuple[int, str, str | None]] = []
    for key, values in params.items():
        if key.startswith("MediaUrl"):
            index = key[8:]
            if index and len(index) <= _MAX_INT_DIGITS and index.isascii() and index.isdigit():
                found.append((int(index), values[0], _opt(params, "MediaContentType" + index)))
    found.sort(key=itemgetter(0))  # stable: equal indices ("1", "01") keep arrival order
    return [{"url": url, "content_type": content_type} for _, url, content_type in found]


def _recording(params: Params) -> dict[str, Any] | None:
    """The recording a recording status callback reports (it shares the call status route)."""
    sid = _opt(params, "RecordingSid")
    if sid is None:
        return None
    return {
        "sid": sid,
        "url": _opt(params, "RecordingUrl"),
        "status": _opt(params, "RecordingStatus"),
        "duration_s": _count(params, "RecordingDuration", "duration_s"),
    }


def _rfc2822_to_rfc3339(value: str | None) -> str | None:
    """Twilio's Timestamp ("Mon, 23 Nov 2026 08:00:00 +0000") as RFC 3339 UTC, else None."""
    if not value or len(value) > _MAX_DATE_CHARS:
        return None
    try:
        moment = parsedate_to_datetime(value)
        if moment.tzinfo is None:  # "-0000": UTC, local offset unknown (RFC 2822 section 3.3)
            moment = moment.replace(tzinfo=UTC)
        return format_time(moment)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
