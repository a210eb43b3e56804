"""Ingress bench: hookline against a bare endpoint and a naive handler, with a zero-loss check.

    .venv/bin/python -m tests.bench.ingress [--duration 10] [--connections 64] [--repeats 3]
        [--workers 1] [--only hookline,bare,naive]

Drives each target with wrk (installed with apt-get when missing) POSTing distinct, validly
signed Twilio message-status callbacks (10 tenants, a unique MessageSid each) and measures
accepted/s, p50/p99 latency, the target's CPU per accepted callback (user + sys of its processes
from /proc), and its peak RSS. hookline and the naive handler publish to a real RabbitMQ, in a
throwaway vhost with hookline's topology; after each run the bench reads every event back from
the ten tenant queues and checks that each callback answered 2xx is there (loss) exactly once
(duplicates). Targets, each a fresh process per repeat, on 127.0.0.1:

* bare: tests/bench/baselines.py, a Starlette endpoint that reads the body and answers 200;
* naive: tests/bench/baselines.py, request.form() + RequestValidator + one confirmed aio-pika
  publish per request;
* hookline: ``python -m gateway.cli serve --workers W`` (HOOKLINE_LOG_LEVEL=warning by default).

Repeats are interleaved (bare, naive, hookline, bare, ...) and the table shows medians.

How loss is counted: every request carries X-Request-Id = its callback number (hookline echoes
it, and so does the naive baseline), the wrk script records the ids answered 2xx, and every
MessageSid encodes its callback number. loss = answered 2xx but absent from the tenant queues;
duplicates = present more than once. When wrk stops, up to --connections requests are still in
flight: the targets finish them, so their events are in the queues without a 2xx seen by wrk
("delivered but unanswered"); that is expected and neither loss nor duplication.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import aio_pika
import orjson
from twilio.request_validator import RequestValidator

from schemas.topology import DEAD_QUEUE, USAGE_QUEUE, tenant_queue
from tests.bench import profile
from tests.support.samples import message_status, sid

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPT = Path(__file__).with_name("ingress.lua")
STATUS_PATH = "/twilio/messaging/status"
# Callbacks are signed over the public URL WITHOUT a port: every target is reached on its own
# port and validates http://127.0.0.1:<port>/..., and both hookline and RequestValidator accept
# the signature of the URL with its port removed (as Twilio's libraries do). That is also the
# production case: Twilio signs https://hooks.example.com/... and the URL matches first try.
SIGNED_URL = f"http://127.0.0.1{STATUS_PATH}"
TENANTS = 10
TARGETS = ("bare", "naive", "hookline")
PYDEPS_DIR = Path(tempfile.gettempdir()) / "hookline-bench-pydeps"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A precondition or a step failed: printed as one message, exit status 2."""


# --- callbacks ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    account_sid: str
    token: str


def make_tenants() -> list[Tenant]:
    return [Tenant(f"bench-{i}", "AC" + secrets.token_hex(16), secrets.token_hex(16))
            for i in range(TENANTS)]


def write_config(path: Path, tenants: Sequence[Tenant]) -> None:
    lines = ["# written by tests/bench/ingress.py; deleted after the run", ""]
    for tenant in tenants:
        lines += ["[[tenants]]", f'id = "{tenant.id}"', "", "[tenants.twilio]",
                  f'account_sid = "{tenant.account_sid}"', f'auth_token = "{tenant.token}"', ""]
    path.write_text("\n".join(lines))


