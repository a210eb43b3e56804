"""Which implementation serves a URL: one table per kind of backend, keyed by URL scheme.

Each kind (the gateway's publisher and RPC client here in gateway.broker.factory; the
workers' transport, bot-call store and ledger in workers.backends) is one ``Backends`` table:
the setting it reads, the URL forms it accepts, and a builder per scheme. ``pick`` is the one
place that resolves a URL and the one ConfigError text for a scheme nobody serves. Builders
import their implementation when called, so ``memory://`` and ``sqlite:///`` never load
aio-pika or a PostgreSQL driver (in the manner of uvicorn's config.py, which names its loop
and protocol implementations by import string and imports only the one chosen).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.log import mask_url_password

B = TypeVar("B", covariant=True)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` ("amqps" for "AMQPS://h/"); "" when it has none."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        return ""


@dataclass(frozen=True, slots=True)
class Backends(Generic[B]):
    """One kind of backend: ``builders`` maps a URL scheme to the builder of its implementation.

    A key ending in "+" stands for that scheme with any driver suffix, as SQLAlchemy-style URLs
    write it ("postgresql+" serves "postgresql+psycopg://...").
    """

    setting: str  # the environment variable the URL comes from, e.g. HOOKLINE_AMQP_URL
    forms: str  # the accepted forms, as the error message lists them
    builders: Mapping[str, B]

    def pick(self, url: str) -> B:
        """The builder for ``url``'s scheme; ConfigError naming the setting when there is none."""
        scheme = url_scheme(url)
        builder = self.builders.get(scheme)
        if builder is None and "+" in scheme:
            builder = self.builders.get(scheme.partition("+")[0] + "+")
        if builder is None:
            raise self.rejected(url)
        return builder

    def rejected(self, url: str) -> ConfigError:
        """The one error for a URL this kind cannot serve (it never shows a password)."""
        return ConfigError(
            f"{self.setting}: expected {self.forms}, got scheme "
            f"{url_scheme(url)!r} ({mask_url_password(url)})"
        )
