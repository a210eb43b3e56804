"""Exactly once across processes, on SQLite and the real PostgreSQL: two processes ingesting
overlapping batches at once, and a process SIGKILLed mid-ingest whose work is then redone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from workers.backends import create_ledger
from workers.usage.ledger import UsageRow

ROOT = Path(__file__).resolve().parents[3]
N = 400  # messages: 1200 message events + 80 call events per process
EXPECTED = {
    "messages": N,
    "segments": 2 * N,
    "failed": N // 10,
    "calls": N // 10,
    "minutes": N // 5,
}
EXPECTED_COST = Decimal("0.0079") * 2 * N + Decimal("0.0140") * 2 * (N // 10)


def spawn(url: str, seed: int, batch: int, progress: Path | None = None) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "tests.support.usage", url, str(N), str(seed), str(batch)]
    if progress is not None:
        args.append(str(progress))
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]


async def usage(url: str) -> list[UsageRow]:
    ledger = create_ledger(url)
    await ledger.open()
    try:
        return await ledger.usage("2026-11")
    finally:
        await ledger.close()


async def check_totals(url: str) -> None:
    ledger = create_ledger(url)
    await ledger.open()
    try:
        rows = await ledger.usage("2026-11")
        got = {name: sum(getattr(r, name) for r in rows) for name in EXPECTED}
        assert got == EXPECTED
        assert sum((r.cost for r in rows), Decimal(0)) == EXPECTED_COST
        assert await ledger.month_spend("acme", "2026-11") == EXPECTED_COST
        # Budget 1.00: 50, 80 and 100 % crossed, each recorded exactly once.
        assert sorted(a.threshold for a in await ledger.pending_alerts()) == [50, 80, 100]
    finally:
        await ledger.close()


def test_two_concurrent_processes(ledger_url: str) -> None:
    """Two processes ingest the same events in different orders and batch sizes at once."""
    first, second = spawn(ledger_url, seed=1, batch=50), spawn(ledger_url, seed=2, batch=37)
    finish(first)
    finish(second)
    asyncio.run(check_totals(ledger_url))


def test_killed_mid_ingest_then_redelivered(ledger_url: str, tmp_path: Path) -> None:
    """SIGKILL leaves only whole batches; redoing everything then counts each event once."""
    progress = tmp_path / "progress"
    victim = spawn(ledger_url, seed=3, batch=10, progress=progress)
    deadline = time.monotonic() + 60
    # Kill as soon as a few batches are committed: the next one is most likely mid-transaction.
    while time.monotonic() < deadline and int(_read(progress) or 0) < 4:
        time.sleep(0.001)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    partial = asyncio.run(usage(ledger_url))
    assert 0 < sum(r.messages for r in partial) < N, "not killed mid-run"
    # Redelivery: everything unacknowledged comes again, here simply all of it, in another order.
    finish(spawn(ledger_url, seed=4, batch=64))
    asyncio.run(check_totals(ledger_url))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
