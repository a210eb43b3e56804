"""The ``hookline`` command (contract: docs/architecture.md#command-line)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from typing import TextIO

import orjson

from gateway.errors import ConfigError, HooklineError
from gateway.settings import Settings, load_settings

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
METRICS_DIR = "metrics"  # under HOOKLINE_DATA_DIR: serve --workers N's shared metric files


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookline",
        description="Webhook gateway: verified provider callbacks become CloudEvents on RabbitMQ.",
        epilog="Configured by the environment: HOOKLINE_CONFIG (the TOML file of tenants, "
        "routing, flows and rates; default ./hookline.toml), HOOKLINE_AMQP_URL "
        "(amqp[s]://user:password@host/vhost, default memory://, the embedded broker), "
        "HOOKLINE_PUBLIC_URL, HOOKLINE_DB_URL, HOOKLINE_DATA_DIR, "
        "HOOKLINE_ADMIN_LISTEN, HOOKLINE_LOG_FORMAT, HOOKLINE_LOG_LEVEL. "
        "Every variable: docs/configuration.md.",
    )
    # The one version is pyproject's, as installed: nothing in the code repeats it.
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('hookline')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="gateway plus all workers in one process")
    serve = commands.add_parser("serve", help="gateway only")
    for sub in (run, serve):
        sub.add_argument(
            "--host", default=DEFAULT_HOST, help=f"bind address (default {DEFAULT_HOST})"
        )
        sub.add_argument(
            "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
        )
    serve.add_argument("--workers", type=int, default=1, help="gateway processes (default 1)")

    commands.add_parser("check", help="validate config, secrets, broker and database; exit 0 or 1")

    topology = commands.add_parser("topology", help="RabbitMQ topology")
    topology_commands = topology.add_subparsers(dest="action", required=True, metavar="ACTION")
    declare = topology_commands.add_parser("declare", help="declare exchanges, queues and bindings")
    declare.add_argument(
        "--users",
        action="store_true",
        help="also make hookline's service users (docs/broker-users.md)",
    )

    spool = commands.add_parser("spool", help="the local spool of unconfirmed events")
    spool_commands = spool.add_subparsers(dest="action", required=True, metavar="ACTION")
    spool_commands.add_parser("status", help="what is waiting in the local spool files")
    spool_commands.add_parser("replay", help="push orphan spool files to the broker now")

    tenant = commands.add_parser("tenant", help="tenants")
    tenant_commands = tenant.add_subparsers(dest="action", required=True, metavar="ACTION")
    credentials = tenant_commands.add_parser(
        "credentials", help="the tenant's own RabbitMQ user: one JSON object, password once"
    )
    credentials.add_argument("--tenant", required=True, help="tenant id")
    change = credentials.add_mutually_exclusive_group()
    change.add_argument("--rotate", action="store_true", help="give the user a new password")
    change.add_argument("--delete", action="store_true", help="delete the user")

    tail = commands.add_parser("tail", help="print a tenant's events live, one JSON line each")
    tail.add_argument("--tenant", required=True, help="tenant id")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `tail`, `tenant` and `topology declare --users` print data (events, credentials) on
    # stdout: their own log lines go to stderr so stdout stays pure.
    data_on_stdout = args.command in ("tail", "tenant") or getattr(args, "users", False)
    settings = settings_and_logging(environ, logs_to_stderr=data_on_stdout)
    if settings is None:
        return 1
    try:
        if args.command in ("run", "serve"):
            return _serve(settings, args)
        if args.command == "check":
            from gateway.checks import run_checks

            return asyncio.run(run_checks(settings, sys.stdout))
        if args.command == "topology":
            status = asyncio.run(_declare(settings, sys.stdout))
            if status or not args.users:
                return status
            from gateway.broker_users import service_users

            return asyncio.run(service_users(settings, sys.stdout))
        if args.command == "tenant":
            from gateway.broker_users import tenant_credentials

            return asyncio.run(
                tenant_credentials(
                    settings, args.tenant, sys.stdout, rotate=args.rotate, delete=args.delete
                )
            )
        if args.command == "spool":
            from gateway import spool_admin

            if args.action == "status":
                return spool_admin.print_status(settings, sys.stdout)
            return asyncio.run(spool_admin.replay(settings, sys.stdout))
        if args.command == "tail":
            return asyncio.run(_tail(settings, args.tenant, sys.stdout))
    except HooklineError as exc:
        print(f"hookline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise SystemExit(f"unknown command {args.command!r}")


def settings_and_logging(
    environ: Mapping[str, str] | None, *, logs_to_stderr: bool = False
) -> Settings | None:
    """Load the settings and configure logging; None (reported on stderr) when invalid."""
    try:
        settings = load_settings(os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"hookline: configuration error: {exc}", file=sys.stderr)
        return None
    from gateway.log import configure_logging

    configure_logging(
        settings.log_format, settings.log_level, stream=sys.stderr if logs_to_stderr else None
    )
    return settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from gateway.http.serving import bind, server_config

    workers = getattr(args, "workers", 1)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    # Both addresses are checked before anything starts, so a port in use is one clear line.
    if settings.admin_listen is not None:
        bind(*settings.admin_listen, shared=workers > 1).close()
    public = bind(args.host, args.port)
    if workers == 1:
        from gateway.http.app import create_app

        config = server_config(create_app(settings), args.host, args.port, settings.client_limits)
        server = uvicorn.Server(config)
        server.run(sockets=[public])
        return 0 if server.started else 1
    # Each worker process builds its own app from the same environment
    # (gateway.http.app.app_from_environ) and serves the socket bound here. They share one
    # set of metrics through files in a directory that this run starts empty; the variable is
    # set before the processes start because prometheus_client reads it on import.
    from gateway.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

    metrics_dir = prepare_multiprocess_dir(settings.data_dir / METRICS_DIR)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    config = server_config(
        "gateway.http.app:app_from_environ",
        args.host,
        args.port,
        settings.client_limits,
        factory=True,
        workers=workers,
    )
    Multiprocess(config, sockets=[public]).run()
    return 0


async def _declare(settings: Settings, out: TextIO) -> int:
    if settings.amqp_url.startswith("memory:"):
        print("memory:// broker: the topology lives in-process, nothing to declare", file=out)
        return 0
    from gateway.broker.fastamqp import FastAmqpPublisher

    tenant_ids = [tenant.id for tenant in settings.tenants]
    publisher = FastAmqpPublisher(settings.amqp_url, tenant_ids)
    await publisher.start()  # connects and declares, idempotently
    await publisher.close()
    print(
        f"topology declared: hookline.events, hookline.usage (and its retry queues), "
        f"hookline.twiml, hookline.dlx/hookline.dead and {len(tenant_ids)} tenant queue(s)",
        file=out,
    )
    return 0


async def _tail(settings: Settings, tenant_id: str, out: TextIO) -> int:
    if settings.tenants.by_id(tenant_id) is None:
        raise ConfigError(f"--tenant: no tenant {tenant_id!r} in {settings.config_path}")
    if settings.amqp_url.startswith("memory:"):
        raise ConfigError(
            "tail needs a RabbitMQ broker: HOOKLINE_AMQP_URL is memory://, whose events live "
            "inside the gateway process"
        )
    from gateway.broker.tail import tail_events

    async for event in tail_events(settings.amqp_url, tenant_id):
        out.write(orjson.dumps(event).decode() + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