class CallbackFactory:
    """Signed message-status callbacks, number n for tenant n % 10, MessageSid SM<n as hex>.

    Only the two SIDs change between callbacks of one tenant, so the body and the string Twilio
    signs are templates split at the SID; each callback costs one HMAC-SHA1 from a precomputed
    key state. ``check`` holds the result to twilio's own RequestValidator.
    """

    _MARK = sid("SM", 0)

    def __init__(self, tenants: Sequence[Tenant], nonce: str) -> None:
        self.tenants = list(tenants)
        self.nonce = nonce
        self._keys = [hmac.new(t.token.encode(), digestmod=hashlib.sha1) for t in tenants]
        self._signed: list[list[str]] = []
        self._body: list[list[str]] = []
        for tenant in tenants:
            params = message_status(tenant.account_sid, 0)
            signed = SIGNED_URL + "".join(name + params[name] for name in sorted(params))
            body = urlencode(params)
            if signed.count(self._MARK) != 2 or body.count(self._MARK) != 2:
                raise BenchError("callback template: expected the MessageSid and SmsSid once each")
            self._signed.append(signed.split(self._MARK))
            self._body.append(body.split(self._MARK))

    def params(self, n: int) -> dict[str, str]:
        return message_status(self.tenants[n % TENANTS].account_sid, n)

    def token(self, n: int) -> str:
        return f"{self.nonce}-{n}"

    def line(self, n: int) -> str:
        """``id signature idempotency-token body`` for the wrk script."""
        t = n % TENANTS
        message_sid = sid("SM", n)
        mac = self._keys[t].copy()
        mac.update(message_sid.join(self._signed[t]).encode())
        signature = base64.b64encode(mac.digest()).decode()
        return f"{n} {signature} {self.token(n)} {message_sid.join(self._body[t])}\n"

    def check(self, numbers: Sequence[int], public_url: str) -> None:
        """Fast signatures == the official ones, and RequestValidator accepts them at the URL the
        targets validate (with the port)."""
        for n in numbers:
            tenant = self.tenants[n % TENANTS]
            params = self.params(n)
            validator = RequestValidator(tenant.token)
            _id, signature, _token, body = self.line(n).split()
            official = validator.compute_signature(SIGNED_URL, params)
            if signature != official:
                raise BenchError(f"callback {n}: fast signature {signature} != official {official}")
            if body != urlencode(params):
                raise BenchError(f"callback {n}: templated body differs from urlencode(params)")
            if not validator.validate(public_url + STATUS_PATH, params, signature):
                raise BenchError(f"callback {n}: RequestValidator.validate refuses it")

    def write_slices(self, prefix: Path, first: int, count: int, threads: int) -> None:
        """``prefix.<i>`` for wrk thread i: disjoint, contiguous ranges of [first, first+count)."""
        per = count // threads
        for i in range(threads):
            start = first + i * per
            with open(f"{prefix}.{i}", "w") as out:
                out.writelines(self.line(n) for n in range(start, start + per))


def number_of(subject: str) -> int | None:
    """The callback number encoded in a MessageSid, None for anything else."""
    if len(subject) == 34 and subject.startswith("SM"):
        with contextlib.suppress(ValueError):
            return int(subject[2:], 16)
    return None


# --- processes and /proc -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def cpu_times(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) seconds of the processes (all threads) and of their reaped children."""
    user = system = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = _stat_fields(pid)  # utime stime cutime cstime at 11..14
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids: Sequence[int]) -> float:
    return sum(cpu_times(pids))


def peak_rss_mb(pids: Sequence[int]) -> float:
    kib = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kib += int(line.split()[1])
    return kib / 1024


def run_and_wait_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """Seconds on a CPU and seconds runnable but waiting for one, summed over all threads
    (/proc/<pid>/task/<tid>/schedstat): waiting time says a process wanted more CPU."""
    run = wait = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    on_cpu, queued, _slices = (task / "schedstat").read_text().split()
                    run += int(on_cpu)
                    wait += int(queued)
    return run / 1e9, wait / 1e9


def machine_busy() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all CPUs since boot; steal (time the hypervisor gave
    to other guests) counts as busy."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle, sum(values[:8]), values[7]


def loaded_libraries(pids: Sequence[int]) -> dict[str, bool]:
    """Whether uvloop and httptools are mapped into the target: what uvicorn's "auto" picked."""
    maps = ""
    for pid in pids:
        with contextlib.suppress(OSError):
            maps += Path(f"/proc/{pid}/maps").read_text()
    return {"uvloop": "/uvloop/" in maps, "httptools": "/httptools/" in maps}


