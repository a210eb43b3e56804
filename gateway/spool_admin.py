"""`hookline spool status|replay`: what waits in the local spools, and pushing it by hand."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.errors import ConfigError
from gateway.settings import Settings
from gateway.spool import QUARANTINE_PREFIX, SPOOL_DIR, Spool, is_corrupt


@dataclass(frozen=True, slots=True)
class SpoolFile:
    path: Path
    events: int
    body_bytes: int
    oldest: float | None  # spooled_at of the oldest row (epoch seconds)
    owned: bool  # a live gateway process holds its lock (and replays it itself)
    problem: str | None = None  # corrupt, or quarantined: never replayed, kept for recovery


def inspect(data_dir: Path) -> list[SpoolFile]:
    """Every spool file under ``data_dir``, read without taking it from its owner.

    Read-only SQLite connections can read a WAL database while its owner writes to it
    (https://www.sqlite.org/wal.html#concurrency), so this is safe on a live gateway.
    """
    orphans = set(Spool.orphans(data_dir))
    found = []
    for path in sorted((data_dir / SPOOL_DIR).glob("spool-*.db")):
        problem = None
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            events, size, oldest = connection.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(spooled_at) FROM spool"
            ).fetchone()
        except sqlite3.Error as exc:
            events, size, oldest = 0, 0, None  # created but never written: no table yet
            if is_corrupt(exc):
                problem = f"corrupt ({exc}): the next gateway to open it moves it aside"
        finally:
            connection.close()
        found.append(
            SpoolFile(path, events, size, oldest, owned=path not in orphans, problem=problem)
        )
    for path in sorted((data_dir / SPOOL_DIR).glob(f"{QUARANTINE_PREFIX}*.db")):
        found.append(
            SpoolFile(
                path,
                0,
                path.stat().st_size,
                None,
                owned=False,
                problem="quarantined as corrupt: never replayed, kept for recovery by hand",
            )
        )
    return found


def print_status(settings: Settings, out: TextIO) -> int:
    files = inspect(settings.data_dir)
    if not files:
        print(f"no spool files under {settings.data_dir / SPOOL_DIR}", file=out)
        return 0
    now = time.time()
    for item in files:
        if item.problem is not None:
            print(f"{item.path}: {item.problem}", file=out)
            continue
        age = f"oldest {now - item.oldest:.0f} s ago" if item.oldest else "empty"
        owner = "owned by a running gateway" if item.owned else "orphan (no live owner)"
        print(
            f"{item.path}: {item.events} event(s), {item.body_bytes} bytes, {age}, {owner}",
            file=out,
        )
    total = sum(item.events for item in files)
    bad = sum(1 for item in files if item.problem is not None)
    print(
        f"total: {total} event(s) in {len(files) - bad} file(s)"
        + (f"; {bad} corrupt or quarantined file(s), not counted" if bad else ""),
        file=out,
    )
    return 0


async def replay(settings: Settings, out: TextIO) -> int:
    """Drain every orphan spool to the broker; owned spools are left to their gateway."""
    if settings.amqp_url.startswith("memory:"):
        raise ConfigError("spool replay needs a RabbitMQ broker: HOOKLINE_AMQP_URL is memory://")
    from gateway.broker.fastamqp import FastAmqpPublisher
    from gateway.replay import replay_orphans

    publisher = FastAmqpPublisher(settings.amqp_url, [tenant.id for tenant in settings.tenants])
    await publisher.start()
    try:
        replayed = await replay_orphans(settings.data_dir, publisher)
    finally:
        await publisher.close()
    left = inspect(settings.data_dir)
    owned = sum(item.events for item in left if item.owned)
    stuck = sum(item.events for item in left if not item.owned)
    print(
        f"replayed {replayed} event(s); {owned} wait in spools of running gateways "
        f"(they replay them themselves); {stuck} could not be replayed",
        file=out,
    )
    return 1 if stuck else 0
