"""Target processes, and what /proc says about them: CPU, RSS, scheduling, libraries."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import CLK_TCK, ROOT


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
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(
                    int(entry.name)
                )
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
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
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
