"""Send a Twilio-signed sample callback to a running hookline, as Twilio would.

    python examples/send_callback.py [--url http://127.0.0.1:8080] [--kind message.status]

The signature is made with the official twilio package (RequestValidator) and the demo
tenant's token from examples/hookline.toml, over the exact URL posted to.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import urllib.error
import urllib.request
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

DEMO_ACCOUNT_SID = "AC00000000000000000000000000000001"
# The literal demo value of examples/hookline.toml, not a credential.
DEMO_AUTH_TOKEN = "demo-token-not-secret"  # noqa: S105

PATHS = {
    "message.status": "/twilio/messaging/status",
    "message.incoming": "/twilio/messaging",
    "call.status": "/twilio/voice/status",
    "call.incoming": "/twilio/voice",
}


def sample(kind: str) -> dict[str, str]:
    sid = secrets.token_hex(16)
    common = {
        "AccountSid": DEMO_ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": "+14158675309",
        "To": "+18005551212",
    }
    if kind == "message.status":
        return {
            **common,
            "MessageSid": "SM" + sid,
            "MessageStatus": "delivered",
            "NumSegments": "1",
        }
    if kind == "message.incoming":
        return {
            **common,
            "MessageSid": "SM" + sid,
            "Body": "Is my prescription ready?",
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
        }
    if kind == "call.status":
        return {
            **common,
            "CallSid": "CA" + sid,
            "CallStatus": "completed",
            "CallDuration": "42",
            "SequenceNumber": "3",
            "Direction": "inbound",
        }
    return {**common, "CallSid": "CA" + sid, "CallStatus": "ringing", "Direction": "inbound"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="hookline's public base URL")
    parser.add_argument("--kind", choices=sorted(PATHS), default="message.status")
    args = parser.parse_args()
    url = args.url.rstrip("/") + PATHS[args.kind]
    params = sample(args.kind)
    signature = RequestValidator(DEMO_AUTH_TOKEN).compute_signature(url, params)
    request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own gateway
        url,
        data=urlencode(params).encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            print(response.status, response.read().decode() or "(empty body)")
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read().decode(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
