"""The TOML config file: tenants, their provider accounts and secrets, the [gateway] table.

Every allowed key is in ``ALLOWED_KEYS``, so a typo fails at start-up instead of silently
disabling a tenant. All problems are reported together, each naming its key, so one ``hookline
check`` shows everything to fix. Messages never contain a secret value. A new per-tenant
section (routing, flows, ...) is a typed field of ``Tenant``, its parser called in
``_parse_tenant``, its name in ``TENANT_SECTIONS`` and its keys in ``ALLOWED_KEYS``. The
``Table`` and ``Reader`` the parsers share live in gateway.config_table.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.config_table import ANY_TABLE, Reader, Table
from gateway.errors import ConfigError
from gateway.flows.flow_config import parse_flows, routed_flow_problems
from gateway.routing_config import ROUTING_KEYS, check_answer_budget, parse_routing
from gateway.secrets import Secret
from gateway.tenants import (
    DEFAULT_FALLBACK_VOICE_TWIML,
    DEFAULT_KALEYRA_TIMEZONE,
    TENANT_ID_PATTERN,
    KaleyraAccount,
    StaticTenantRegistry,
    Tenant,
    TwilioAccount,
)
from gateway.usage_config import (
    RATE_KEYS,
    RENTAL_KEYS,
    TENANT_BUDGET_KEYS,
    TENANT_USAGE_KEYS,
    USAGE_KEYS,
    RateCard,
    TenantUsage,
    parse_budget,
    parse_rate_card,
    parse_tenant_usage,
)

DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024
# Provider callbacks are a few KiB (MMS media arrive as URLs): a limit above this is a typo.
MAX_BODY_BYTES_LIMIT: Final = 16 * 1024 * 1024
ACCOUNT_SID_PATTERN: Final = re.compile(r"AC[0-9a-fA-F]{32}")

#: Every key each table may hold: the one place to extend when the config grows.
ALLOWED_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "document": frozenset({"gateway", "tenants", "usage"}),
    "gateway": frozenset(
        {
            "max_body_bytes",
            "publish_timeout_ms",
            "spool_max_events",
            "spool_max_bytes",
            "flow_secret",
            "header_timeout_ms",
            "body_timeout_ms",
            "max_header_bytes",
            "max_headers",
            "max_connections",
        }
    ),
    "tenant": frozenset(
        {
            "id",
            "name",
            "fallback_voice_twiml",
            "twilio",
            "kaleyra",
            "flows",
            "routing",
            "budget",
            "usage",
        }
    ),
    "tenant.twilio": frozenset({"account_sid", "auth_token", "previous_auth_token"}),
    # Each flow is a table named by the flow: [tenants.flows.refill] (gateway.flows.flow_config).
    "tenant.flows": frozenset({"calls_per_second", "caller_id", ANY_TABLE}),
    "tenant.kaleyra": frozenset({"sid", "callback_secret", "previous_callback_secret", "timezone"}),
    # Its sub-tables (rules, actions) are checked by gateway.routing_config.
    "tenant.routing": ROUTING_KEYS,
    "tenant.budget": TENANT_BUDGET_KEYS,
    "tenant.usage": TENANT_USAGE_KEYS,
    "usage": USAGE_KEYS,
    "usage.rates": RATE_KEYS,
    "usage.rentals": RENTAL_KEYS,
}


class ConfigProblems(ConfigError):
    """Every problem found in the config, one line each, naming its key."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        summary = f"{len(self.problems)} problems:" + "".join(f"\n  {p}" for p in self.problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else summary)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The [gateway] table."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Twilio gives a voice callback 15 s in all; the broker's share must stay well under it.
    publish_timeout_ms: int = 2000
    spool_max_events: int = 1_000_000
    spool_max_bytes: int = 1 << 30
    # Seals the position of a bot call in its flow URL (gateway.flows.position).
    flow_secret: Secret | None = None
    # What one client may cost (gateway.http.limits): time to send its request head and its
    # body, the head's size and header count, and connections served at once per process.
    header_timeout_ms: int = 10_000
    body_timeout_ms: int = 10_000
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 1000