class Process:
    """A child in its own session (so Ctrl-C reaches only us), killed with its whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()
        # uvicorn workers share the group: make sure none outlives the supervisor.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


# --- RabbitMQ ----------------------------------------------------------------------------------

def rabbitmqctl(*args: str, check: bool = True) -> str:
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                            timeout=60)
    if check and result.returncode != 0:
        raise BenchError(f"rabbitmqctl {' '.join(args)} failed: "
                         f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def check_rabbitmq(amqp_url: str) -> tuple[str, int | None]:
    """RabbitMQ version and beam.smp pid; a clear error when it is not there."""
    parts = urlsplit(amqp_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex((host, port)) != 0:
            raise BenchError(f"RabbitMQ is not reachable at {host}:{port} (start it, e.g. "
                             "`service rabbitmq-server start`, or pass --amqp-url)")
    if shutil.which("rabbitmqctl") is None:
        raise BenchError("rabbitmqctl not found: the bench creates its vhost with it (run as "
                         "root on the RabbitMQ host)")
    status = rabbitmqctl("status", check=False)
    if "RabbitMQ version" not in status:
        raise BenchError(f"`rabbitmqctl status` does not answer: {status.strip()[:300]}")
    version = re.search(r"RabbitMQ version: (\S+)", status)
    pid = re.search(r"OS PID: (\d+)", status)
    return (version.group(1) if version else "?"), (int(pid.group(1)) if pid else None)


class Vhost:
    def __init__(self, amqp_url: str) -> None:
        self.name = f"hookline-bench-{secrets.token_hex(4)}"
        parts = urlsplit(amqp_url)
        self.user = parts.username or "guest"
        self.url = urlunsplit((parts.scheme, parts.netloc, "/" + self.name, "", ""))
        self.created = False

    def create(self) -> None:
        rabbitmqctl("add_vhost", self.name)
        self.created = True
        rabbitmqctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        """Delete the vhost; if RabbitMQ is away (restarting), wait for it up to a minute
        rather than leave the vhost and its queues behind."""
        if not self.created:
            return
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.name],
                                  capture_output=True, text=True, timeout=60)
            if done.returncode == 0 or "does not exist" in done.stderr + done.stdout:
                self.created = False
                return
            if time.monotonic() > deadline:
                print(f"could not delete vhost {self.name}: "
                      f"{(done.stderr or done.stdout).strip()[:200]}", file=sys.stderr)
                return
            time.sleep(3)


async def _with_channel(url: str, work: Callable[[Any], Any]) -> Any:
    connection = await aio_pika.connect(url, timeout=10)
    async with connection:
        channel = await connection.channel()
        return await work(channel)


def queue_counts(url: str, names: Sequence[str]) -> dict[str, int]:
    async def work(channel: Any) -> dict[str, int]:
        counts = {}
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            counts[name] = int(queue.declaration_result.message_count or 0)
        return counts

    result: dict[str, int] = asyncio.run(_with_channel(url, work))
    return result


def purge(url: str, names: Sequence[str]) -> None:
    async def work(channel: Any) -> None:
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            await queue.purge()

    asyncio.run(_with_channel(url, work))


async def _drain_queue(channel: Any, name: str, numbers: Counter[int]) -> int:
    """Consume (auto-ack) every message of one queue into ``numbers``; returns how many carried
    no bench MessageSid."""
    queue = await channel.declare_queue(name, passive=True)
    expected = int(queue.declaration_result.message_count or 0)
    if not expected:
        return 0
    got = foreign = 0
    finished = asyncio.Event()
    last = time.monotonic()

    async def on_message(message: Any) -> None:
        nonlocal got, foreign, last
        got += 1
        last = time.monotonic()
        doc = orjson.loads(message.body)
        subject = doc.get("subject") if isinstance(doc, dict) else None
        n = number_of(subject) if isinstance(subject, str) else None
        if n is None:
            foreign += 1
        else:
            numbers[n] += 1
        if got >= expected:
            finished.set()

    tag = await queue.consume(on_message, no_ack=True)
    while not finished.is_set() and time.monotonic() - last < 10:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), 1)
    await queue.cancel(tag)
    if got < expected:
        raise BenchError(f"{name}: read {got} of {expected} messages")
    return foreign


def drain_numbers(url: str, names: Sequence[str]) -> tuple[Counter[int], int]:
    """Consume every message of the queues: callback numbers seen, and how many messages
    carried no bench MessageSid."""

    async def work(channel: Any) -> tuple[Counter[int], int]:
        numbers: Counter[int] = Counter()
        foreign = 0
        for name in names:
            foreign += await _drain_queue(channel, name, numbers)
        return numbers, foreign

    result: tuple[Counter[int], int] = asyncio.run(_with_channel(url, work))
    return result


# --- targets -----------------------------------------------------------------------------------

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
        env.update(HOOKLINE_CONFIG=str(self.config), HOOKLINE_AMQP_URL=self.vhost.url,
                   HOOKLINE_DATA_DIR=str(data_dir), HOOKLINE_PUBLIC_URL=f"http://127.0.0.1:{port}",
                   HOOKLINE_LOG_LEVEL=self.args.hookline_log_level, HOOKLINE_LOG_FORMAT="json")
        return env

    def hookline_cli(self, *argv: str, env: dict[str, str]) -> str:
        result = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise BenchError(f"hookline {' '.join(argv)} failed: "
                             f"{(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout


def start_target(setup: Setup, target: str, label: str) -> tuple[Process, int, dict[str, str]]:
    port = free_port()
    data_dir = setup.tmp / f"data-{label}"
    data_dir.mkdir()
    env = setup.hookline_env(port, data_dir)
    if target == "hookline":
        argv = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
                "--workers", str(setup.args.workers)]
    else:
        argv = [sys.executable, "-m", "tests.bench.baselines", target, "--port", str(port)]
        if target == "naive" and setup.naive_pythonpath:
            env["PYTHONPATH"] = setup.naive_pythonpath
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
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    ready += r.status == 200
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        elif port_open(port):
            ready += 1
        else:
            time.sleep(0.2)
    return process, port, env


def run_wrk(setup: Setup, port: int, prefix: Path, seconds: float,
            ids_path: Path | None, summary_path: Path) -> tuple[dict[str, Any], float]:
    """One wrk run; its JSON summary and wrk's own CPU seconds."""
    args = setup.args
    env = dict(os.environ, BENCH_SUMMARY=str(summary_path), BENCH_IDS=str(ids_path or ""))
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds:g}s", "--latency",
            "--timeout", "60s", "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}{STATUS_PATH}",
            "--", str(prefix)]
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


