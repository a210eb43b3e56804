"""Choose the ledger implementation from HOOKLINE_DB_URL (validated by gateway.settings)."""

from __future__ import annotations

from pathlib import Path

from gateway.errors import ConfigError
from gateway.log import mask_url_password
from workers.usage.ledger import Ledger


def create_ledger(db_url: str) -> Ledger:
    """SqliteLedger for sqlite:///PATH, PostgresLedger for postgresql://...; nothing connects
    until ``open()``. The PostgreSQL driver is imported only when a postgresql URL is used."""
    if db_url.startswith("sqlite:///"):
        from workers.usage.sqlite_ledger import SqliteLedger

        return SqliteLedger(Path(db_url[len("sqlite:///") :]))
    scheme = db_url.partition("://")[0].lower()
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from workers.usage.postgres_ledger import PostgresLedger

        return PostgresLedger(db_url)
    raise ConfigError(f"HOOKLINE_DB_URL: expected sqlite:///PATH or postgresql://..., got "
                      f"{mask_url_password(db_url)!r}")
