"""Settings from the environment plus the config file (docs/configuration.md), checked at start.

``load_settings`` reads every HOOKLINE_* variable from an injected mapping (tests never touch
os.environ), collects every problem, and raises one ConfigError naming each variable or key,
what was expected and what arrived. A variable set to the empty string counts as unset, as in
``${VAR:-default}`` shell and compose files.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from gateway.config import DEFAULT_MAX_BODY_BYTES, ConfigFile, ConfigProblems, load_config
from gateway.errors import ConfigError
from gateway.log import mask_url_password
from gateway.secrets import Secret
from gateway.tenants import StaticTenantRegistry
from gateway.usage_config import RateCard

LogFormat = Literal["json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
IPNetwork = IPv4Network | IPv6Network
_T = TypeVar("_T")

DEFAULT_CONFIG_PATH: Final = Path("hookline.toml")
DEFAULT_AMQP_URL: Final = "memory://"
DEFAULT_DATA_DIR: Final = Path(".hookline")
_LOG_FORMATS: Final[Mapping[str, LogFormat]] = {"json": "json", "console": "console"}
_LOG_LEVELS: Final[Mapping[str, LogLevel]] = {
    "debug": "debug", "info": "info", "warning": "warning", "error": "error",
}  # fmt: skip


#: Where the admin listener (/readyz, /metrics, the admin API) binds by default: loopback only.
DEFAULT_ADMIN_LISTEN: Final = ("127.0.0.1", 9180)


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What one HTTP client may cost a gateway process (enforced by gateway.http.limits).

    A request head must arrive within ``header_timeout_s`` of the connection (or of its first
    byte, on a kept-alive connection) and its body within ``body_timeout_s`` of the head, else
    408; a head over ``max_header_bytes`` or with more than ``max_headers`` fields is 431;
    beyond ``max_connections`` open connections a request is answered 503 at once.
    """

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 1000


