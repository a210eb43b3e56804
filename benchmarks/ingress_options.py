"""Command-line options of the ingress bench (benchmarks.ingress)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from benchmarks.common import TARGETS
from benchmarks.targets import TARGET_CPU


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    """The ingress bench's options (``python -m benchmarks.ingress --help``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="hookline serve --workers")
    parser.add_argument(
        "--only", default=",".join(TARGETS), help="comma-separated subset of bare,naive,hookline"
    )
    parser.add_argument(
        "--max-rate",
        type=int,
        default=40_000,
        help="callbacks/s the pre-generated set covers without repeats",
    )
    parser.add_argument(
        "--amqp-url",
        default="amqp://guest:guest@127.0.0.1:5672/",
        help="RabbitMQ; the bench works in a throwaway vhost of it",
    )
    parser.add_argument(
        "--hookline-log-level", default="warning", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample hookline with py-spy during each measured run and print "
        "where its time went (the sampling slows it: figures disturbed)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"the target on CPU {TARGET_CPU}, RabbitMQ and wrk on the others "
        "(how much the shared cores cost the target)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    targets = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        parser.error(f"--only: unknown target(s) {sorted(unknown)}; choose from {TARGETS}")
    args.targets = [t for t in TARGETS if t in targets]
    if min(args.connections, args.threads, args.repeats, args.workers) < 1:
        parser.error("--connections, --threads, --repeats and --workers must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args
