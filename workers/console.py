"""The ``hookline`` console script: the gateway's commands plus the worker side.

``gateway`` never imports ``workers``, so the composition lives here: this parser is
``gateway.cli.build_parser()`` plus ``worker``, ``dead`` and ``usage``, and ``run`` becomes the
gateway and every worker in one process (on ``memory://`` they share one embedded
broker).
Every other command is handed to ``gateway.cli.main`` unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

import orjson

from gateway import cli as gateway_cli
from gateway.broker.memory import MemoryBroker
from gateway.errors import ConfigError, HooklineError
from gateway.metrics import Metrics, WorkerMetrics
from gateway.settings import Settings
from workers.backends import create_transport
from workers.registry import HANDLERS, KINDS, WorkerContext
from workers.runner import Runner, run_until_stopped
from workers.usage.commands import add_usage_commands, run_usage_command

WORKER_COMMANDS = ("run", "worker", "dead", "usage")


def build_parser() -> argparse.ArgumentParser:
    parser = gateway_cli.build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    worker = commands.add_parser("worker", help="run one kind of worker (or all)")
    worker.add_argument("kind", choices=[*KINDS, "all"], help="which worker")
    dead = commands.add_parser("dead", help="dead-lettered messages (hookline.dead)")
    dead_commands = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = dead_commands.add_parser("list", help="one JSON line per dead letter")
    listing.add_argument("--limit", type=int, default=None, help="at most this many")
    replay = dead_commands.add_parser("replay", help="re-publish to the original queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="message_id", help="the message_id to replay")
    which.add_argument("--all", action="store_true", help="replay every dead letter")
    add_usage_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    if args.command not in WORKER_COMMANDS:
        return gateway_cli.main(arguments, environ)
    # `dead list` and `usage report` print data on stdout: their log lines go to stderr.
    settings = gateway_cli.settings_and_logging(
        environ, logs_to_stderr=args.command in ("dead", "usage")
    )
    if settings is None:
        return 1
    try:
        if args.command == "run":
            return _run(settings, args.host, args.port)
        if args.command == "worker":
            return asyncio.run(_workers(settings, args.kind))
        if args.command == "usage":
            return run_usage_command(args, settings, sys.stdout)
        return asyncio.run(_dead(settings, args, sys.stdout))
    except HooklineError as exc:
        print(f"hookline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _kinds(kind: str) -> list[str]:
    return list(KINDS) if kind == "all" else [kind]


def _runners(
    settings: Settings,
    kinds: list[str],
    context: WorkerContext | None = None,
    metrics: Metrics | None = None,
) -> list[Runner]:
    context = context or WorkerContext()
    worker_metrics = WorkerMetrics(metrics) if metrics is not None else None
    return [
        Runner(
            handler,
            create_transport(settings.amqp_url, handler.name, memory_broker=context.memory_broker),
            metrics=worker_metrics,
        )
        for kind in kinds
        for handler in HANDLERS[kind](settings, context)
    ]


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _workers(settings: Settings, kind: str) -> int:
    """The workers of ``kind``, with /readyz and /metrics on HOOKLINE_WORKER_ADMIN_LISTEN when
    it is set (not HOOKLINE_ADMIN_LISTEN: a gateway and workers often share a host)."""
    metrics = Metrics()
    runners = _runners(settings, _kinds(kind), metrics=metrics)
    stop = asyncio.Event()
    _stop_on_signals(stop)
    admin = None
    if settings.worker_admin_listen is not None:
        from gateway.http.admin import AdminListener, create_admin_app

        def readiness() -> tuple[bool, dict[str, object]]:
            ready = {runner.handler.name: runner.ready.is_set() for runner in runners}
            return all(ready.values()), {"workers": ready}

        admin = AdminListener(
            create_admin_app(readiness, metrics),
            *settings.worker_admin_listen,
            settings.client_limits,
        )
        await admin.start()  # a taken port is a ConfigError: one clear line, nothing started
    try:
        await run_until_stopped(runners, stop)
    finally:
        if admin is not None:
            await admin.close()
    return 0


def _run(settings: Settings, host: str, port: int) -> int:
    return asyncio.run(_gateway_and_workers(settings, host, port))


async def _gateway_and_workers(settings: Settings, host: str, port: int) -> int:
    """The gateway on uvicorn and every worker, in this one event loop.

    On SIGTERM the HTTP server stops first (finishing requests in flight, which may still be
    waiting for a worker's TwiML), then the workers drain and stop.
    """
    import uvicorn

    from gateway.backend_registry import url_scheme
    from gateway.broker.memory import MemoryPublisher
    from gateway.broker.rpc import MemoryRpcClient
    from gateway.http.app import create_app
    from gateway.http.serving import bind, server_config

    memory = url_scheme(settings.amqp_url) == "memory"
    broker = MemoryBroker() if memory else None
    metrics = Metrics()  # one registry: the gateway's admin listener shows the workers' too
    if broker is not None:
        tenant_ids = [tenant.id for tenant in settings.tenants]
        app = create_app(
            settings,
            publisher=MemoryPublisher(broker, tenant_ids),
            rpc=MemoryRpcClient(broker),
            metrics=metrics,
        )
    else:
        app = create_app(settings, metrics=metrics)
    # Without HOOKLINE_PUBLIC_URL, bot-call step URLs point at the address served here.
    served = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    runners = _runners(settings, list(KINDS), WorkerContext(broker, served), metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(_sig: int, _frame: object) -> None:
        # uvicorn takes SIGTERM/SIGINT while it serves and raises them again once it is done:
        # they land here, after the HTTP side has finished.
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if settings.admin_listen is not None:  # taken? say so now, in one line, not mid-start
        bind(*settings.admin_listen).close()
    public = bind(host, port)
    server = uvicorn.Server(server_config(app, host, port, settings.client_limits))
    workers = asyncio.create_task(run_until_stopped(runners, stop), name="workers")
    try:
        await server.serve(sockets=[public])
    finally:
        stop.set()
        await workers
    return 0


async def _dead(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if settings.amqp_url.startswith("memory:"):
        raise ConfigError(
            "dead letters need a RabbitMQ broker: HOOKLINE_AMQP_URL is memory://, whose "
            "queues live inside the `hookline run` process"
        )
    from gateway.broker.dead import DeadLetters

    letters = DeadLetters(settings.amqp_url)
    if args.action == "list":
        for dead in await letters.inspect(limit=args.limit):
            out.write(orjson.dumps(dead.as_dict()).decode() + "\n")
        return 0
    replayed, skipped = await letters.replay(message_id=None if args.all else args.message_id)
    for dead in replayed:
        out.write(orjson.dumps({"replayed": dead.message_id, "queue": dead.queue}).decode() + "\n")
    for dead in skipped:
        out.write(
            orjson.dumps(
                {
                    "skipped": dead.message_id,
                    "queue": dead.queue,
                    "why": "original queue unknown or gone",
                }
            ).decode()
            + "\n"
        )
    print(f"replayed {len(replayed)}, skipped {len(skipped)}", file=sys.stderr)
    if args.message_id is not None and not replayed and not skipped:
        print(f"hookline: no dead letter with message_id {args.message_id!r}", file=sys.stderr)
        return 1
    return 1 if skipped else 0


if __name__ == "__main__":
    raise SystemExit(main())
