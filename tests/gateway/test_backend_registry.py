"""One backend registry: a table per kind keyed by URL scheme, one error text."""

from __future__ import annotations

import pytest

from gateway.backend_registry import Backends, url_scheme
from gateway.broker.factory import PUBLISHERS, RPC_CLIENTS, create_rpc_client
from gateway.broker.rpc import MemoryRpcClient
from gateway.errors import ConfigError


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("amqp://h/", "amqp"),
        ("AMQPS://u:p@h/", "amqps"),
        ("memory://", "memory"),
        ("postgresql+psycopg://db/x", "postgresql+psycopg"),
        ("memory:", "memory"),
        ("", ""),
        ("amqp://[::1/", ""),
    ],
)
def test_url_scheme(url: str, scheme: str) -> None:
    """The scheme is lower-cased and keeps a driver suffix (as urlsplit reads it)."""
    assert url_scheme(url) == scheme


def test_pick_resolves_by_scheme_and_driver_suffix() -> None:
    """A scheme picks its builder; a "+" key serves that scheme with any driver."""
    kind = Backends("HOOKLINE_X_URL", "a:// or b+...://", {"a": 1, "b+": 2})
    assert kind.pick("A://h") == 1
    assert kind.pick("b+anything://h") == 2
    with pytest.raises(ConfigError):
        kind.pick("b://h")


@pytest.mark.parametrize("kind", [PUBLISHERS, RPC_CLIENTS], ids=["publishers", "rpc_clients"])
def test_unknown_scheme_is_the_one_error(kind: Backends[object]) -> None:
    """Each kind rejects an unknown scheme with one text: setting, forms, scheme, no secret."""
    with pytest.raises(ConfigError) as caught:
        kind.pick("redis://u:hunter2@h/")
    assert str(caught.value) == (
        "HOOKLINE_AMQP_URL: expected amqp://, amqps:// or memory://, "
        "got scheme 'redis' (redis://u:***@h/)"
    )


def test_rpc_client_factory_picks_by_scheme() -> None:
    """memory:// gives the in-process RPC client; other schemes are refused by the table."""
    assert isinstance(create_rpc_client("memory://"), MemoryRpcClient)
    with pytest.raises(ConfigError, match="got scheme 'http'"):
        create_rpc_client("http://h/")