def default_db_url(data_dir: Path) -> str:
    """The embedded SQLite ledger inside the data directory (SQLAlchemy-style URL)."""
    return f"sqlite:///{data_dir / 'hookline.db'}"


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Everything a hookline process is configured with. Every field has the documented
    default, so tests can build one directly: ``Settings(tenants=registry)``."""

    config_path: Path = DEFAULT_CONFIG_PATH
    amqp_url: str = DEFAULT_AMQP_URL
    public_url: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: X-Forwarded-Host values a trusted proxy may send (lower-case ``host`` or ``host:port``);
    #: any other is refused, so a proxy that passes a client's Host on cannot pick the URL a
    #: signature is checked against.
    forwarded_hosts: frozenset[str] = frozenset()
    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str = default_db_url(DEFAULT_DATA_DIR)
    log_format: LogFormat = "json"
    log_level: LogLevel = "info"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    publish_timeout_s: float = 2.0
    spool_max_events: int = 1_000_000
    spool_max_bytes: int = 1 << 30
    tenants: StaticTenantRegistry = field(default_factory=lambda: StaticTenantRegistry(()))
    #: Seals bot-call positions in step URLs; required by the config when flows exist.
    flow_secret: Secret | None = None
    #: The [usage] section: rate card, number rentals, reconciliation tolerance.
    rate_card: RateCard = field(default_factory=RateCard)
    #: False when HOOKLINE_CONFIG was unset and ./hookline.toml absent (zero tenants).
    config_found: bool = False
    #: HOOKLINE_ADMIN_LISTEN as (host, port); None (only for Settings built in code, e.g. in
    #: tests) serves the admin app on no socket.
    admin_listen: tuple[str, int] | None = None
    #: HOOKLINE_WORKER_ADMIN_LISTEN: /readyz and /metrics of a `hookline worker` process. None
    #: (the default) serves none: several workers and a gateway often share a host, and a
    #: default port would make the second one fail to start.
    worker_admin_listen: tuple[str, int] | None = None
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    #: RabbitMQ management HTTP API (tenant broker users): HOOKLINE_RABBITMQ_API_URL, else
    #: http://<AMQP host>:15672 with the AMQP URL's credentials; None with memory://.
    rabbitmq_api_url: str | None = None

    def is_trusted_proxy(self, host: str) -> bool:
        """True when ``host`` (the TCP peer address) may set X-Forwarded-Proto/Host."""
        if not self.trusted_proxies:
            return False
        try:
            address = ip_address(host.strip("[]"))
        except ValueError:
            return False  # a unix socket path or a name: never trusted
        # A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted_proxies)

    @property
    def sqlite_path(self) -> Path | None:
        """The database file when db_url is SQLite, else None."""
        return sqlite_file(self.db_url)

    def __repr__(self) -> str:
        # URLs may carry passwords; tenants carry Secrets (masked by their own repr, but a
        # thousand tenants would make this unreadable): show ids only.
        ids = [tenant.id for tenant in self.tenants]
        shown = ", ".join(ids[:10]) + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")
        return (
            f"Settings(config_path={str(self.config_path)!r}, "
            f"amqp_url={mask_url_password(self.amqp_url)!r}, public_url={self.public_url!r}, "
            f"trusted_proxies=[{', '.join(map(str, self.trusted_proxies))}], "
            f"forwarded_hosts=[{', '.join(sorted(self.forwarded_hosts))}], "
            f"data_dir={str(self.data_dir)!r}, db_url={mask_url_password(self.db_url)!r}, "
            f"log_format={self.log_format!r}, log_level={self.log_level!r}, "
            f"admin_listen={self.admin_listen!r}, "
            f"worker_admin_listen={self.worker_admin_listen!r}, "
            f"max_body_bytes={self.max_body_bytes}, tenants=[{shown}], "
            f"rabbitmq_api_url={mask_url_password(self.rabbitmq_api_url or '')!r}, "
            f"config_found={self.config_found})"
        )


def load_settings(
    environ: Mapping[str, str] | None = None, *, stdout_isatty: bool | None = None
) -> Settings:
    """Build Settings from ``environ`` (default os.environ) and the config file it names.

    ``stdout_isatty`` decides the default log format (console on a terminal, JSON otherwise);
    None asks sys.stdout.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    problems: list[str] = []

    def get(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    amqp_url = _amqp_url(get("HOOKLINE_AMQP_URL"), problems)
    public_url = _public_url(get("HOOKLINE_PUBLIC_URL"), problems)
    rabbitmq_api_url = _rabbitmq_api_url(get("HOOKLINE_RABBITMQ_API_URL"), amqp_url, problems)
    proxies = _trusted_proxies(get("HOOKLINE_TRUSTED_PROXIES"), problems)
    forwarded_hosts = _forwarded_hosts(get("HOOKLINE_FORWARDED_HOSTS"), problems)
    if proxies and not forwarded_hosts and public_url is None:
        problems.append(
            "HOOKLINE_TRUSTED_PROXIES is set but no X-Forwarded-Host is allowed: set "
            "HOOKLINE_FORWARDED_HOSTS to the public host name(s) the proxy forwards "
            "(e.g. hooks.example.com), or HOOKLINE_PUBLIC_URL"
        )
    data_dir = Path(get("HOOKLINE_DATA_DIR") or DEFAULT_DATA_DIR).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        problems.append(f"HOOKLINE_DATA_DIR: expected a directory, got {str(data_dir)!r}, a file")
    db_url = _db_url(get("HOOKLINE_DB_URL"), data_dir, problems)

    raw_format = get("HOOKLINE_LOG_FORMAT")
    if raw_format is None:
        tty = _stdout_isatty() if stdout_isatty is None else stdout_isatty
        log_format: LogFormat = "console" if tty else "json"
    else:
        log_format = _choice("HOOKLINE_LOG_FORMAT", raw_format, _LOG_FORMATS, problems, "json")
    raw_level = get("HOOKLINE_LOG_LEVEL") or "info"
    log_level = _choice("HOOKLINE_LOG_LEVEL", raw_level, _LOG_LEVELS, problems, "info")

    admin_listen = (
        _listen_address("HOOKLINE_ADMIN_LISTEN", get("HOOKLINE_ADMIN_LISTEN"), problems)
        or DEFAULT_ADMIN_LISTEN
    )
    worker_admin_listen = _listen_address(
        "HOOKLINE_WORKER_ADMIN_LISTEN", get("HOOKLINE_WORKER_ADMIN_LISTEN"), problems
    )
    config_path, config = _config(get("HOOKLINE_CONFIG"), env, problems)
    if problems:
        raise ConfigProblems(problems)
    gateway = config.gateway
    return Settings(
        config_path=config_path,
        amqp_url=amqp_url,
        public_url=public_url,
        trusted_proxies=proxies,
        forwarded_hosts=forwarded_hosts,
        data_dir=data_dir,
        db_url=db_url,
        log_format=log_format,
        log_level=log_level,
        max_body_bytes=config.gateway.max_body_bytes,
        publish_timeout_s=config.gateway.publish_timeout_ms / 1000,
        spool_max_events=config.gateway.spool_max_events,
        spool_max_bytes=config.gateway.spool_max_bytes,
        tenants=config.tenants,
        flow_secret=config.gateway.flow_secret,
        rate_card=config.usage,
        config_found=config.path is not None,
        admin_listen=admin_listen,
        worker_admin_listen=worker_admin_listen,
        client_limits=ClientLimits(
            header_timeout_s=gateway.header_timeout_ms / 1000,
            body_timeout_s=gateway.body_timeout_ms / 1000,
            max_header_bytes=gateway.max_header_bytes,
            max_headers=gateway.max_headers,
            max_connections=gateway.max_connections,
        ),
        rabbitmq_api_url=rabbitmq_api_url,
    )


def _config(
    raw: str | None, env: Mapping[str, str], problems: list[str]
) -> tuple[Path, ConfigFile]:
    # Without HOOKLINE_CONFIG a missing ./hookline.toml is fine (the gateway starts with zero
    # tenants and answers 403); a path the operator named explicitly must exist.
    path = DEFAULT_CONFIG_PATH if raw is None else Path(raw).expanduser()
    if raw is None and not path.exists():
        return path, ConfigFile()
    if raw is not None and not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        problems.append(f"HOOKLINE_CONFIG: expected a TOML file, got {raw!r}, which {state}")
        return path, ConfigFile()
    try:
        return path, load_config(path, env)
    except ConfigProblems as exc:
        problems.extend(exc.problems)
    except ConfigError as exc:
        problems.append(f"HOOKLINE_CONFIG: {exc}" if raw is not None else str(exc))
    return path, ConfigFile()


def _choice(
    name: str, raw: str, choices: Mapping[str, _T], problems: list[str], fallback: _T
) -> _T:
    value = choices.get(raw.lower())
    if value is None:
        problems.append(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return fallback
    return value


def _amqp_url(raw: str | None, problems: list[str]) -> str:
    if raw is None:
        return DEFAULT_AMQP_URL
    expected = "memory:// or amqp[s]://user:password@host[:port][/vhost]"
    try:
        parts = urlsplit(raw)
        valid = parts.scheme == "memory" or (
            parts.scheme in ("amqp", "amqps") and bool(parts.hostname) and parts.port != 0
        )
    except ValueError:  # an out-of-range port
        valid = False
    if not valid:
        problems.append(f"HOOKLINE_AMQP_URL: expected {expected}, got {mask_url_password(raw)!r}")
    elif parts.query:
        # One rule for every command: `check` used to pass what `run` then refused.
        problems.append(
            f"HOOKLINE_AMQP_URL: query options (?{parts.query.split('=')[0]}=...) "
            f"are not supported, got {mask_url_password(raw)!r}"
        )
    return raw


def default_rabbitmq_api_url(amqp_url: str) -> str | None:
    """``http://<AMQP host>:15672`` with the AMQP URL's user and password
    (docs/architecture.md#tenancy); None for memory:// (no broker, no management API)."""
    parts = urlsplit(amqp_url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        return None
    # The raw user-info, not parts.username/password: a percent-escaped password stays as is.
    authority = amqp_url.partition("://")[2].partition("/")[0]
    userinfo, at, _ = authority.rpartition("@")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{userinfo}{at}{host}:15672"


def _rabbitmq_api_url(raw: str | None, amqp_url: str, problems: list[str]) -> str | None:
    if raw is None:
        try:
            return default_rabbitmq_api_url(amqp_url)
        except ValueError:  # an invalid AMQP URL, already reported
            return None
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # an out-of-range port
        valid = False
    if not valid:
        problems.append(
            "HOOKLINE_RABBITMQ_API_URL: expected http[s]://[user:password@]host"
            f"[:port] (the management API), got {mask_url_password(raw)!r}"
        )
    return raw


def _public_url(raw: str | None, problems: list[str]) -> str | None:
    if raw is None:
        return None
    expected = "expected http(s)://host[:port][/prefix] without query, fragment or credentials"
    try:
        parts = urlsplit(raw)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and parts.port != 0
            and not ({"?", "#", "@"} & set(raw) or any(c.isspace() for c in raw))
        )
    except ValueError:
        valid = False
    if not valid:
        problems.append(f"HOOKLINE_PUBLIC_URL: {expected}, got {mask_url_password(raw)!r}")
        return None
    # Routes are appended to it ("/twilio/voice"), so a trailing slash would double up.
    return raw.rstrip("/")


def _trusted_proxies(raw: str | None, problems: list[str]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in (raw or "").split(","):
        if not (item := item.strip()):
            continue  # tolerate "a, b," and spaces
        try:
            # strict=False: "10.0.0.1/8" means the network 10.0.0.0/8, not an error.
            networks.append(ip_network(item, strict=False))
        except ValueError:
            problems.append(
                f"HOOKLINE_TRUSTED_PROXIES: expected comma-separated IP addresses or CIDR "
                f"networks, got {item!r}"
            )
    return tuple(networks)


def _listen_address(name: str, raw: str | None, problems: list[str]) -> tuple[str, int] | None:
    """HOST:PORT (an IPv6 host in brackets) of a listener; None when unset or invalid."""
    if raw is None:
        return None
    try:
        parts = urlsplit(f"//{raw}")
        host, port = parts.hostname, parts.port
        valid = bool(host) and port is not None and parts.netloc == raw and not parts.username
    except ValueError:
        valid = False
    if not valid or host is None or port is None:
        problems.append(
            f"{name}: expected HOST:PORT (e.g. 127.0.0.1:9180, [::1]:9180), got {raw!r}"
        )
        return None
    return host, port


def _forwarded_hosts(raw: str | None, problems: list[str]) -> frozenset[str]:
    hosts: set[str] = set()
    for item in (raw or "").split(","):
        if not (item := item.strip().lower()):
            continue
        try:
            parts = urlsplit(f"//{item}")
            valid = (
                bool(parts.hostname)
                and parts.port != 0
                and parts.netloc == item
                and not parts.username
                and item.isascii()
            )
        except ValueError:
            valid = False
        if not valid:
            problems.append(
                f"HOOKLINE_FORWARDED_HOSTS: expected comma-separated host or "
                f"host:port values, got {item!r}"
            )
            continue
        hosts.add(item)
    return frozenset(hosts)


def sqlite_file(db_url: str) -> Path | None:
    """The file of a validated ``sqlite:///PATH`` database URL; None for any other URL."""
    prefix = "sqlite:///"
    return Path(db_url[len(prefix) :]) if db_url.startswith(prefix) else None


def is_postgresql(db_url: str) -> bool:
    """True for ``postgresql://``, ``postgres://`` and ``postgresql+driver://`` URLs."""
    scheme = db_url.partition("://")[0].lower()
    return scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+")


def _db_url(raw: str | None, data_dir: Path, problems: list[str]) -> str:
    if raw is None:
        return default_db_url(data_dir)
    scheme, sep, _ = raw.partition("://")
    if not sep:
        return f"sqlite:///{Path(raw).expanduser()}"  # a bare path means a SQLite file
    scheme = scheme.lower()
    # SQLAlchemy-style: sqlite:///relative.db, sqlite:////absolute.db, postgresql[+driver]://
    if scheme == "sqlite" and raw[len("sqlite://") :].startswith("/"):
        return raw
    if is_postgresql(raw):
        return raw
    problems.append(
        f"HOOKLINE_DB_URL: expected a SQLite path, sqlite:///PATH or postgresql://..., "
        f"got {mask_url_password(raw)!r}"
    )
    return raw


def _stdout_isatty() -> bool:
    try:
        return sys.stdout is not None and sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False
