"""The bench's tenants and its signed Twilio message-status callbacks."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from benchmarks.common import SIGNED_URL, STATUS_PATH, TENANTS, BenchError
from tests.support.samples import message_status, sid


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    account_sid: str
    token: str


def make_tenants() -> list[Tenant]:
    return [
        Tenant(f"bench-{i}", "AC" + secrets.token_hex(16), secrets.token_hex(16))
        for i in range(TENANTS)
    ]


def write_config(path: Path, tenants: Sequence[Tenant]) -> None:
    lines = ["# written by benchmarks/ingress.py; deleted after the run", ""]
    for tenant in tenants:
        lines += [
            "[[tenants]]",
            f'id = "{tenant.id}"',
            "",
            "[tenants.twilio]",
            f'account_sid = "{tenant.account_sid}"',
            f'auth_token = "{tenant.token}"',
            "",
        ]
    path.write_text("\n".join(lines))


class CallbackFactory:
    """Signed message-status callbacks, number n for tenant n % 10, MessageSid SM<n as hex>.

    Only the two SIDs change between callbacks of one tenant, so the body and the string Twilio
    signs are templates split at the SID; each callback costs one HMAC-SHA1 from a precomputed
    key state. ``check`` holds the result to twilio's own RequestValidator.
    """

    _MARK = sid("SM", 0)

    def __init__(self, tenants: Sequence[Tenant], nonce: str) -> None:
        self.tenants = list(tenants)
        self.nonce = nonce
        self._keys = [hmac.new(t.token.encode(), digestmod=hashlib.sha1) for t in tenants]
        self._signed: list[list[str]] = []
        self._body: list[list[str]] = []
        for tenant in tenants:
            params = message_status(tenant.account_sid, 0)
            signed = SIGNED_URL + "".join(name + params[name] for name in sorted(params))
            body = urlencode(params)
            if signed.count(self._MARK) != 2 or body.count(self._MARK) != 2:
                raise BenchError("callback template: expected the MessageSid and SmsSid once each")
            self._signed.append(signed.split(self._MARK))
            self._body.append(body.split(self._MARK))

    def params(self, n: int) -> dict[str, str]:
        return message_status(self.tenants[n % TENANTS].account_sid, n)

    def token(self, n: int) -> str:
        return f"{self.nonce}-{n}"

    def line(self, n: int) -> str:
        """``id signature idempotency-token body`` for the wrk script."""
        t = n % TENANTS
        message_sid = sid("SM", n)
        mac = self._keys[t].copy()
        mac.update(message_sid.join(self._signed[t]).encode())
        signature = base64.b64encode(mac.digest()).decode()
        return f"{n} {signature} {self.token(n)} {message_sid.join(self._body[t])}\n"

    def check(self, numbers: Sequence[int], public_url: str) -> None:
        """Fast signatures == the official ones, and RequestValidator accepts them at the URL the
        targets validate (with the port)."""
        for n in numbers:
            tenant = self.tenants[n % TENANTS]
            params = self.params(n)
            validator = RequestValidator(tenant.token)
            _id, signature, _token, body = self.line(n).split()
            official = validator.compute_signature(SIGNED_URL, params)
            if signature != official:
                raise BenchError(f"callback {n}: fast signature {signature} != official {official}")
            if body != urlencode(params):
                raise BenchError(f"callback {n}: templated body differs from urlencode(params)")
            if not validator.validate(public_url + STATUS_PATH, params, signature):
                raise BenchError(f"callback {n}: RequestValidator.validate refuses it")

    def write_slices(self, prefix: Path, first: int, count: int, threads: int) -> None:
        """``prefix.<i>`` for wrk thread i: disjoint, contiguous ranges of [first, first+count)."""
        per = count // threads
        for i in range(threads):
            start = first + i * per
            with open(f"{prefix}.{i}", "w") as out:
                out.writelines(self.line(n) for n in range(start, start + per))


def number_of(subject: str) -> int | None:
    """The callback number encoded in a MessageSid, None for anything else."""
    if len(subject) == 34 and subject.startswith("SM"):
        with contextlib.suppress(ValueError):
            return int(subject[2:], 16)
    return None
