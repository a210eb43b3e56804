"""`hookline spool status|replay` on real spool files (and the real broker for replay)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.spool import Spool
from schemas.events import Event
from tests.support.events import make_event
from tests.support.rabbit import RabbitClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hookline.toml"


pytestmark = pytest.mark.usefixtures("reset_logging_after")


def env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOOKLINE_CONFIG": str(EXAMPLE),
        "HOOKLINE_DATA_DIR": str(data_dir),
        **extra,
    }


async def leave_orphan(data_dir: Path, count: int, tenant: str = "demo") -> None:
    """A spool with ``count`` events whose owner went away (closed without draining)."""
    spool = await Spool.open(data_dir)
    for n in range(count):
        await spool.put(_for_tenant(n, tenant))
    await spool.close()


def _for_tenant(n: int, tenant: str) -> Event:
    return replace(make_event(n), tenant=tenant)


def test_status_without_spool_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No spool yet: status says so and exits 0."""
    assert main(["spool", "status"], env(tmp_path)) == 0
    assert "no spool files" in capsys.readouterr().out


def test_status_lists_orphans_and_owned_spools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Status counts the events of an orphan and of a spool a live process owns."""

    async def scenario() -> int:
        await leave_orphan(tmp_path, 3)
        owned = await Spool.open(tmp_path / "other")
        await owned.put(_for_tenant(9, "demo"))
        try:
            code = main(["spool", "status"], env(tmp_path))
            code += main(["spool", "status"], env(tmp_path / "other"))
        finally:
            await owned.close()
        return code

    assert asyncio.run(scenario()) == 0
    out = capsys.readouterr().out
    assert "3 event(s)" in out and "orphan (no live owner)" in out
    assert "1 event(s)" in out and "owned by a running gateway" in out


def test_status_names_corrupt_and_quarantined_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt spool file and a quarantined one are named as such, not counted as empty."""
    directory = tmp_path / "spool"
    directory.mkdir()
    (directory / "spool-0.db").write_bytes(b"not a database" * 300)
    (directory / "corrupt-spool-1-20261203T080000Z.db").write_bytes(b"x" * 4096)
    assert main(["spool", "status"], env(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"{directory / 'spool-0.db'}: corrupt (file is not a database)" in out
    assert f"{directory / 'corrupt-spool-1-20261203T080000Z.db'}: quarantined as corrupt" in out
    assert "total: 0 event(s) in 0 file(s); 2 corrupt or quarantined file(s), not counted" in out


def test_replay_refuses_the_memory_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay needs a real broker to replay to."""
    assert main(["spool", "replay"], env(tmp_path)) == 1
    assert "memory://" in capsys.readouterr().err


@pytest.mark.broker
def test_replay_pushes_orphans_to_the_broker(
    tmp_path: Path, amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`hookline spool replay` drains an orphan spool into the tenant queue and deletes it."""
    asyncio.run(leave_orphan(tmp_path, 5))
    assert main(["spool", "replay"], env(tmp_path, HOOKLINE_AMQP_URL=amqp_url)) == 0
    assert "replayed 5 event(s)" in capsys.readouterr().out
    assert list((tmp_path / "spool").glob("*.db")) == []

    async def delivered() -> list[str]:
        client = await RabbitClient(amqp_url).connect()
        try:
            return [doc["id"] for _p, doc in await client.read_all("hookline.tenant.demo")]
        finally:
            await client.close()

    # Other tests of the session publish to the demo tenant too: count only ours.
    ids = asyncio.run(delivered())
    expected = {_for_tenant(n, "demo").id for n in range(5)}
    assert sorted(i for i in ids if i in expected) == sorted(expected)
