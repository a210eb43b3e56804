"""Where a call is in its flow, carried in the step URL and sealed with hookline's own HMAC.

The gateway keeps no state per call: Twilio calls each step URL back, and the URL says which
tenant, flow, step and gather attempt it is, plus the command's variables. Twilio's signature
covers the URL too, but anyone holding the tenant's auth token can produce that one; this seal
is keyed by hookline's ``[gateway] flow_secret`` (per tenant by derivation), so neither a caller
nor a tenant can jump to a step of their choosing, replay another tenant's flow, or reuse a
position after it expires.

Bound to one call. Twilio's signature does not stop a tenant from replaying a position (its
own, or one seen in a URL) on another CallSid, its own token signs any CallSid; so a position
carries the CallSid of its call (``call_sid``) and is refused (403 ``flow_position_invalid``)
on a request of another CallSid. The rule, since a placed call's first URL is sealed before
Twilio assigns its CallSid (``BotCommands._place``):

* a position without a CallSid is valid only as the entry (phase ``enter``) of its flow's
  ``start`` step, the first request of a call;
* every position the gateway seals from a request on (the next step, a gather's action)
  carries that request's CallSid, so from the second request on the call is pinned;
* an incoming call handed to a flow by a routing rule knows its CallSid already: its first
  position is bound from the start (``workers.twiml_worker``).

Token: ``base64url(payload) "." base64url(HMAC-SHA256(key, payload)[:16])``, the payload a
compact JSON object. The variables are readable by whoever sees the URL (Twilio's call logs
keep it): pass references rather than sensitive data where that matters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from gateway.errors import AuthenticationFailed
from gateway.secrets import Secret

Phase = Literal["enter", "input"]
#: A position is good this long after it was issued: Twilio ends a call after 4 hours unless
#: told otherwise (https://www.twilio.com/docs/voice/api/call-resource, TimeLimit).
DEFAULT_LIFETIME_S: Final = 4 * 3600 + 600
_TAG_BYTES: Final = 16
_REASON: Final = "flow_position_invalid"


@dataclass(frozen=True, slots=True)
class Position:
    tenant: str
    flow: str
    step: str
    request_id: str
    issued_at: int  # Unix seconds
    phase: Phase = "enter"
    attempt: int = 1
    variables: Mapping[str, str] = field(default_factory=dict)
    #: The CallSid of the call this position belongs to; "" only for the first request of a
    #: placed call (sealed before Twilio named the call).
    call_sid: str = ""

    def at(self, step: str, phase: Phase = "enter", attempt: int = 1) -> Position:
        """The same call at another step."""
        return Position(
            self.tenant,
            self.flow,
            step,
            self.request_id,
            self.issued_at,
            phase,
            attempt,
            self.variables,
            self.call_sid,
        )

    def on_call(self, call_sid: str) -> Position:
        """The same position, bound to the call ``call_sid``."""
        return Position(
            self.tenant,
            self.flow,
            self.step,
            self.request_id,
            self.issued_at,
            self.phase,
            self.attempt,
            self.variables,
            call_sid,
        )


def require_call(position: Position, call_sid: str, start_step: str) -> None:
    """AuthenticationFailed (403) unless ``position`` may serve a request of ``call_sid``:
    bound to that call, or unbound and the entry of its flow's start step."""
    if position.call_sid:
        if not hmac.compare_digest(position.call_sid.encode(), call_sid.encode()):
            raise _invalid(
                f"belongs to call {position.call_sid!r}, requested for call {call_sid!r}"
            )
        return
    if (position.step, position.phase) != (start_step, "enter"):
        raise _invalid(
            f"at step {position.step!r} ({position.phase}) is bound to no call; "
            f"only the entry of the start step {start_step!r} may be"
        )


class PositionSeal:
    """Seals and opens positions with a key derived per tenant from the gateway's secret."""

    def __init__(self, secret: Secret, *, lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        self._secret = secret.reveal().encode()
        self._lifetime_s = lifetime_s
        self._keys: dict[str, bytes] = {}

    def _key(self, tenant: str) -> bytes:
        key = self._keys.get(tenant)
        if key is None:
            key = hmac.new(
                self._secret, b"hookline-flow\x1f" + tenant.encode(), hashlib.sha256
            ).digest()
            self._keys[tenant] = key
        return key

    def seal(self, position: Position) -> str:
        payload = orjson.dumps(
            {
                "t": position.tenant,
                "f": position.flow,
                "s": position.step,
                "r": position.request_id,
                "i": position.issued_at,
                "p": position.phase,
                "a": position.attempt,
                "v": dict(position.variables),
                "c": position.call_sid,
            }
        )
        tag = hmac.new(self._key(position.tenant), payload, hashlib.sha256).digest()[:_TAG_BYTES]
        return f"{_b64(payload)}.{_b64(tag)}"

    def open(self, token: str, *, tenant: str, now: int) -> Position:
        """The position in ``token``, sealed for ``tenant`` and not expired at ``now``.

        Raises AuthenticationFailed (403) naming what is wrong, never the expected tag.
        """
        body, dot, tag_text = token.partition(".")
        try:
            payload, tag = _unb64(body), _unb64(tag_text)
        except ValueError:
            raise _invalid("is not two base64url parts") from None
        if not dot or len(tag) != _TAG_BYTES:
            raise _invalid(f"expected a {_TAG_BYTES}-byte tag after a dot")
        expected = hmac.new(self._key(tenant), payload, hashlib.sha256).digest()[:_TAG_BYTES]
        if not hmac.compare_digest(expected, tag):
            raise _invalid(
                f"seal does not match for tenant {tenant!r} (tampered, or made "
                "for another tenant or with another flow_secret)"
            )
        position = _decode(payload)
        if position.tenant != tenant:  # same key would need an HMAC collision; checked anyway
            raise _invalid(f"sealed for tenant {position.tenant!r}, called for {tenant!r}")
        if not position.issued_at <= now + 60 or now - position.issued_at > self._lifetime_s:
            raise _invalid(
                f"issued at {position.issued_at}, outside its {self._lifetime_s} s "
                f"lifetime at {now}"
            )
        return position


def _decode(payload: bytes) -> Position:
    try:
        doc = orjson.loads(payload)
        variables = doc["v"]
        if not (
            isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())
        ):
            raise TypeError("variables")
        fields = (doc["t"], doc["f"], doc["s"], doc["r"], doc.get("c", ""))
        if not all(isinstance(f, str) for f in fields) or doc["p"] not in ("enter", "input"):
            raise TypeError("fields")
        if not (isinstance(doc["i"], int) and isinstance(doc["a"], int) and doc["a"] >= 1):
            raise TypeError("numbers")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _invalid(f"sealed payload is malformed ({exc})") from None
    return Position(
        doc["t"],
        doc["f"],
        doc["s"],
        doc["r"],
        doc["i"],
        doc["p"],
        doc["a"],
        variables,
        doc.get("c", ""),
    )


def _invalid(why: str) -> AuthenticationFailed:
    return AuthenticationFailed(f"flow position {why}", reason=_REASON)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not ASCII")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None
