"""A spool file SQLite calls corrupt is moved aside whole, and never stops a gateway's spool."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from gateway.broker.memory import MemoryBroker, MemoryPublisher
from gateway.replay import replay_orphans
from gateway.spool import Spool
from schemas.topology import tenant_queue
from tests.gateway.test_spool import ids, make_event, spool_files

PAGE = 4096


async def spool_with(data_dir: Path, count: int) -> Path:
    """A spool file holding ``count`` events, left behind as by a dead owner."""
    spool = await Spool.open(data_dir)
    for n in range(count):
        await spool.put(make_event(n, pad=200))
    await spool.close()  # not empty: the file stays, an orphan
    return spool.path


def damage_pages(path: Path) -> None:
    """Overwrite pages 2 to 4 (the table's B-tree) as a failing disk would."""
    data = bytearray(path.read_bytes())
    data[PAGE : 4 * PAGE] = b"\xa5" * (3 * PAGE)
    path.write_bytes(bytes(data))


async def test_open_moves_a_file_that_is_not_a_database_aside(tmp_path: Path) -> None:
    """A garbage spool-0.db is renamed with its bytes intact; open() gets a working spool."""
    directory = tmp_path / "spool"
    directory.mkdir()
    garbage = b"this was never a SQLite database\n" * 200
    (directory / "spool-0.db").write_bytes(garbage)
    with capture_logs() as logs:
        spool = await Spool.open(tmp_path)
    try:
        await spool.put(make_event(1))
        assert [item.event_id for item in await spool.peek()] == ids((1,))
    finally:
        await spool.close()
    [moved] = [name for name in spool_files(tmp_path) if name.startswith("corrupt-")]
    assert moved.startswith("corrupt-spool-0-") and moved.endswith(".db")
    assert (directory / moved).read_bytes() == garbage
    [line] = [line for line in logs if line["event"] == "spool_quarantined"]
    assert line["log_level"] == "error"
    assert line["moved_to"] == str(directory / moved)
    assert line["error"].startswith("SQLITE_NOTADB")


async def test_adopting_damaged_pages_quarantines_instead_of_failing(tmp_path: Path) -> None:
    """An orphan whose pages are damaged is moved aside (data kept for recovery) and the other
    orphans are still drained: one bad file does not stop the sweep."""
    damaged = await spool_with(tmp_path, 500)
    # A second orphan: opened while the first is locked, so it gets the next file.
    holder = await Spool.adopt(damaged)
    assert holder is not None
    healthy = await spool_with(tmp_path, 7)
    await holder.close()
    damage_pages(damaged)
    original = damaged.read_bytes()
    broker = MemoryBroker()
    publisher = MemoryPublisher(broker, ["acme"])
    await publisher.start()
    with capture_logs() as logs:
        assert await replay_orphans(tmp_path, publisher) == 7
    assert [event.id for event in broker.drain(tenant_queue("acme"))] == ids(range(7))
    assert not damaged.exists() and not healthy.exists()  # the healthy one drained and deleted
    [moved] = [name for name in spool_files(tmp_path) if name.startswith("corrupt-")]
    assert (tmp_path / "spool" / moved).read_bytes() == original
    assert [
        line["error"].split(":")[0] for line in logs if line["event"] == "spool_quarantined"
    ] == ["SQLITE_CORRUPT"]
    assert Spool.orphans(tmp_path) == []  # the quarantined file is nobody's orphan
