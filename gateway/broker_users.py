"""Broker users: a tenant's own login (``hookline tenant credentials``) and hookline's service
users (``hookline topology declare --users``), made through the RabbitMQ management API.

A password is random (``secrets``), shown once on stdout and never logged: RabbitMQ keeps
only its salted hash, so hookline cannot show it again; losing it means rotating it.
The permissions come from ``schemas.permissions`` (docs/architecture.md#tenancy,
docs/broker-users.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import orjson
import structlog

from gateway.broker.management import ManagementApi, amqp_vhost
from gateway.errors import ConfigError, HooklineError
from gateway.settings import Settings
from schemas.permissions import (
    SERVICE_PERMISSIONS,
    UserPermissions,
    service_username,
    tenant_permissions,
    tenant_username,
)
from schemas.topology import tenant_queue

log = structlog.get_logger("hookline.broker")

#: 32 random bytes, URL-safe: no escaping needed in an AMQP URL.
PASSWORD_BYTES = 32


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def user_amqp_url(amqp_url: str, username: str, password: str, vhost: str) -> str:
    """``amqp_url`` with another user, password and vhost (host, port, TLS query kept)."""
    parts = urlsplit(amqp_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}"
    return urlunsplit(
        (parts.scheme, f"{userinfo}@{host}", "/" + quote(vhost, safe=""), parts.query, "")
    )


def management_api(settings: Settings) -> ManagementApi:
    """The management API of the broker of HOOKLINE_AMQP_URL; ConfigError on memory://."""
    if settings.rabbitmq_api_url is None:
        raise ConfigError(
            "broker users need RabbitMQ: HOOKLINE_AMQP_URL is memory://, which has no users; "
            "set HOOKLINE_AMQP_URL (and HOOKLINE_RABBITMQ_API_URL if the management API is "
            "not on the AMQP host's port 15672)"
        )
    parts = urlsplit(settings.amqp_url)
    fallback = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
    return ManagementApi(settings.rabbitmq_api_url, fallback)


@dataclass(frozen=True, slots=True)
class IssuedUser:
    username: str
    password: str
    vhost: str
    amqp_url: str


async def tenant_credentials(
    settings: Settings, tenant_id: str, out: TextIO, *, rotate: bool = False, delete: bool = False
) -> int:
    """Create (or ``rotate``, or ``delete``) the broker user of ``tenant_id``; one JSON object
    on ``out``."""
    if rotate and delete:
        raise ConfigError("--rotate and --delete exclude each other")
    if settings.tenants.by_id(tenant_id) is None:
        raise ConfigError(f"--tenant: no tenant {tenant_id!r} in {settings.config_path}")
    api = management_api(settings)
    vhost = amqp_vhost(settings.amqp_url)
    username = tenant_username(tenant_id, vhost)
    await api.require_vhost(vhost)
    if delete:
        # RabbitMQ closes the deleted user's open connections (CONNECTION_FORCED).
        deleted = await api.delete_user(username)
        log.info("tenant_broker_user_deleted", tenant=tenant_id, username=username, existed=deleted)
        _print(out, {"tenant": tenant_id, "username": username, "vhost": vhost, "deleted": deleted})
        return 0
    exists = await api.user_exists(username)
    if exists and not rotate:
        raise HooklineError(
            f"broker user {username!r} of tenant {tenant_id!r} already exists on "
            f"{api.masked_url}; its password was shown once when it was made: run "
            f"`hookline tenant credentials --tenant {tenant_id} --rotate` for a new one, or "
            "--delete to remove the user"
        )
    if not exists and rotate:
        raise HooklineError(
            f"--rotate: tenant {tenant_id!r} has no broker user {username!r} on "
            f"{api.masked_url} yet: run without --rotate to create it"
        )
    issued = await _issue(api, settings.amqp_url, username, vhost, tenant_permissions(tenant_id))
    log.info(
        "tenant_broker_user_rotated" if exists else "tenant_broker_user_created",
        tenant=tenant_id,
        username=username,
        vhost=vhost,
    )
    _print(
        out,
        {
            "tenant": tenant_id,
            "username": issued.username,
            "password": issued.password,
            "vhost": vhost,
            "queue": tenant_queue(tenant_id),
            "amqp_url": issued.amqp_url,
        },
    )
    return 0


async def service_users(settings: Settings, out: TextIO) -> int:
    """Make every missing service user (its password printed once) and (re)apply every service
    user's permissions; existing users keep their password. One JSON line per user."""
    api = management_api(settings)
    vhost = amqp_vhost(settings.amqp_url)
    await api.require_vhost(vhost)
    for service, permissions in SERVICE_PERMISSIONS.items():
        username = service_username(service, vhost)
        line: dict[str, Any] = {"service": service, "username": username, "vhost": vhost}
        if await api.user_exists(username):
            await api.set_permissions(vhost, username, permissions)
            line["created"] = False
        else:
            issued = await _issue(api, settings.amqp_url, username, vhost, permissions)
            line.update(created=True, password=issued.password, amqp_url=issued.amqp_url)
        log.info(
            "service_broker_user_ready", service=service, username=username, created=line["created"]
        )
        _print(out, line)
    return 0


async def _issue(
    api: ManagementApi, amqp_url: str, username: str, vhost: str, permissions: UserPermissions
) -> IssuedUser:
    password = new_password()
    # The user first, then its permissions: a failure in between leaves a user that may do
    # nothing at all (no permissions on any vhost), never one with a stale grant.
    await api.put_user(username, password)
    await api.set_permissions(vhost, username, permissions)
    return IssuedUser(username, password, vhost, user_amqp_url(amqp_url, username, password, vhost))


def _print(out: TextIO, line: dict[str, Any]) -> None:
    out.write(orjson.dumps(line).decode() + "\n")
    out.flush()
