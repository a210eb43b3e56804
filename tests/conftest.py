"""Shared fixtures: the real RabbitMQ for tests marked ``@pytest.mark.broker``, the real
PostgreSQL for tests marked ``@pytest.mark.postgres``.

``amqp_url`` points at a fresh vhost per test session (created and deleted with rabbitmqctl),
so runs never see each other's queues. Without a reachable broker the broker tests are skipped,
or fail when HOOKLINE_REQUIRE_BROKER=1 (CI), so a missing broker never passes silently.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import pytest

from tests.support.logs import CapturedLogs
from tests.support.rabbit import RabbitClient, TcpProxy

DEFAULT_TEST_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_TEST_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _unavailable(reason: str) -> None:
    if os.environ.get("HOOKLINE_REQUIRE_BROKER") == "1":
        pytest.fail(f"HOOKLINE_REQUIRE_BROKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=30)


def _with_vhost(url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe="")))


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """URL of a RabbitMQ vhost private to this test session."""
    base = os.environ.get("HOOKLINE_TEST_AMQP_URL", DEFAULT_TEST_AMQP_URL)
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except OSError as exc:
        _unavailable(f"no RabbitMQ at {host}:{port} (HOOKLINE_TEST_AMQP_URL): {exc}")
    if shutil.which("rabbitmqctl") is None or host not in LOCAL_HOSTS:
        warnings.warn(
            "rabbitmqctl unavailable for this broker: broker tests share the URL's own vhost",
            stacklevel=1,
        )
        yield base
        return
    vhost = f"hookline-test-{secrets.token_hex(4)}"
    user = unquote(parts.username or "guest")
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.warn(f"rabbitmqctl failed ({exc}): using the URL's own vhost", stacklevel=1)
        yield base
        return
    try:
        yield _with_vhost(base, vhost)
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbitmq_api_url(amqp_url: str) -> str:
    """The test broker's management HTTP API (HOOKLINE_TEST_RABBITMQ_API_URL, else port 15672
    of the AMQP host with the AMQP credentials); the vhost is ``amqp_url``'s."""
    from gateway.settings import default_rabbitmq_api_url

    url = os.environ.get("HOOKLINE_TEST_RABBITMQ_API_URL") or default_rabbitmq_api_url(amqp_url)
    if url is None:
        pytest.fail(f"no management API URL for {amqp_url}", pytrace=False)
    parts = urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 15672), timeout=1.0
        ).close()
    except OSError as exc:
        _unavailable(
            f"no RabbitMQ management API at {parts.hostname}:{parts.port} "
            f"(rabbitmq-plugins enable rabbitmq_management): {exc}"
        )
    return url


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """URL of a PostgreSQL database private to this test session, dropped at the end.

    Without a reachable server the tests are skipped, or fail under HOOKLINE_REQUIRE_BROKER=1.
    """
    import psycopg

    admin_url = os.environ.get("HOOKLINE_TEST_PG_URL", DEFAULT_TEST_PG_URL)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        _unavailable(f"no PostgreSQL at {admin_url} (HOOKLINE_TEST_PG_URL): {exc}")
    name = f"hookline_test_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session database with an empty public schema (each test migrates from nothing)."""
    import psycopg

    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger database URL: a SQLite file, or the test session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def rabbit(amqp_url: str) -> AsyncIterator[RabbitClient]:
    """A connected RabbitClient on the session vhost: read_all, purge, queue_length."""
    client = await RabbitClient(amqp_url).connect()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def broker_proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP relay to the test broker (``.url``) that can pause() or sever() for fault tests."""
    relay = await TcpProxy(amqp_url).start()
    try:
        yield relay
    finally:
        await relay.close()


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """hookline's JSON logs written to memory for the test, then logging reset."""
    import structlog

    from gateway.log import configure_logging, reset_logging

    logs = CapturedLogs()
    configure_logging("json", "debug", stream=logs.stream)
    try:
        yield logs
    finally:
        structlog.contextvars.clear_contextvars()
        reset_logging()


@pytest.fixture
def reset_logging_after() -> Iterator[None]:
    """For tests that call the CLI: main() configures logging on the captured stdout."""
    yield
    from gateway.log import reset_logging

    reset_logging()
