"""Place bot calls and send follow-up texts on the tenant's own subaccount, with ``twilio``.

Each tenant's calls go through a client authenticated as that tenant's subaccount (its SID
and auth token), so numbers, usage and cost stay on the tenant's bill. The official client's
asyncio transport is used so a slow REST call never blocks the worker's event loop.
https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource
https://www.twilio.com/docs/voice/answering-machine-detection

``api_base`` replaces https://api.twilio.com, for a Twilio-compatible endpoint (an egress
proxy, or the local fake API the tests run).
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from gateway.errors import TransientError
from gateway.tenants import Tenant
from workers.twilio_rest import rebased

# The client logs each request at info (URLs, parameters); hookline logs its own line.
_CLIENT_LOGGER: Final = logging.getLogger("hookline.twilio_client")
_CLIENT_LOGGER.setLevel(logging.WARNING)
#: Call progress events sent to /twilio/voice/status.
STATUS_EVENTS: Final = ("initiated", "ringing", "answered", "completed")


class CallRefused(Exception):
    """Twilio refused the request for good (4xx: bad number, unverified caller id ...)."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"Twilio answered {status} (code {code}): {message}")
        self.status, self.code = status, code


@dataclass(frozen=True, slots=True)
class CallRequest:
    tenant: Tenant
    to: str
    from_: str
    url: str  # the sealed first step of the flow
    status_callback: str


class TwilioApi(Protocol):
    async def place_call(self, request: CallRequest) -> str:
        """The new call's SID; CallRefused for a 4xx, TransientError for the rest."""

    async def send_sms(self, tenant: Tenant, to: str, from_: str, body: str) -> str:
        """The new message's SID; same errors as place_call."""

    async def close(self) -> None: ...


class _BaseUrlClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    def __init__(self, api_base: str | None, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=_CLIENT_LOGGER)
        self._api_base = api_base

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        url = rebased(url, self._api_base)
        if auth is not None:
            # As a header: aiohttp deprecates the BasicAuth object the client would build.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        return await super().request(
            method, url, params, data, headers, None, timeout, allow_redirects
        )


class TwilioRestApi:
    """TwilioApi on the official client; build it inside the running event loop."""

    def __init__(self, *, api_base: str | None = None, timeout_s: float = 10.0) -> None:
        self._api_base, self._timeout_s = api_base, timeout_s
        self._http: _BaseUrlClient | None = None  # its aiohttp session needs a running loop
        self._clients: dict[str, Client] = {}

    def _client(self, tenant: Tenant) -> Client:
        account = tenant.twilio
        if account is None:
            raise CallRefused(0, None, f"tenant {tenant.id!r} has no Twilio subaccount")
        if self._http is None:
            self._http = _BaseUrlClient(self._api_base, self._timeout_s)
        client = self._clients.get(tenant.id)
        if client is None:
            client = Client(
                account.account_sid,
                account.auth_token.reveal(),
                account.account_sid,
                http_client=self._http,
            )
            self._clients[tenant.id] = client
        return client

    async def place_call(self, request: CallRequest) -> str:
        client = self._client(request.tenant)
        call = await _guard(
            client.calls.create_async(
                to=request.to,
                from_=request.from_,
                url=request.url,
                method="POST",
                status_callback=request.status_callback,
                status_callback_method="POST",
                status_callback_event=list(STATUS_EVENTS),
                machine_detection="Enable",
            )
        )
        return str(call.sid)

    async def send_sms(self, tenant: Tenant, to: str, from_: str, body: str) -> str:
        message = await _guard(
            self._client(tenant).messages.create_async(to=to, from_=from_, body=body)
        )
        return str(message.sid)

    async def close(self) -> None:
        """Idempotent: both flows handlers share one API client and close it."""
        http, self._http = self._http, None
        self._clients.clear()
        if http is not None:
            await http.close()


async def _guard(call: Any) -> Any:
    try:
        return await call
    except TwilioRestException as exc:
        # 429 (too many requests) and 5xx pass; any other 4xx will fail the same way again.
        if exc.status == 429 or exc.status >= 500:
            raise TransientError(f"Twilio answered {exc.status}: {exc.msg}") from exc
        raise CallRefused(exc.status, exc.code, str(exc.msg)) from exc
    except (OSError, TimeoutError, aiohttp.ClientError) as exc:
        raise TransientError(f"Twilio API unreachable: {type(exc).__name__}: {exc}") from exc
