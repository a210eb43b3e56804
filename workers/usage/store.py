"""Choose the ledger implementation from HOOKLINE_DB_URL (validated by gateway.settings)."""

from __future__ import annotations

from gateway.errors import ConfigError
from gateway.log import mask_url_password
from gateway.settings import is_postgresql, sqlite_file
from workers.usage.ledger import Ledger


def create_ledger(db_url: str) -> Ledger:
    """SqliteLedger for sqlite:///PATH, PostgresLedger for postgresql://...; nothing connects
    until ``open()``. The PostgreSQL driver is imported only when a postgresql URL is used."""
    path = sqlite_file(db_url)
    if path is not None:
        from workers.usage.sqlite_ledger import SqliteLedger

        return SqliteLedger(path)
    if is_postgresql(db_url):
        from workers.usage.postgres_ledger import PostgresLedger

        return PostgresLedger(db_url)
    raise ConfigError(f"HOOKLINE_DB_URL: expected sqlite:///PATH or postgresql://..., got "
                      f"{mask_url_password(db_url)!r}")
