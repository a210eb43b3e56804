"""The ingress bench's targets: its set-up, starting a target process, and one wrk run.

Used by benchmarks/ingress.py (see there for what the bench measures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks.callbacks import CallbackFactory, Tenant
from benchmarks.common import LUA_SCRIPT, ROOT, STATUS_PATH, BenchError
from benchmarks.procfs import Process, free_port, port_open
from benchmarks.rabbit import Vhost, queue_counts
from schemas.topology import tenant_queue

# --pin: the target alone on one CPU, everything else the bench runs on the rest.
TARGET_CPU: Final = 0
OTHER_CPUS: Final = set(range(1, os.cpu_count() or 2)) or {0}


@dataclass
class Setup:
    args: argparse.Namespace
    tmp: Path
    config: Path
    vhost: Vhost
    tenants: list[Tenant]
    factory: CallbackFactory
    warmup_prefix: Path
    measured_prefix: Path
    measured_first: int
    measured_count: int
    rabbit_pid: int | None
    naive_pythonpath: str | None
    processes: list[Process] = field(default_factory=list)
    py_spy: str | None = None  # --profile

    @property
    def tenant_queues(self) -> list[str]:
        return [tenant_queue(t.id) for t in self.tenants]

    def hookline_env(self, port: int, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
        env.update(
            HOOKLINE_CONFIG=str(self.config),
            HOOKLINE_AMQP_URL=self.vhost.url,
            HOOKLINE_DATA_DIR=str(data_dir),
            HOOKLINE_PUBLIC_URL=f"http://127.0.0.1:{port}",
            HOOKLINE_LOG_LEVEL=self.args.hookline_log_level,
            HOOKLINE_LOG_FORMAT="json",
            HOOKLINE_ADMIN_LISTEN=f"127.0.0.1:{free_port()}",
        )
        return env

    def hookline_cli(self, *argv: str, env: dict[str, str]) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise BenchError(
                f"hookline {' '.join(argv)} failed: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        return result.stdout


def start_target(setup: Setup, target: str, label: str) -> tuple[Process, int, dict[str, str]]:
    port = free_port()
    data_dir = setup.tmp / f"data-{label}"
    data_dir.mkdir()
    env = setup.hookline_env(port, data_dir)
    if target == "hookline":
        argv = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(setup.args.workers),
        ]
    else:
        argv = [sys.executable, "-m", "benchmarks.baselines", target, "--port", str(port)]
        if target == "naive" and setup.naive_pythonpath:
            env["PYTHONPATH"] = setup.naive_pythonpath
    if setup.args.pin:
        argv = ["taskset", "-c", str(TARGET_CPU), *argv]  # its worker processes inherit it
    process = Process(label, argv, env, setup.tmp / f"{label}.log")
    setup.processes.append(process)
    deadline = time.monotonic() + 60
    ready_needed = 3 * setup.args.workers if target == "hookline" else 1
    ready = 0
    while ready < ready_needed:
        if not process.alive():
            raise BenchError(f"{label} exited at start-up:\n{process.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{label} not ready after 60 s:\n{process.tail()}")
        if target == "hookline":
            try:
                # /readyz is on the admin listener (HOOKLINE_ADMIN_LISTEN), not the public port.
                admin = env["HOOKLINE_ADMIN_LISTEN"]
                with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                    ready += r.status == 200
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        elif port_open(port):
            ready += 1
        else:
            time.sleep(0.2)
    return process, port, env


def run_wrk(
    setup: Setup, port: int, prefix: Path, seconds: float, ids_path: Path | None, summary_path: Path
) -> tuple[dict[str, Any], float]:
    """One wrk run; its JSON summary and wrk's own CPU seconds."""
    args = setup.args
    env = dict(os.environ, BENCH_SUMMARY=str(summary_path), BENCH_IDS=str(ids_path or ""))
    argv = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "60s",
        "-s",
        str(LUA_SCRIPT),
        f"http://127.0.0.1:{port}{STATUS_PATH}",
        "--",
        str(prefix),
    ]
    if args.pin:
        argv = ["taskset", "-c", ",".join(map(str, sorted(OTHER_CPUS))), *argv]
    popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _pid, status, usage = os.wait4(popen.pid, 0)
    except BaseException:
        popen.kill()
        popen.wait()
        raise
    popen.returncode = os.waitstatus_to_exitcode(status)
    output = popen.stdout.read().decode(errors="replace") if popen.stdout else ""
    if popen.returncode != 0 or not summary_path.exists():
        raise BenchError(f"wrk failed ({popen.returncode}):\n{output[-2000:]}")
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary, usage.ru_utime + usage.ru_stime


def spool_left(setup: Setup, env: dict[str, str]) -> int:
    out = setup.hookline_cli("spool", "status", env=env)
    match = re.search(r"total: (\d+) event", out)
    return int(match.group(1)) if match else 0


def settle(setup: Setup, target: str, env: dict[str, str], timeout: float = 180) -> int:
    """Wait until the tenant queues stop growing and (hookline) the spool is empty."""
    deadline = time.monotonic() + timeout
    last, stable = -1, 0
    while time.monotonic() < deadline:
        total = sum(queue_counts(setup.vhost.url, setup.tenant_queues).values())
        stable = stable + 1 if total == last else 0
        last = total
        if stable >= 3 and (target != "hookline" or spool_left(setup, env) == 0):
            return total
        time.sleep(0.5)
    raise BenchError(f"{target}: queues still growing or spool not empty after {timeout:.0f} s")
