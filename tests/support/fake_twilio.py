"""A local fake of the Twilio REST API, served over real HTTP for the official client.

It checks what the real API checks that matters to hookline: Basic auth with the subaccount's
SID and auth token, the account in the path matching the credentials, required parameters,
E.164 numbers; it answers with the JSON shape the client parses
(https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource,
https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource).
Every accepted request is recorded with its arrival time, for pacing and content checks.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class Placed:
    account: str
    resource: str  # "Calls" or "Messages"
    params: dict[str, list[str]]
    at: float  # time.monotonic() on arrival
    sid: str


@dataclass
class FakeTwilio:
    """Accounts by SID -> auth token; ``refuse`` numbers answer 400 (code 21211)."""

    accounts: dict[str, str]
    refuse: set[str] = field(default_factory=set)
    unavailable: int = 0  # answer the next N requests with 503
    placed: list[Placed] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/2010-04-01/Accounts/{account}/{resource}.json", self._create,
                  methods=["POST"]),
        ])

    def calls(self) -> list[Placed]:
        return [p for p in self.placed if p.resource == "Calls"]

    def messages(self) -> list[Placed]:
        return [p for p in self.placed if p.resource == "Messages"]

    async def _create(self, request: Request) -> JSONResponse:
        account, resource = request.path_params["account"], request.path_params["resource"]
        user, _, password = _basic(request.headers.get("authorization", ""))
        if self.accounts.get(user) != password or not password:
            return _error(401, 20003, "Authenticate")
        if user != account:
            return _error(403, 20006, "Access denied: credentials of another account")
        if resource not in ("Calls", "Messages"):
            return _error(404, 20404, f"The requested resource {resource} was not found")
        if self.unavailable > 0:
            self.unavailable -= 1
            return _error(503, 20500, "Service unavailable")
        params = parse_qs((await request.body()).decode(), keep_blank_values=True)
        needed = ("To", "From", "Url") if resource == "Calls" else ("To", "From", "Body")
        missing = [name for name in needed if name not in params]
        if missing:
            return _error(400, 21201, f"Missing required parameter {missing[0]}")
        to = params["To"][0]
        if not E164.fullmatch(to) or to in self.refuse:
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = ("CA" if resource == "Calls" else "SM") + f"{next(self._ids):032x}"
        self.placed.append(Placed(account, resource, params, time.monotonic(), sid))
        body: dict[str, Any] = {"sid": sid, "account_sid": account, "to": to,
                                "from": params["From"][0], "status": "queued",
                                "api_version": "2010-04-01",
                                "uri": f"/2010-04-01/Accounts/{account}/{resource}/{sid}.json"}
        return JSONResponse(body, status_code=201)


def _basic(header: str) -> tuple[str, str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        return base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return "", "", ""


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status,
                         "more_info": f"https://www.twilio.com/docs/errors/{code}"},
                        status_code=status)