@dataclass
class RunResult:
    target: str
    repeat: int
    accepted: int = 0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_accepted: float = 0.0
    cpu_sys_us_per_accepted: float = 0.0  # the kernel's part of cpu_us_per_accepted
    peak_rss_mb: float = 0.0
    loss: int | None = None
    duplicates: int | None = None
    queued: int | None = None
    usage_queued: int | None = None
    dead_lettered: int | None = None
    delivered_unanswered: int | None = None
    foreign: int | None = None
    spool_left: int | None = None
    wraps: int = 0
    non2xx: dict[str, int] = field(default_factory=dict)
    unanswered_at_stop: int = 0
    wrk_cpu_us_per_request: float = 0.0
    rabbitmq_cpu_us_per_accepted: float | None = None
    # machine, target, target_waiting (runnable, no CPU free), rabbitmq, wrk, other
    cores: dict[str, float] = field(default_factory=dict)
    processes: int = 1
    libraries: dict[str, bool] = field(default_factory=dict)
    log_lines: int = 0  # what the target logged (start-up to shutdown), at its log level
    log_sample: list[str] = field(default_factory=list)
    wrk: dict[str, Any] = field(default_factory=dict)
    profile: str = ""  # --profile: py-spy summary of the measured run
    broker_retries: int = 0  # runs thrown away because RabbitMQ went away during them


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
            spy = profile.start(setup.py_spy, pids[1] if len(pids) > 1 else pids[0],
                                args.duration, work / "profile.raw")
        summary, wrk_cpu = run_wrk(setup, port, setup.measured_prefix, args.duration, ids_path,
                                   work / "measured.json")
        if spy is not None:
            _out, err = spy.communicate(timeout=args.duration + 30)
            result.profile = (profile.summarize(work / "profile.raw") if spy.returncode == 0
                              else f"    profile: py-spy failed: {err.decode()[-300:]}")
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
            "machine": machine, "target": cpu / elapsed,
            "target_waiting": (sched_after[1] - sched_before[1]) / elapsed,
            "rabbitmq": rabbit_cpu / elapsed, "wrk": wrk_cpu / elapsed,
            "steal": (busy_after[2] - busy_before[2]) / CLK_TCK / max(elapsed, 1e-9),
        }
        result.cores["other"] = max(0.0, machine - result.cores["steal"]
                                    - (cpu + rabbit_cpu + wrk_cpu) / elapsed)
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
            raise BenchError(f"{label}: RabbitMQ closed the target's connection during the run "
                             "(CONNECTION_FORCED: it was stopped or restarted)")
    return result


