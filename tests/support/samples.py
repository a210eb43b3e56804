"""Realistic Twilio callbacks (parameters as Twilio posts them), one builder per route.

Shapes follow https://www.twilio.com/docs/messaging/guides/webhook-request,
https://www.twilio.com/docs/messaging/guides/track-outbound-message-status and
https://www.twilio.com/docs/voice/twiml#request-parameters.
"""

from __future__ import annotations

from typing import Final

CALLER: Final = "+14158675309"
CALLED: Final = "+18005551212"


def sid(prefix: str, n: int) -> str:
    """A well-formed Twilio SID: two letters and 32 hex digits."""
    return f"{prefix}{n:032x}"


def message_status(account: str, n: int = 1, status: str = "delivered") -> dict[str, str]:
    return {
        "AccountSid": account,
        "ApiVersion": "2010-04-01",
        "MessageSid": sid("SM", n),
        "SmsSid": sid("SM", n),
        "MessageStatus": status,
        "SmsStatus": status,
        "From": CALLED,
        "To": CALLER,
        "NumSegments": "1",
    }


def message_incoming(
    account: str, n: int = 1, body: str = "Is my prescription ready?"
) -> dict[str, str]:
    return {
        "AccountSid": account,
        "ApiVersion": "2010-04-01",
        "MessageSid": sid("SM", n),
        "SmsMessageSid": sid("SM", n),
        "SmsSid": sid("SM", n),
        "SmsStatus": "received",
        "Body": body,
        "From": CALLER,
        "To": CALLED,
        "NumMedia": "0",
        "NumSegments": "1",
        "FromCountry": "US",
        "ToCountry": "US",
    }


def call_incoming(account: str, n: int = 1) -> dict[str, str]:
    return {
        "AccountSid": account,
        "ApiVersion": "2010-04-01",
        "CallSid": sid("CA", n),
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": CALLER,
        "To": CALLED,
        "Caller": CALLER,
        "Called": CALLED,
        "CallerCountry": "US",
    }


def call_status(
    account: str, n: int = 1, status: str = "completed", seq: int = 3
) -> dict[str, str]:
    return {
        "AccountSid": account,
        "ApiVersion": "2010-04-01",
        "CallSid": sid("CA", n),
        "CallStatus": status,
        "Direction": "inbound",
        "From": CALLER,
        "To": CALLED,
        "CallDuration": "42",
        "SequenceNumber": str(seq),
        "Timestamp": "Mon, 23 Nov 2026 08:00:00 +0000",
        "CallbackSource": "call-progress-events",
    }


# Route, event kind, sample builder: the four Twilio callbacks of docs/architecture.md#twilio.
ROUTES: Final = (
    ("/twilio/voice", "call.incoming", call_incoming),
    ("/twilio/voice/status", "call.status", call_status),
    ("/twilio/messaging", "message.incoming", message_incoming),
    ("/twilio/messaging/status", "message.status", message_status),
)
