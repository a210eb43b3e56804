"""What the bench needs installed (wrk, python-multipart) and the machine it ran on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import PYDEPS_DIR, BenchError


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        raise BenchError("wrk is not installed and we are not root: `sudo apt-get install -y wrk`")
    print("wrk not found: apt-get install -y wrk", flush=True)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
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
        print(
            f"python-multipart (for the naive baseline's request.form()) -> {PYDEPS_DIR}",
            flush=True,
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(PYDEPS_DIR),
                "python-multipart",
            ],
            capture_output=True,
            text=True,
        )
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
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvicorn": version_of("uvicorn"),
        "uvloop": version_of("uvloop"),
        "httptools": version_of("httptools"),
        "starlette": version_of("starlette"),
        "aio-pika": version_of("aio-pika"),
        "aiormq": version_of("aiormq"),
        "orjson": version_of("orjson"),
        "twilio": version_of("twilio"),
        "python-multipart": version_of("python-multipart", naive_pythonpath) if naive else "-",
        "wrk": (wrk.stdout or wrk.stderr).split("Copyright")[0].strip(),
        "rabbitmq": rabbit_version,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


@contextlib.contextmanager
def pinned(pid: int | None, cpus: set[int]) -> Iterator[None]:
    """Every thread of process ``pid`` on ``cpus`` for the block, then each back on its own
    CPUs (``--pin``: RabbitMQ's scheduler threads off the gateway's core)."""
    saved: dict[int, set[int]] = {}
    try:
        if pid is not None:
            for name in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    tid = int(name)
                    saved[tid] = os.sched_getaffinity(tid)
                    os.sched_setaffinity(tid, cpus)
        yield
    finally:
        for tid, mask in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)