BROKER_RETRIES = 3
_OUTAGE_MARKS = ("Connect call failed", "Connection refused", "CONNECTION_FORCED",
                 "Connection reset", "connection reset", "closed", "not reachable")


def broker_up(amqp_url: str) -> bool:
    parts = urlsplit(amqp_url)
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((parts.hostname or "127.0.0.1", parts.port or 5672)) == 0


def broker_outage(amqp_url: str, exc: BaseException) -> bool:
    """Whether a failed run failed because RabbitMQ went away (a shared broker restarted)."""
    if not broker_up(amqp_url):
        return True
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return any(isinstance(e, ConnectionError | aio_pika.exceptions.AMQPError) for e in chain) \
        or any(mark in str(e) for e in chain for mark in _OUTAGE_MARKS)


def run_with_retries(setup: Setup, target: str, repeat: int, label: str) -> RunResult:
    """run_once; a run that RabbitMQ's going away spoiled is run again once it is back (on a
    shared broker other people restart it), at most BROKER_RETRIES times, and says so."""
    for attempt in range(BROKER_RETRIES + 1):
        try:
            result = run_once(setup, target, repeat, attempt)
        except Exception as exc:  # the AMQP client's errors are not all AMQPError subclasses
            if attempt == BROKER_RETRIES or not broker_outage(setup.args.amqp_url, exc):
                raise
            print(f"  {label} #{repeat}: RabbitMQ went away during the run "
                  f"({str(exc).splitlines()[0][:100]}); running it again once it is back",
                  flush=True)
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


def check_delivery(setup: Setup, target: str, env: dict[str, str], result: RunResult,
                   ids_path: Path | None, summary: dict[str, Any]) -> None:
    """Read every event back: each callback answered 2xx must be in a tenant queue, once."""
    assert ids_path is not None
    result.queued = settle(setup, target, env)
    counts = queue_counts(setup.vhost.url, [USAGE_QUEUE, DEAD_QUEUE])
    result.usage_queued, result.dead_lettered = counts[USAGE_QUEUE], counts[DEAD_QUEUE]
    result.spool_left = spool_left(setup, env) if target == "hookline" else 0
    answered_text = ids_path.read_text().split()
    answered = {int(x) for x in answered_text if x.isdigit()}
    if len(answered) != len(answered_text) or len(answered) != summary["ok"]:
        raise BenchError(f"{target}: {summary['ok']} answers 2xx but {len(answered)} distinct "
                         "X-Request-Id echoed")
    numbers, foreign = drain_numbers(setup.vhost.url, setup.tenant_queues)
    purge(setup.vhost.url, [USAGE_QUEUE, DEAD_QUEUE])
    delivered = set(numbers)
    result.loss = len(answered - delivered)
    result.duplicates = sum(n - 1 for n in numbers.values())
    result.delivered_unanswered = len(delivered - answered)
    result.foreign = foreign + sum(
        1 for n in delivered
        if not setup.measured_first <= n < setup.measured_first + setup.measured_count)


# --- set-up --------------------------------------------------------------------------------

