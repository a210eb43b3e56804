"""`hookline tenant credentials` and `hookline topology declare --users` through the command
line, against the real broker and its management API."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest

from gateway.cli import main
from schemas.permissions import SERVICE_PERMISSIONS, service_username
from tests.support.broker_users import broker_settings, delete_users, login_refused, tenant_id

pytestmark = [pytest.mark.broker, pytest.mark.usefixtures("reset_logging_after")]


def config(tmp_path: Path, *tenant_ids: str) -> Path:
    path = tmp_path / "hookline.toml"
    path.write_text("".join(f'[[tenants]]\nid = "{tid}"\nname = "{tid}"\n\n' for tid in tenant_ids))
    return path


def environ(tmp_path: Path, amqp_url: str, tenants: list[str], **extra: str) -> dict[str, str]:
    return {
        "HOOKLINE_CONFIG": str(config(tmp_path, *tenants)),
        "HOOKLINE_AMQP_URL": amqp_url,
        "HOOKLINE_DATA_DIR": str(tmp_path / "data"),
        "HOOKLINE_LOG_FORMAT": "json",
        **extra,
    }


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(netloc=f"{parts.username}:{password}@{parts.hostname}:{parts.port or 5672}")
    )


def test_create_refuse_rotate_delete(
    amqp_url: str, rabbitmq_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command prints one JSON object with a usable password, never logs it, refuses to
    overwrite an existing user without --rotate, rotates, and deletes."""
    tenant = tenant_id("cli")
    env = environ(tmp_path, amqp_url, [tenant])
    settings = broker_settings(amqp_url, rabbitmq_api_url, [tenant])
    try:
        assert main(["tenant", "credentials", "--tenant", tenant], env) == 0
        out, err = capsys.readouterr()
        [line] = out.splitlines()
        first = orjson.loads(line)
        assert first["tenant"] == tenant and first["password"] not in err
        assert asyncio.run(login_refused(first["amqp_url"])) is False

        assert main(["tenant", "credentials", "--tenant", tenant], env) == 1
        out, err = capsys.readouterr()
        assert out == ""
        assert err.count("\n") == 1 and "already exists" in err and "--rotate" in err

        assert main(["tenant", "credentials", "--tenant", tenant, "--rotate"], env) == 0
        out, err = capsys.readouterr()
        second = orjson.loads(out)
        assert second["password"] != first["password"] and second["password"] not in err
        assert asyncio.run(login_refused(first["amqp_url"])) is True

        assert main(["tenant", "credentials", "--tenant", tenant, "--delete"], env) == 0
        out, _ = capsys.readouterr()
        assert orjson.loads(out)["deleted"] is True
        assert asyncio.run(login_refused(second["amqp_url"])) is True
    finally:
        asyncio.run(delete_users(settings, [first["username"]]))


def test_unknown_tenant_is_refused(
    amqp_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tenant that is not in the config gets no broker user."""
    env = environ(tmp_path, amqp_url, ["known"])
    assert main(["tenant", "credentials", "--tenant", "unknown"], env) == 1
    assert "no tenant 'unknown'" in capsys.readouterr().err


@pytest.mark.parametrize("problem", ["unreachable", "unauthorized", "no vhost"])
def test_management_api_problems_are_one_clear_line(
    amqp_url: str,
    rabbitmq_api_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    problem: str,
) -> None:
    """Unreachable API, refused credentials, missing vhost: one line saying what, where and
    what to do; no traceback and no password."""
    password = "s3cret-" + secrets.token_hex(4)
    url, extra = amqp_url, {}
    if problem == "unreachable":
        extra = {"HOOKLINE_RABBITMQ_API_URL": f"http://admin:{password}@127.0.0.1:9"}
        expected = "cannot reach the RabbitMQ management API at http://admin:***@127.0.0.1:9"
    elif problem == "unauthorized":
        url = with_password(amqp_url, password)
        expected = "401 Unauthorized): give HOOKLINE_RABBITMQ_API_URL the credentials"
    else:
        url = urlunsplit(urlsplit(amqp_url)._replace(path="/no-such-vhost"))
        expected = "vhost 'no-such-vhost' does not exist"
    env = environ(tmp_path, url, ["acme"], **extra)
    assert main(["tenant", "credentials", "--tenant", "acme"], env) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err and password not in err


def test_topology_declare_makes_the_service_users_once(
    amqp_url: str, rabbitmq_api_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`topology declare --users` prints each new service user's password once; a second run
    keeps the users (no password printed) and re-applies their permissions."""
    settings = broker_settings(amqp_url, rabbitmq_api_url, [])
    vhost = urlsplit(amqp_url).path[1:]
    names = [service_username(service, vhost) for service in SERVICE_PERMISSIONS]
    env = environ(tmp_path, amqp_url, [])
    try:
        assert main(["topology", "declare", "--users"], env) == 0
        lines = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()[1:]]
        assert [line["username"] for line in lines] == names
        assert all(line["created"] and line["password"] for line in lines)
        assert asyncio.run(login_refused(lines[0]["amqp_url"])) is False

        assert main(["topology", "declare", "--users"], env) == 0
        again = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()[1:]]
        assert [line["created"] for line in again] == [False] * len(names)
        assert all("password" not in line for line in again)
    finally:
        asyncio.run(delete_users(settings, names))
