"""A small client of the RabbitMQ management HTTP API: users and their permissions.

stdlib ``urllib`` in a worker thread: a handful of administrative calls per command does not
justify an HTTP client dependency. Every failure becomes one ``ManagementApiError`` line that
says what failed, where (the URL with its password masked) and what to do; the password of a
user being created is never part of a message or a log line.
https://www.rabbitmq.com/docs/http-api-reference
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from gateway.errors import HooklineError
from gateway.log import mask_url_password
from schemas.permissions import UserPermissions

TIMEOUT_S: Final = 10.0


class ManagementApiError(HooklineError):
    """The management API is unreachable, refused the credentials, or refused a request."""


def amqp_vhost(amqp_url: str) -> str:
    """The vhost an AMQP URL names: ``/`` when its path is empty or just ``/``."""
    path = urlsplit(amqp_url).path
    return "/" if path in ("", "/") else unquote(path[1:])


class ManagementApi:
    """Calls on one management API; ``fallback_credentials`` (the AMQP URL's user and
    password) are used when the API URL carries none."""

    def __init__(
        self,
        api_url: str,
        fallback_credentials: tuple[str, str] | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        parts = urlsplit(api_url)
        if parts.username is not None:
            credentials = (unquote(parts.username), unquote(parts.password or ""))
        else:
            credentials = fallback_credentials or ("guest", "guest")
        host = parts.netloc.rpartition("@")[2]
        self._base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self._user = credentials[0]
        token = base64.b64encode(":".join(credentials).encode()).decode()
        self._auth = f"Basic {token}"
        self._masked = mask_url_password(api_url)
        self._timeout_s = timeout_s

    @property
    def masked_url(self) -> str:
        return self._masked

    # -- the calls hookline makes --------------------------------------------------------------

    async def vhost_exists(self, vhost: str) -> bool:
        return await self._call("GET", f"/api/vhosts/{_seg(vhost)}", missing_ok=True) is not None

    async def require_vhost(self, vhost: str) -> None:
        if not await self.vhost_exists(vhost):
            raise ManagementApiError(
                f"vhost {vhost!r} does not exist on the broker of {self._masked}: create it "
                f"(rabbitmqctl add_vhost {vhost}) or fix the vhost in HOOKLINE_AMQP_URL"
            )

    async def user_exists(self, name: str) -> bool:
        return await self._call("GET", f"/api/users/{_seg(name)}", missing_ok=True) is not None

    async def put_user(self, name: str, password: str, tags: str = "") -> None:
        """Create ``name`` or replace its password; no tags: no management UI access."""
        await self._call("PUT", f"/api/users/{_seg(name)}", {"password": password, "tags": tags})

    async def delete_user(self, name: str) -> bool:
        """Delete ``name``; False when there was no such user. RabbitMQ closes the user's open
        connections itself (CONNECTION_FORCED)."""
        return await self._call("DELETE", f"/api/users/{_seg(name)}", missing_ok=True) is not None

    async def set_permissions(self, vhost: str, user: str, permissions: UserPermissions) -> None:
        """Replace the user's permissions on ``vhost``, and its topic permissions there."""
        await self._call(
            "PUT",
            f"/api/permissions/{_seg(vhost)}/{_seg(user)}",
            {
                "configure": permissions.configure,
                "write": permissions.write,
                "read": permissions.read,
            },
        )
        for topic in permissions.topics:
            await self._call(
                "PUT",
                f"/api/topic-permissions/{_seg(vhost)}/{_seg(user)}",
                {
                    "exchange": topic.exchange,
                    "write": topic.write,
                    "read": topic.read,
                },
            )

    # -- transport --------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        return await asyncio.to_thread(self._request, method, path, body, missing_ok)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, missing_ok: bool
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - the URL scheme is checked by settings
            self._base + path,
            data=data,
            method=method,
            headers={"Authorization": self._auth, "Content-Type": "application/json"},
        )
        what = f"{method} {path}"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:  # the error is the response: close its connection
                if exc.code == 404 and missing_ok:
                    return None
                raise ManagementApiError(self._refusal(what, exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ManagementApiError(
                f"cannot reach the RabbitMQ management API at {self._masked} ({what}): "
                f"{reason}; enable it (rabbitmq-plugins enable rabbitmq_management) or set "
                "HOOKLINE_RABBITMQ_API_URL"
            ) from None
        return json.loads(raw) if raw else True

    def _refusal(self, what: str, exc: urllib.error.HTTPError) -> str:
        if exc.code == 401:
            return (
                f"the RabbitMQ management API at {self._masked} refused user "
                f"{self._user!r} (401 Unauthorized): give HOOKLINE_RABBITMQ_API_URL the "
                "credentials of a user tagged administrator"
            )
        if exc.code == 403:
            return (
                f"the RabbitMQ management API at {self._masked} forbids {what} to user "
                f"{self._user!r} (403): it needs the administrator tag"
            )
        try:
            reason = json.loads(exc.read()).get("reason", "")
        except (ValueError, AttributeError, OSError):
            reason = ""
        return (
            f"the RabbitMQ management API at {self._masked} answered {what} with "
            f"{exc.code} {exc.reason}{': ' + str(reason) if reason else ''}"
        )


def _seg(value: str) -> str:
    """One path segment: ``/`` (the default vhost) must travel as ``%2F``."""
    return quote(value, safe="")