def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and we are not root: `sudo apt-get install -y wrk`")
    print("wrk not found: apt-get install -y wrk", flush=True)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(argv, capture_output=True, text=True,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    path = shutil.which("wrk")
    if not path:
        raise BenchError("apt-get installed wrk but it is not on PATH")
    return path


def ensure_python_multipart() -> str | None:
    """Starlette's request.form() needs python-multipart, which hookline itself does not use.

    When the project environment lacks it, it is installed for the naive baseline only, into
    a directory of its own on that process's PYTHONPATH: the project environment is untouched.
    """
    probe = "import python_multipart"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0:
        return None
    env = dict(os.environ, PYTHONPATH=str(PYDEPS_DIR))
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode:
        print(f"python-multipart (for the naive baseline's request.form()) -> {PYDEPS_DIR}",
              flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target",
                               str(PYDEPS_DIR), "python-multipart"], capture_output=True, text=True)
        if done.returncode != 0:
            raise BenchError(f"pip install python-multipart failed: {done.stderr.strip()[-500:]}")
    return str(PYDEPS_DIR)


def version_of(package: str, pythonpath: str | None = None) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        if pythonpath:
            for dist in importlib.metadata.distributions(path=[pythonpath]):
                if dist.metadata["Name"].lower() == package.lower():
                    return str(dist.version)
        return "not installed"