# (key, minimum, maximum) of the integer keys of [gateway] besides max_body_bytes.
_GATEWAY_LIMITS: Final = (
    ("publish_timeout_ms", 50, 10_000),
    ("spool_max_events", 1, 1_000_000_000),
    ("spool_max_bytes", 1 << 20, 1 << 40),
    ("header_timeout_ms", 100, 300_000),
    ("body_timeout_ms", 100, 300_000),
    ("max_header_bytes", 1024, 1 << 20),
    ("max_headers", 10, 10_000),
    ("max_connections", 1, 1_000_000),
)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A parsed, validated config file (or the empty one used when there is no file)."""

    path: Path | None = None
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    tenants: StaticTenantRegistry = field(default_factory=lambda: StaticTenantRegistry(()))
    usage: RateCard = field(default_factory=RateCard)


def _parse_twilio(table: Table) -> TwilioAccount | None:
    sid = table.string("account_sid")
    if sid is not None and not ACCOUNT_SID_PATTERN.fullmatch(sid):
        table.fail("account_sid", f"expected AC followed by 32 hex digits, got {sid!r}")
    token = table.secret("auth_token")
    previous = table.secret("previous_auth_token", required=False)
    if sid is None or token is None or not table.ok:
        return None
    # Twilio sends SIDs with lower-case hex; the registry looks them up verbatim.
    return TwilioAccount("AC" + sid[2:].lower(), token, previous)


def _parse_kaleyra(table: Table) -> KaleyraAccount | None:
    sid = table.string("sid")
    secret = table.secret("callback_secret")
    previous = table.secret("previous_callback_secret", required=False)
    zone = table.string("timezone", required=False)
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):  # unknown name, or a path-like key
            table.fail("timezone", f"expected an IANA time zone such as Asia/Kolkata, got {zone!r}")
    if sid is None or secret is None or not table.ok:
        return None
    return KaleyraAccount(sid, secret, previous, zone or DEFAULT_KALEYRA_TIMEZONE)


#: Per-tenant sub-tables, each a typed field of Tenant of the same name.
TENANT_SECTIONS: Final = ("twilio", "kaleyra", "flows", "routing", "budget", "usage")
S = TypeVar("S")


def load_config(path: Path, environ: Mapping[str, str]) -> ConfigFile:
    """Read and validate the config file; ConfigError names the path or the invalid keys."""
    try:
        with path.open("rb") as fp:
            document = tomllib.load(fp)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not valid UTF-8"
        raise ConfigError(f"config file {path}: cannot be read: {why}") from None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message gives line and column, never the offending text.
        raise ConfigError(f"config file {path}: is not valid TOML: {exc}") from None
    return parse_config(document, environ=environ, base_dir=path.absolute().parent, path=path)


def parse_config(
    document: Mapping[str, object],
    *,
    environ: Mapping[str, str],
    base_dir: Path,
    path: Path | None = None,
) -> ConfigFile:
    """Validate an already-decoded TOML document (``file:`` secrets resolve from base_dir)."""
    reader = Reader(environ=environ, base_dir=base_dir, source=str(path) if path else None)
    root = Table(document, "", ALLOWED_KEYS["document"], reader)
    gateway = root.table("gateway", ALLOWED_KEYS["gateway"])
    limit = gateway.integer("max_body_bytes", 1, MAX_BODY_BYTES_LIMIT) if gateway else None
    given = (
        {key: gateway.integer(key, low, high) for key, low, high in _GATEWAY_LIMITS}
        if gateway
        else {}
    )
    usage_table = root.table("usage", ALLOWED_KEYS["usage"])
    rate_card = parse_rate_card(usage_table) if usage_table else RateCard()
    tables = root.tables("tenants", ALLOWED_KEYS["tenant"], _tenant_label)
    parsed = [(t.path, _parse_tenant(t)) for t in tables]
    tenants = [(where, tenant) for where, tenant in parsed if tenant is not None]
    _check_unique(reader, tenants)
    flow_secret = gateway.secret("flow_secret", required=False) if gateway else None
    with_flows = [tenant.id for _, tenant in tenants if tenant.flows is not None]
    if with_flows and flow_secret is None:
        reader.fail(
            "gateway.flow_secret",
            f"is required when tenants define flows "
            f"({', '.join(with_flows)}): a secret reference that seals step URLs",
        )
    publish_ms = given.get("publish_timeout_ms") or GatewayConfig().publish_timeout_ms
    for where, tenant in tenants:
        if (problem := check_answer_budget(publish_ms, tenant.routing)) is not None:
            reader.fail(f"{where}.routing.answer_timeout_ms", problem)
    if reader.problems:
        raise ConfigProblems(reader.problems)
    return ConfigFile(
        path=path,
        gateway=GatewayConfig(
            max_body_bytes=limit or DEFAULT_MAX_BODY_BYTES,
            flow_secret=flow_secret,
            **{key: value for key, value in given.items() if value is not None},
        ),
        tenants=StaticTenantRegistry(tenant for _, tenant in tenants),
        usage=rate_card,
    )


def _parse_tenant(table: Table) -> Tenant | None:
    tenant_id = table.string("id")
    if tenant_id is not None and not TENANT_ID_PATTERN.fullmatch(tenant_id):
        table.fail("id", f"expected a slug matching {TENANT_ID_PATTERN.pattern}, got {tenant_id!r}")
    name = table.string("name", required=False)
    twiml = table.string("fallback_voice_twiml", required=False)
    try:
        # Our own config, not untrusted input, so the stdlib parser is fine here.
        tag = f"<{ET.fromstring(twiml).tag}>" if twiml else "<Response>"  # noqa: S314
    except ET.ParseError as exc:
        tag = f"a parse error: {exc}"
    if tag != "<Response>":
        table.fail("fallback_voice_twiml", f"expected a well-formed <Response> document, got {tag}")
    twilio = _section(table, "twilio", _parse_twilio)
    kaleyra = _section(table, "kaleyra", _parse_kaleyra)
    flows = _section(table, "flows", parse_flows)
    routing = _section(table, "routing", parse_routing)
    budget = _section(table, "budget", parse_budget)
    usage = _section(table, "usage", parse_tenant_usage)
    for key, message in routed_flow_problems(routing, flows):
        table.fail(key, message)
    if tenant_id is None or not table.ok:
        return None
    return Tenant(
        id=tenant_id,
        name=name or tenant_id,
        twilio=twilio,
        kaleyra=kaleyra,
        fallback_voice_twiml=twiml or DEFAULT_FALLBACK_VOICE_TWIML,
        routing=routing,
        flows=flows,
        budget=budget,
        usage=usage or TenantUsage(),
    )


def _section(table: Table, name: str, parse: Callable[[Table], S | None]) -> S | None:
    """The parsed [tenants.NAME] sub-table, or None when it is absent or has problems."""
    sub = table.table(name, ALLOWED_KEYS[f"tenant.{name}"])
    return parse(sub) if sub is not None else None


def _tenant_label(table: Mapping[str, object]) -> str | None:
    """A tenant's id, which every key of its table shows: "tenants[0](acme).routing..."."""
    tenant_id = table.get("id")
    if isinstance(tenant_id, str) and TENANT_ID_PATTERN.fullmatch(tenant_id):
        return tenant_id
    return None


