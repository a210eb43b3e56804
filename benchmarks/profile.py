"""Sampling profile of a bench target during its measured run (``--profile``), with py-spy.

py-spy samples the target from outside (https://github.com/benfred/py-spy); it is installed
into the bench's own directory when missing, never into the project. The summary groups the
main thread's samples by the module of the innermost frame (where the time is spent) and by a
few inclusive stages of hookline's callback path. Profiled runs are slower: read their CPU
figures from a run without --profile.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# Innermost-frame file fragment -> group, first match wins.
GROUPS = (
    ("gateway/broker/", "gateway.broker (AMQP publisher)"),
    ("gateway/http/", "gateway.http (routes, log line)"),
    ("gateway/providers/", "gateway.providers (verify, normalize)"),
    ("gateway/", "gateway (acceptance, spool, log, ...)"),
    ("schemas/", "schemas (event JSON, ids)"),
    ("uvicorn/", "uvicorn"),
    ("starlette/", "starlette"),
    ("asyncio/", "asyncio"),
    ("structlog/", "structlog"),
    ("aiormq/", "aiormq"),
    ("aio_pika/", "aio_pika"),
    ("pamqp/", "pamqp"),
    ("hmac.py", "hmac"),
)
# Function-name fragment -> stage, counted once per sample wherever it is on the stack.
STAGES = (
    ("CallbackRoute.__call__", "callback route, all of it"),
    ("raw_request", "read the request"),
    ("verify (", "verify the signature"),
    ("normalize (", "normalize"),
    ("Acceptor.accept", "make safe (publish and confirm)"),
    ("log_request", "log line and metrics"),
    ("RequestResponseCycle.send", "uvicorn: send the answer"),
    ("HttpToolsProtocol.data_received", "uvicorn: parse requests"),
    ("Link.data_received", "AMQP: read acks"),
    ("Link._flush", "AMQP: write frames"),
)
MAIN_THREAD_ROOT = "_run_module_as_main"


def find_py_spy(pydeps: Path) -> str:
    """py-spy on PATH, beside this interpreter, or pip-installed into ``pydeps``."""
    for candidate in (
        shutil.which("py-spy"),
        str(Path(sys.executable).with_name("py-spy")),
        str(pydeps / "bin" / "py-spy"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    print(f"py-spy not found: pip install --target {pydeps} py-spy", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(pydeps), "py-spy"],
        capture_output=True,
        text=True,
    )
    path = pydeps / "bin" / "py-spy"
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"cannot install py-spy: {done.stderr.strip()[-400:]}")
    return str(path)


def start(py_spy: str, pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """Record ``pid`` for ``seconds`` at 200 Hz into ``out`` (py-spy's raw format)."""
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarize(raw: Path, top: int = 12) -> str:
    """Main-thread self time by group, inclusive time by stage, and the top functions."""
    total = 0
    groups: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.startswith(MAIN_THREAD_ROOT) or not count.isdigit():
            continue  # other threads: the spool's, idle
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        groups[next((name for key, name in GROUPS if key in leaf), "other")] += n
        leaves[leaf] += n
        for key, name in STAGES:
            if any(key in frame for frame in frames):
                stages[name] += n
    if not total:
        return "    profile: no main-thread samples"
    out = [f"    profile: {total} main-thread samples; self time by module:"]
    out += [f"      {100 * n / total:5.1f}%  {name}" for name, n in groups.most_common()]
    out.append("    inclusive, by stage:")
    out += [
        f"      {100 * stages[name] / total:5.1f}%  {name}" for _, name in STAGES if stages[name]
    ]
    out.append(f"    top {top} functions (self):")
    out += [f"      {100 * n / total:5.1f}%  {name}" for name, n in leaves.most_common(top)]
    return "\n".join(out)