def machine_info(rabbit_version: str, naive: bool, naive_pythonpath: str | None) -> dict[str, Any]:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": version_of("uvicorn"), "uvloop": version_of("uvloop"),
        "httptools": version_of("httptools"), "starlette": version_of("starlette"),
        "aio-pika": version_of("aio-pika"), "aiormq": version_of("aiormq"),
        "orjson": version_of("orjson"), "twilio": version_of("twilio"),
        "python-multipart": version_of("python-multipart", naive_pythonpath) if naive else "-",
        "wrk": (wrk.stdout or wrk.stderr).split("Copyright")[0].strip(),
        "rabbitmq": rabbit_version, "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def size_regions(args: argparse.Namespace) -> tuple[int, int]:
    """Callbacks for the warm-up and the measured run: --max-rate per second of each, so no
    MessageSid repeats below that rate (a repeat is reported as a wrap)."""
    per = args.threads
    warm = -(-int(args.max_rate * args.warmup) // per) * per
    measured = -(-int(args.max_rate * args.duration) // per) * per
    return warm, measured


def prepare(args: argparse.Namespace, tmp: Path, vhost: Vhost, rabbit_pid: int | None,
            naive_pythonpath: str | None) -> Setup:
    tenants = make_tenants()
    config = tmp / "hookline.toml"
    write_config(config, tenants)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKLINE_")}
    env.update(HOOKLINE_CONFIG=str(config), HOOKLINE_AMQP_URL=vhost.url,
               HOOKLINE_DATA_DIR=str(tmp / "data-topology"), HOOKLINE_LOG_LEVEL="warning")
    factory = CallbackFactory(tenants, secrets.token_hex(4))
    warm, measured = size_regions(args)
    factory.check([0, 1, 9, 10, 12_345, warm + measured - 1, *range(100, 120)],
                  "http://127.0.0.1:8080")
    started = time.perf_counter()
    warmup_prefix, measured_prefix = tmp / "warmup", tmp / "measured"
    factory.write_slices(warmup_prefix, 0, warm, args.threads)
    factory.write_slices(measured_prefix, warm, measured, args.threads)
    elapsed = time.perf_counter() - started
    size = sum(p.stat().st_size for p in tmp.glob("*.[0-9]*")) / 1e6
    print(f"callbacks: {warm + measured:,} signed in {elapsed:.1f} s ({size:.0f} MB): "
          f"{warm:,} for warm-ups, {measured:,} for measured runs "
          f"(enough up to {args.max_rate:,} callbacks/s; a repeat would be reported)", flush=True)
    setup = Setup(args, tmp, config, vhost, tenants, factory, warmup_prefix, measured_prefix,
                  warm, measured, rabbit_pid, naive_pythonpath)
    print(setup.hookline_cli("topology", "declare", env=env).strip(), flush=True)
    return setup


# --- report ----------------------------------------------------------------------------------

METRICS = (  # attribute, header, format, lower is better
    ("accepted_per_s", "accepted/s", "{:,.0f}", False),
    ("p50_ms", "p50 ms", "{:.2f}", True),
    ("p99_ms", "p99 ms", "{:.2f}", True),
    ("cpu_us_per_accepted", "CPU us/acc", "{:.0f}", True),
    ("peak_rss_mb", "RSS MB", "{:.0f}", True),
)


def medians(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for target in dict.fromkeys(r.target for r in results):
        runs = [r for r in results if r.target == target]
        out[target] = {name: statistics.median(getattr(r, name) for r in runs)
                       for name, *_ in METRICS}
        out[target]["cpu_sys_us_per_accepted"] = statistics.median(
            r.cpu_sys_us_per_accepted for r in runs)
        out[target]["wrk_cpu_us_per_request"] = statistics.median(
            r.wrk_cpu_us_per_request for r in runs)
        for key in CORES:
            out[target][f"cores_{key}"] = statistics.median(r.cores.get(key, 0.0) for r in runs)
        rabbit = [r.rabbitmq_cpu_us_per_accepted for r in runs
                  if r.rabbitmq_cpu_us_per_accepted is not None]
        if rabbit:
            out[target]["rabbitmq_cpu_us_per_accepted"] = statistics.median(rabbit)
    return out


CORES = ("target", "target_waiting", "rabbitmq", "wrk", "other", "steal", "machine")


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_cores(results: Sequence[RunResult], labels: dict[str, str]) -> str:
    """Where the machine's CPU went during the measured runs (medians), in cores."""
    rows = [["target", "target cores", "waiting for a CPU", "rabbitmq", "wrk", "other",
             "steal", f"machine (of {os.cpu_count()})", "rabbitmq us/acc", "wrk us/req"]]
    for target, f in medians(results).items():
        rabbit = f.get("rabbitmq_cpu_us_per_accepted")
        rows.append([labels[target], *(f"{f['cores_' + key]:.2f}" for key in CORES),
                     "-" if rabbit is None else f"{rabbit:.0f}",
                     f"{f['wrk_cpu_us_per_request']:.0f}"])
    return format_table(rows)


def render(results: Sequence[RunResult], labels: dict[str, str]) -> str:
    table = medians(results)
    base = table.get("naive")
    header = ["target", *(h for _, h, _, _ in METRICS), "loss", "dup"]
    rows = [header]
    for target, figures in table.items():
        runs = [r for r in results if r.target == target]
        row = [labels[target]]
        for name, _h, fmt, _lower in METRICS:
            cell = fmt.format(figures[name])
            if base and base.get(name):
                cell += f" ({figures[name] / base[name]:.2f}x)"
            row.append(cell)
        if runs[0].loss is None:
            row += ["-", "-"]
        else:
            row += [str(sum(r.loss or 0 for r in runs)), str(sum(r.duplicates or 0 for r in runs))]
        rows.append(row)
    return format_table(rows)


def describe_run(r: RunResult, label: str) -> str:
    text = (f"  {label} #{r.repeat}: {r.accepted_per_s:,.0f} accepted/s, p50 {r.p50_ms:.2f} ms, "
            f"p99 {r.p99_ms:.2f} ms, {r.cpu_us_per_accepted:.0f} us CPU/acc "
            f"({r.cpu_sys_us_per_accepted:.0f} sys), "
            f"RSS {r.peak_rss_mb:.0f} MB ({r.processes} proc)")
    c = r.cores
    text += (f"\n      cores: target {c['target']:.2f} (+{c['target_waiting']:.2f} waiting for a "
             f"CPU), rabbitmq {c['rabbitmq']:.2f}, wrk {c['wrk']:.2f}, other {c['other']:.2f}, "
             f"steal {c['steal']:.2f}; "
             f"machine {c['machine']:.2f} of {os.cpu_count()}")
    if r.loss is not None:
        text += (f"\n      {r.accepted:,} answered 2xx, {r.queued:,} in tenant queues "
                 f"({r.usage_queued:,} in hookline.usage): loss {r.loss}, duplicates "
                 f"{r.duplicates}, {r.delivered_unanswered} delivered but unanswered at wrk's "
                 f"stop ({r.unanswered_at_stop} in flight), spool left {r.spool_left}")
    if r.non2xx:
        text += f"\n      non-2xx answers: {r.non2xx}"
    if r.log_lines:
        text += f"\n      {r.log_lines} log line(s), first: {r.log_sample[0][:160]}"
    if r.wraps and r.loss is not None:
        text += f"\n      WARNING: callbacks repeated ({r.wraps} wraps): raise --max-rate"
    elif r.wraps:
        text += f"\n      (callbacks repeated {r.wraps} times: harmless here, nothing is checked)"
    if c["other"] > 0.1 or c["steal"] > 0.1:
        text += (f"\n      WARNING: {c['other']:.2f} cores went to other processes and "
                 f"{c['steal']:.2f} to the hypervisor during this run: figures disturbed")
    if r.broker_retries:
        text += (f"\n      (run {r.broker_retries + 1} of this repeat: the earlier one(s) were "
                 "spoiled by RabbitMQ going away)")
    if r.profile:
        text += "\n" + r.profile
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="hookline serve --workers")
    parser.add_argument("--only", default=",".join(TARGETS),
                        help="comma-separated subset of bare,naive,hookline")
    parser.add_argument("--max-rate", type=int, default=40_000,
                        help="callbacks/s the pre-generated set covers without repeats")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/",
                        help="RabbitMQ; the bench works in a throwaway vhost of it")
    parser.add_argument("--hookline-log-level", default="warning",
                        choices=("debug", "info", "warning", "error"))
    parser.add_argument("--profile", action="store_true",
                        help="sample hookline with py-spy during each measured run and print "
                             "where its time went (the sampling slows it: figures disturbed)")
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
    args = parse_args(argv)
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
            print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s after a "
                  f"{args.warmup:g} s warm-up, {args.repeats} repeat(s), vhost {vhost.name}; "
                  f"hookline logs at {args.hookline_log_level} (HOOKLINE_LOG_LEVEL)", flush=True)
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
    print(f"machine: {info['nproc']} cores ({info['cpu']}), Linux {info['kernel']}, "
          f"load {' '.join(info['loadavg'])} before the bench")
    print(f"python {info['python']}, uvicorn {info['uvicorn']}, starlette {info['starlette']}, "
          f"uvloop {info['uvloop']}, httptools {info['httptools']}, aio-pika {info['aio-pika']}, "
          f"python-multipart {info['python-multipart']} (naive only), {info['wrk']}")
    print("event loop / HTTP parser in use (mapped in the target): " + ", ".join(
        f"{t}: {'uvloop' if lib.get('uvloop') else 'asyncio'}/"
        f"{'httptools' if lib.get('httptools') else 'h11'}" for t, lib in libs.items()))
    print(f"RabbitMQ {info['rabbitmq']}: persistent messages, publisher confirms, quorum queues")
    print(f"hookline: HOOKLINE_LOG_LEVEL={args.hookline_log_level} (no per-callback log line)"
          if args.hookline_log_level in ("warning", "error") else
          f"hookline: HOOKLINE_LOG_LEVEL={args.hookline_log_level} (one log line per callback)")
    print()
    print(f"medians of {args.repeats} run(s), {args.connections} connections, "
          f"{args.duration:g} s each; (x) = ratio to naive; loss and dup summed over runs")
    print(render(results, labels))
    print()
    print("where the CPU went during the measured runs (medians, in cores = CPU s per s):")
    print(render_cores(results, labels))
    table = medians(results)
    failures = [r for r in results
                if r.loss or r.duplicates or r.spool_left or (r.wraps and r.loss is not None)]
    out = Path(tempfile.gettempdir()) / f"hookline-bench-ingress-{started}.json"
    out.write_bytes(orjson.dumps({
        "args": {k: v for k, v in vars(args).items()}, "machine": info,
        "medians": table, "runs": [asdict(r) for r in results],
    }, option=orjson.OPT_INDENT_2))
    print(f"raw results: {out}")
    if failures:
        print("FAILED: loss, duplicates, spool left or repeated callbacks in "
              + ", ".join(f"{labels[r.target]} #{r.repeat}" for r in failures))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