def _check_unique(reader: Reader, tenants: Iterable[tuple[str, Tenant]]) -> None:
    """Ids, AccountSids, Kaleyra sids and Kaleyra callback secrets belong to one tenant each
    (Kaleyra callbacks carry only the static secret: a shared one would let tenants cross)."""
    owners: dict[tuple[str, object], str] = {}
    for where, tenant in tenants:
        claims: list[tuple[str, str, object]] = [("id", "tenant id", tenant.id)]
        if tenant.twilio is not None:
            claims.append(("twilio.account_sid", "AccountSid", tenant.twilio.account_sid))
        if (kaleyra := tenant.kaleyra) is not None:
            claims.append(("kaleyra.sid", "Kaleyra sid", kaleyra.sid))
            for key in ("callback_secret", "previous_callback_secret"):
                if (secret := getattr(kaleyra, key)) is not None:
                    # Compared by digest: O(n) lookups, and messages cannot show the value.
                    digest = hashlib.sha256(secret.reveal().encode()).digest()
                    claims.append((f"kaleyra.{key}", "callback secret", digest))
        for key, namespace, value in claims:
            other = owners.setdefault((namespace, value), where)
            if other != where:
                shown = "" if namespace == "callback secret" else f" {value!r}"
                used = f"already used by {other}"
                reader.fail(f"{where}.{key}", f"duplicate {namespace}{shown}: {used}")
