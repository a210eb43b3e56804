"""Ingress bench: hookline against a bare endpoint and a naive handler, with a zero-loss check.

    .venv/bin/python -m benchmarks.ingress [--duration 10] [--connections 64] [--repeats 3]
        [--workers 1] [--only hookline,bare,naive]

Drives each target with wrk (installed with apt-get when missing) POSTing distinct, validly
signed Twilio message-status callbacks (10 tenants, a unique MessageSid each) and measures
accepted/s, p50/p99 latency, the target's CPU per accepted callback (user + sys of its processes
from /proc), and its peak RSS. hookline and the naive handler publish to a real RabbitMQ, in a
throwaway vhost with hookline's topology; after each run the bench reads every event back from
the ten tenant queues and checks that each callback answered 2xx is there (loss) exactly once
(duplicates). Targets, each a fresh process per repeat, on 127.0.0.1:

* bare: benchmarks/baselines.py, a Starlette endpoint that reads the body and answers 200;
* naive: benchmarks/baselines.py, request.form() + RequestValidator + one confirmed aio-pika
  publish per request;
* hookline: ``python -m gateway.cli serve --workers W`` (HOOKLINE_LOG_LEVEL=warning by default).

Repeats are interleaved (bare, naive, hookline, bare, ...) and the table shows medians.
Modules beside this one: targets (set-up, starting a target, one wrk run), callbacks (tenants,
signed callbacks), procfs (processes, /proc), rabbit (rabbitmqctl, vhost, reading queues back,
outages), machine (wrk, versions, --pin), report (figures and tables), profile (--profile),
common (constants); baselines are the two targets.

How loss is counted: every request carries X-Request-Id = its callback number (hookline echoes
it, and so does the naive baseline), the wrk script records the ids answered 2xx, and every
MessageSid encodes its callback number. loss = answered 2xx but absent from the tenant queues;
duplicates = present more than once. When wrk stops, up to --connections requests are still in
flight: the targets finish them, so their events are in the queues without a 2xx seen by wrk
("delivered but unanswered"); that is expected and neither loss nor duplication.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from benchmarks import profile
from benchmarks.callbacks import CallbackFactory, make_tenants, write_config
from benchmarks.common import (
    CLK_TCK,
    PYDEPS_DIR,
    BenchError,
)
from benchmarks.ingress_options import parse_args
from benchmarks.machine import ensure_python_multipart, ensure_wrk, machine_info, pinned
from benchmarks.procfs import (
    cpu_seconds,
    cpu_times,
    loaded_libraries,
    machine_busy,
    peak_rss_mb,
    process_tree,
    run_and_wait_seconds,
)
from benchmarks.rabbit import (
    BROKER_RETRIES,
    Vhost,
    broker_outage,
    broker_up,
    check_rabbitmq,
    drain_numbers,
    purge,
    queue_counts,
)
from benchmarks.report import RunResult, describe_run, medians, render, render_cores
from benchmarks.targets import (
    OTHER_CPUS,
    TARGET_CPU,
    Setup,
    run_wrk,
    settle,
    spool_left,
    start_target,
)
from schemas.topology import DEAD_QUEUE, USAGE_QUEUE

# --- runs ------------------------------------------------------------------------------------


def run_once(setup: Setup, target: str, repeat: int, attempt: int = 0) -> RunResult:
    args = setup.args
    label = f"{target}-{repeat}" + (f"-retry{attempt}" if attempt else "")
    result = RunResult(target, repeat)
    process, port, env = start_target(setup, target, label)
    checked = target != "bare"
    work = setup.tmp / label
    work.mkdir()
    try:
        # Warm-up on callbacks of its own, then let stragglers land and empty the queues.
        run_wrk(setup, port, setup.warmup_prefix, args.warmup, None, work / "warmup.json")
        if checked:
            settle(setup, target, env)
            purge(setup.vhost.url, [*setup.tenant_queues, USAGE_QUEUE, DEAD_QUEUE])
        pids = process_tree(process.pid)
        result.processes = len(pids)
        result.libraries = loaded_libraries(pids)
        rabbit = [setup.rabbit_pid] if setup.rabbit_pid else []
        user_before, sys_before = cpu_times(pids)
        sched_before = run_and_wait_seconds(pids)
        rabbit_before = cpu_seconds(rabbit)
        busy_before = machine_busy()
        ids_path = work / "answered.txt" if checked else None
        spy = None
        if setup.py_spy and target == "hookline":
            # With --workers N the parent only supervises: profile the first worker.
            spy = profile.start(
                setup.py_spy,
                pids[1] if len(pids) > 1 else pids[0],
                args.duration,
                work / "profile.raw",
            )
        summary, wrk_cpu = run_wrk(
            setup, port, setup.measured_prefix, args.duration, ids_path, work / "measured.json"
        )
        if spy is not None:
            _out, err = spy.communicate(timeout=args.duration + 30)
            result.profile = (
                profile.summarize(work / "profile.raw")
                if spy.returncode == 0
                else f"    profile: py-spy failed: {err.decode()[-300:]}"
            )
        busy_after = machine_busy()
        pids = process_tree(process.pid)
        user_after, sys_after = cpu_times(pids)
        sched_after = run_and_wait_seconds(pids)
        cpu = user_after - user_before + sys_after - sys_before
        rabbit_cpu = cpu_seconds(rabbit) - rabbit_before
        result.peak_rss_mb = peak_rss_mb(pids)
        if not process.alive():
            raise BenchError(f"{label} died during the run:\n{process.tail()}")

        seconds = summary["duration_us"] / 1e6
        ok = summary["ok"]
        result.wrk = summary
        result.accepted = ok
        result.accepted_per_s = ok / seconds
        result.p50_ms = summary["latency_us"]["p50"] / 1000
        result.p99_ms = summary["latency_us"]["p99"] / 1000
        result.cpu_us_per_accepted = cpu * 1e6 / ok if ok else float("inf")
        result.cpu_sys_us_per_accepted = (sys_after - sys_before) * 1e6 / ok if ok else 0.0
        result.wraps = summary["wraps"]
        result.non2xx = {str(k): v for k, v in summary["non2xx"].items()}
        # wrk calls request() once more than it sends: on thread 0, to inspect the script.
        result.unanswered_at_stop = max(0, summary["sent"] - 1 - summary["responses"])
        result.wrk_cpu_us_per_request = wrk_cpu * 1e6 / max(summary["responses"], 1)
        # Cores: CPU seconds per second of the measured run, machine-wide and per party.
        elapsed = (busy_after[1] - busy_before[1]) / CLK_TCK / (os.cpu_count() or 1)
        machine = (busy_after[0] - busy_before[0]) / CLK_TCK / max(elapsed, 1e-9)
        result.cores = {
            "machine": machine,
            "target": cpu / elapsed,
            "target_waiting": (sched_after[1] - sched_before[1]) / elapsed,
            "rabbitmq": rabbit_cpu / elapsed,
            "wrk": wrk_cpu / elapsed,
            "steal": (busy_after[2] - busy_before[2]) / CLK_TCK / max(elapsed, 1e-9),
        }
        result.cores["other"] = max(
            0.0, machine - result.cores["steal"] - (cpu + rabbit_cpu + wrk_cpu) / elapsed
        )
        if setup.rabbit_pid and checked:
            result.rabbitmq_cpu_us_per_accepted = rabbit_cpu * 1e6 / ok if ok else None
        if checked:
            check_delivery(setup, target, env, result, ids_path, summary)
    finally:
        process.stop()
        setup.processes.remove(process)
    if process.popen.returncode not in (0, -signal.SIGTERM) and target == "hookline":
        print(f"  note: {label} exited with {process.popen.returncode}", flush=True)
    with contextlib.suppress(OSError):
        lines = [line for line in process.log.read_text(errors="replace").splitlines() if line]
        result.log_lines = len(lines)
        result.log_sample = lines[:3]
        # A broker restart closes every connection with CONNECTION_FORCED; both publishing
        # targets log it. Their figures are then about an outage, not about them: run again.
        if any("CONNECTION_FORCED" in line for line in lines):
            raise BenchError(
                f"{label}: RabbitMQ closed the target's connection during the run "
                "(CONNECTION_FORCED: it was stopped or restarted)"
            )
    return result


def run_with_retries(setup: Setup, target: str, repeat: int, label: str) -> RunResult:
    """run_once; a run that RabbitMQ's going away spoiled is run again once it is back (on a
    shared broker other people restart it), at most BROKER_RETRIES times, and says so."""
    for attempt in range(BROKER_RETRIES + 1):
        try:
            result = run_once(setup, target, repeat, attempt)
        except Exception as exc:  # the AMQP client's errors are not all AMQPError subclasses
            if attempt == BROKER_RETRIES or not broker_outage(setup.args.amqp_url, exc):
                raise
            print(
                f"  {label} #{repeat}: RabbitMQ went away during the run "
                f"({str(exc).splitlines()[0][:100]}); running it again once it is back",
                flush=True,
            )
            deadline = time.monotonic() + 300
            while not broker_up(setup.args.amqp_url):
                if time.monotonic() > deadline:
                    raise BenchError("RabbitMQ did not come back within 5 minutes") from exc
                time.sleep(2)
            time.sleep(5)  # let it finish starting (vhosts, quorum queues)
            continue
        result.broker_retries = attempt
        return result
    raise AssertionError("unreachable")


def check_delivery(
    setup: Setup,
    target: str,
    env: dict[str, str],
    result: RunResult,
    ids_path: Path | None,
    summary: dict[str, Any],
) -> None:
    """Read every event back: each callback answered 2xx must be in a tenant queue, once."""
    assert ids_path is not None
    result.queued = settle(setup, target, env)
    counts = queue_counts(setup.vhost.url, [USAGE_QUEUE, DEAD_QUEUE])
    result.usage_queued, result.dead_lettered = counts[USAGE_QUEUE], counts[DEAD_QUEUE]
    result.spool_left = spool_left(setup, env) if target == "hookline" else 0
    answered_text = ids_path.read_text().split()
    answered = {int(x) for x in answered_text if x.isdigit()}
    if len(answered) != len(answered_text) or len(answered) != summary["ok"]:
        raise BenchError(
            f"{target}: {summary['ok']} answers 2xx but {len(answered)} distinct "
            "X-Request-Id echoed"
        )
    numbers, foreign = drain_numbers(setup.vhost.url, setup.tenant_queues)
    purge(setup.vhost.url, [USAGE_QUEUE, DEAD_QUEUE])
    delivered = set(numbers)
    result.loss = len(answered - delivered)
    result.duplicates = sum(n - 1 for n in numbers.values())
    result.delivered_unanswered = len(delivered - answered)
    result.foreign = foreign + sum(
        1
        for n in delivered
        if not setup.measured_first <= n < setup.measured_first + setup.measured_count
    )


# --- set-up ----------------------------------------------------------------------------------


def size_regions(args: argparse.Namespace) -> tuple[int, int]:
    """Callbacks for the warm-up and the measured run: --max-rate per second of each, so no
    MessageSid repeats below that rate (a repeat is reported as a wrap)."""
    per = args.threads
    warm = -(-int(args.max_rate * args.warmup) // per) * per
    measured = -(-int(args.max_rate * args.duration) // per) * per
    return warm, measured


def prepare(
    args: argparse.Namespace,
    tmp: Path,
    vhost: Vhost,
    rabbit_pid: int | None,
    naive_pythonpath: str | None,
) -> Setup:
    tenants = make_tenants()
    config = tmp / "hookline.toml"
    write_config(config, tenants)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update(
        HOOKLINE_CONFIG=str(config),
        HOOKLINE_AMQP_URL=vhost.url,
        HOOKLINE_DATA_DIR=str(tmp / "data-topology"),
        HOOKLINE_LOG_LEVEL="warning",
    )
    factory = CallbackFactory(tenants, secrets.token_hex(4))
    warm, measured = size_regions(args)
    factory.check(
        [0, 1, 9, 10, 12_345, warm + measured - 1, *range(100, 120)], "http://127.0.0.1:8080"
    )
    started = time.perf_counter()
    warmup_prefix, measured_prefix = tmp / "warmup", tmp / "measured"
    factory.write_slices(warmup_prefix, 0, warm, args.threads)
    factory.write_slices(measured_prefix, warm, measured, args.threads)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in tmp.glob("*.[0-9]*")) / 1e6
    print(
        f"callbacks: {warm + measured:,} signed in {elapsed:.1f} s ({size:.0f} MB): "
        f"{warm:,} for warm-ups, {measured:,} for measured runs "
        f"(enough up to {args.max_rate:,} callbacks/s; a repeat would be reported)",
        flush=True,
    )
    setup = Setup(
        args,
        tmp,
        config,
        vhost,
        tenants,
        factory,
        warmup_prefix,
        measured_prefix,
        warm,
        measured,
        rabbit_pid,
        naive_pythonpath,
    )
    print(setup.hookline_cli("topology", "declare", env=env).strip(), flush=True)
    return setup


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt, so the cleanup in ``finally`` runs either
    way (SIGINT too when a non-interactive shell started us with it ignored)."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, __doc__.splitlines()[0])
    started = time.strftime("%Y%m%d-%H%M%S")
    tmp = Path(tempfile.mkdtemp(prefix="hookline-bench-"))
    vhost = Vhost(args.amqp_url)
    setup: Setup | None = None
    results: list[RunResult] = []
    try:
        with terminate_as_interrupt():
            ensure_wrk()
            rabbit_version, rabbit_pid = check_rabbitmq(args.amqp_url)
            naive_pythonpath = ensure_python_multipart() if "naive" in args.targets else None
            info = machine_info(rabbit_version, "naive" in args.targets, naive_pythonpath)
            vhost.create()
            setup = prepare(args, tmp, vhost, rabbit_pid, naive_pythonpath)
            if args.profile:
                setup.py_spy = profile.find_py_spy(PYDEPS_DIR)
            labels = {t: t for t in args.targets}
            if args.workers > 1:
                labels["hookline"] = f"hookline x{args.workers}"
            print(
                f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s after a "
                f"{args.warmup:g} s warm-up, {args.repeats} repeat(s), vhost {vhost.name}; "
                f"hookline logs at {args.hookline_log_level} (HOOKLINE_LOG_LEVEL)",
                flush=True,
            )
            if args.pin:
                print(
                    f"pinned: targets on CPU {TARGET_CPU}; RabbitMQ (pid {rabbit_pid}) and "
                    f"wrk on CPU {','.join(map(str, sorted(OTHER_CPUS)))}",
                    flush=True,
                )
            with pinned(rabbit_pid if args.pin else None, OTHER_CPUS):
                for repeat in range(1, args.repeats + 1):
                    for target in args.targets:
                        result = run_with_retries(setup, target, repeat, labels[target])
                        results.append(result)
                        print(describe_run(result, labels[target]), flush=True)
    except BenchError as exc:
        print(f"ingress bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ingress bench: interrupted", file=sys.stderr)
        return 130
    finally:
        for process in list(setup.processes if setup else []):
            process.stop(timeout=5)
        vhost.delete()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    libs = {r.target: r.libraries for r in results}
    print()
    print(
        f"machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, "
        f"load {' '.join(info['loadavg'])} before the bench"
    )
    print(
        f"python {info['python']}, uvicorn {info['uvicorn']}, starlette {info['starlette']}, "
        f"uvloop {info['uvloop']}, httptools {info['httptools']}, aio-pika {info['aio-pika']}, "
        f"python-multipart {info['python-multipart']} (naive only), {info['wrk']}"
    )
    print(
        "event loop / HTTP parser in use (mapped in the target): "
        + ", ".join(
            f"{t}: {'uvloop' if lib.get('uvloop') else 'asyncio'}/"
            f"{'httptools' if lib.get('httptools') else 'h11'}"
            for t, lib in libs.items()
        )
    )
    print(f"RabbitMQ {info['rabbitmq']}: persistent messages, publisher confirms, quorum queues")
    print(
        f"hookline: HOOKLINE_LOG_LEVEL={args.hookline_log_level} (no per-callback log line)"
        if args.hookline_log_level in ("warning", "error")
        else f"hookline: HOOKLINE_LOG_LEVEL={args.hookline_log_level} (one log line per callback)"
    )
    print()
    print(
        f"medians of {args.repeats} run(s), {args.connections} connections, "
        f"{args.duration:g} s each; (x) = ratio to naive; loss and dup summed over runs"
    )
    print(render(results, labels))
    print()
    print("where the CPU went during the measured runs (medians, in cores = CPU s per s):")
    print(render_cores(results, labels))
    table = medians(results)
    failures = [
        r
        for r in results
        if r.loss or r.duplicates or r.spool_left or (r.wraps and r.loss is not None)
    ]
    out = Path(tempfile.gettempdir()) / f"hookline-bench-ingress-{started}.json"
    out.write_bytes(
        orjson.dumps(
            {
                "args": {k: v for k, v in vars(args).items()},
                "machine": info,
                "medians": table,
                "runs": [asdict(r) for r in results],
            },
            option=orjson.OPT_INDENT_2,
        )
    )
    print(f"raw results: {out}")
    if failures:
        print(
            "FAILED: loss, duplicates, spool left or repeated callbacks in "
            + ", ".join(f"{labels[r.target]} #{r.repeat}" for r in failures)
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
