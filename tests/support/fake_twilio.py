"""A local fake of the Twilio REST API, served over real HTTP for the official client.

It answers what hookline calls, as Twilio documents it:
- ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` and ``.../Messages.json``
  (https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource,
  https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource):
  required parameters, E.164 numbers, the JSON the client parses; every accepted request is
  recorded with its arrival time, for pacing and content checks;
- ``GET .../Usage/Records.json`` (https://www.twilio.com/docs/usage/api/usage-record):
  ``Category``, ``StartDate``, ``EndDate``, ``IncludeSubaccounts``, and list pages of one
  record each, so the client's paging is exercised.
Every route demands HTTP Basic auth with the account's own SID and auth token, and the
account in the path must be the authenticated one.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
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
    """Accounts (sid -> token), usage records (sid -> category -> records), and failure
    switches: ``refuse`` numbers answer 400 (code 21211), ``unavailable`` answers the next N
    create requests with 503."""

    tokens: dict[str, str]
    records: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)
    unavailable: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)  # usage record queries
    placed: list[Placed] = field(default_factory=list)
    base_url: str = ""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/2010-04-01/Accounts/{sid}/Usage/Records.json", self.usage_records),
                Route("/2010-04-01/Accounts/{sid}/{resource}.json", self.create, methods=["POST"]),
            ]
        )

    def calls(self) -> list[Placed]:
        return [p for p in self.placed if p.resource == "Calls"]

    def messages(self) -> list[Placed]:
        return [p for p in self.placed if p.resource == "Messages"]

    def _denied(self, request: Request) -> JSONResponse | None:
        sid = request.path_params["sid"]
        user, _, password = _basic(request.headers.get("authorization", ""))
        if not password or self.tokens.get(user) != password:
            return _error(401, 20003, "Authenticate")
        if user != sid:
            return _error(403, 20006, "Access denied: credentials of another account")
        return None

    async def usage_records(self, request: Request) -> JSONResponse:
        sid = request.path_params["sid"]
        query = dict(request.query_params)
        self.requests.append({"sid": sid, **query})
        if (denied := self._denied(request)) is not None:
            return denied
        if query.get("IncludeSubaccounts") != "false":
            return _error(400, 20001, "expected IncludeSubaccounts=false")
        found = self.records.get(sid, {}).get(query.get("Category", ""), [])
        page = int(query.get("Page", "0"))
        uri = request.url.path
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageToken", "PageSize")}
        more = "&".join(f"{k}={v}" for k, v in keep.items())
        next_uri = f"{uri}?{more}&PageSize=1&Page={page + 1}" if page + 1 < len(found) else None
        return JSONResponse(
            {
                "usage_records": [
                    {
                        "account_sid": sid,
                        "category": query.get("Category"),
                        "start_date": query.get("StartDate"),
                        "end_date": query.get("EndDate"),
                        **record,
                    }
                    for record in found[page : page + 1]
                ],
                "first_page_uri": f"{uri}?{more}&PageSize=1&Page=0",
                "next_page_uri": next_uri,
                "previous_page_uri": None,
                "page": page,
                "page_size": 1,
                "start": page,
                "end": page,
                "uri": f"{uri}?{more}",
            }
        )

    async def create(self, request: Request) -> JSONResponse:
        account, resource = request.path_params["sid"], request.path_params["resource"]
        if (denied := self._denied(request)) is not None:
            return denied
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
        body: dict[str, Any] = {
            "sid": sid,
            "account_sid": account,
            "to": to,
            "from": params["From"][0],
            "status": "queued",
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account}/{resource}/{sid}.json",
        }
        return JSONResponse(body, status_code=201)


def _basic(header: str) -> tuple[str, str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        return base64.b64decode(value).decode().partition(":")
    except ValueError:
        return "", "", ""


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "code": code,
            "message": message,
            "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
        },
        status_code=status,
    )


@contextmanager
def serving_in_thread(fake: FakeTwilio) -> Iterator[FakeTwilio]:
    """Serve the fake on an ephemeral port from a thread (for the blocking Twilio client)."""
    config = uvicorn.Config(
        fake.app(), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        threading.Event().wait(0.01)
    if not server.started:
        raise RuntimeError("the fake Twilio API did not start")
    port = server.servers[0].sockets[0].getsockname()[1]
    fake.base_url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        loop.close()
