"""Where a call is in its flow, carried in the step URL and sealed with hookline's own HMAC.

The gateway keeps no state per call: Twilio calls each step URL back, and the URL says which
tenant, flow, step and gather attempt it is, plus the command's variables. Twilio's signature
covers the URL too, but anyone holding the tenant's auth token can produce that one; this seal
is keyed by hookline's ``[gateway] flow_secret`` (per tenant by derivation), so neither a caller
nor a tenant can jump to a step of their choosing, replay another tenant's flow, or reuse a
position after it expires.

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

    def at(self, step: str, phase: Phase = "enter", attempt: int = 1) -> Position:
        """The same call at another step."""
        return Position(self.tenant, self.flow, step, self.request_id, self.issued_at, phase,
                        attempt, self.variables)


class PositionSeal:
    """Seals and opens positions with a key derived per tenant from the gateway's secret."""

    def __init__(self, secret: Secret, *, lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        self._secret = secret.reveal().encode()
        self._lifetime_s = lifetime_s
        self._keys: dict[str, bytes] = {}

    def _key(self, tenant: str) -> bytes:
        key = self._keys.get(tenant)
        if key is None:
            key = hmac.new(self._secret, b"hookline-flow\x1f" + tenant.encode(),
                           hashlib.sha256).digest()
            self._keys[tenant] = key
        return key

    def seal(self, position: Position) -> str:
        payload = orjson.dumps({
            "t": position.tenant, "f": position.flow, "s": position.step,
            "r": position.request_id, "i": position.issued_at, "p": position.phase,
            "a": position.attempt, "v": dict(position.variables),
        })
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
            raise _invalid(f"seal does not match for tenant {tenant!r} (tampered, or made "
                           "for another tenant or with another flow_secret)")
        position = _decode(payload)
        if position.tenant != tenant:  # same key would need an HMAC collision; checked anyway
            raise _invalid(f"sealed for tenant {position.tenant!r}, called for {tenant!r}")
        if not position.issued_at <= now + 60 or now - position.issued_at > self._lifetime_s:
            raise _invalid(f"issued at {position.issued_at}, outside its {self._lifetime_s} s "
                           f"lifetime at {now}")
        return position


def _decode(payload: bytes) -> Position:
    try:
        doc = orjson.loads(payload)
        variables = doc["v"]
        if not (isinstance(variables, dict)
                and all(isinstance(v, str) for v in variables.values())):
            raise TypeError("variables")
        fields = (doc["t"], doc["f"], doc["s"], doc["r"])
        if not all(isinstance(f, str) for f in fields) or doc["p"] not in ("enter", "input"):
            raise TypeError("fields")
        if not (isinstance(doc["i"], int) and isinstance(doc["a"], int) and doc["a"] >= 1):
            raise TypeError("numbers")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise _invalid(f"sealed payload is malformed ({exc})") from None
    return Position(doc["t"], doc["f"], doc["s"], doc["r"], doc["i"], doc["p"], doc["a"],
                    variables)


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
