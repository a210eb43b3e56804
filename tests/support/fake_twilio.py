"""A local fake of Twilio's Usage Records REST API, served by uvicorn on 127.0.0.1 in a thread.

It answers what https://www.twilio.com/docs/usage/api/usage-record documents for
``GET /2010-04-01/Accounts/{AccountSid}/Usage/Records.json``: HTTP Basic auth with the account's
own SID and auth token, ``Category``, ``StartDate``, ``EndDate``, ``IncludeSubaccounts`` query
parameters, and a list page ``{"usage_records": [...], "next_page_uri": ...}``. Pages hold one
record each, so the client's paging is exercised. Every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class FakeTwilio:
    """Accounts (sid -> token) and their records (sid -> category -> list of records)."""

    tokens: dict[str, str]
    records: dict[str, dict[str, list[dict[str, str]]]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/2010-04-01/Accounts/{sid}/Usage/Records.json",
                                       self.usage_records)])

    async def usage_records(self, request: Request) -> JSONResponse:
        sid = request.path_params["sid"]
        query = dict(request.query_params)
        self.requests.append({"sid": sid, **query})
        user, _, password = _basic(request.headers.get("authorization", ""))
        if user != sid or self.tokens.get(sid) != password:
            return JSONResponse({"code": 20003, "message": "Authenticate", "status": 401,
                                 "more_info": "https://www.twilio.com/docs/errors/20003"}, 401)
        if query.get("IncludeSubaccounts") != "false":
            return JSONResponse({"code": 20001, "message": "expected IncludeSubaccounts=false",
                                 "status": 400}, 400)
        found = self.records.get(sid, {}).get(query.get("Category", ""), [])
        page = int(query.get("Page", "0"))
        uri = request.url.path
        keep = {k: v for k, v in query.items() if k not in ("Page", "PageToken", "PageSize")}
        more = "&".join(f"{k}={v}" for k, v in keep.items())
        next_uri = f"{uri}?{more}&PageSize=1&Page={page + 1}" if page + 1 < len(found) else None
        return JSONResponse({
            "usage_records": [{"account_sid": sid, "category": query.get("Category"),
                               "start_date": query.get("StartDate"),
                               "end_date": query.get("EndDate"), **record}
                              for record in found[page : page + 1]],
            "first_page_uri": f"{uri}?{more}&PageSize=1&Page=0", "next_page_uri": next_uri,
            "previous_page_uri": None, "page": page, "page_size": 1, "start": page,
            "end": page, "uri": f"{uri}?{more}",
        })


def _basic(header: str) -> tuple[str, str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return "", "", ""
    try:
        return base64.b64decode(value).decode().partition(":")
    except ValueError:
        return "", "", ""


@contextmanager
def serving_in_thread(fake: FakeTwilio) -> Iterator[FakeTwilio]:
    """Serve the fake on an ephemeral port from a thread (the Twilio client is blocking)."""
    config = uvicorn.Config(fake.app(), host="127.0.0.1", port=0, log_config=None,
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),),
                              daemon=True)
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
