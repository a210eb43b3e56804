"""Tenants and their provider credentials, and the registry that resolves them.

A tenant is one customer of the platform with its own Twilio subaccount and/or Kaleyra
sub-account. The registry answers "which tenant owns this AccountSid / this id" in O(1) on the
request path; it is built once at start-up from the validated config (see gateway.config).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from gateway.errors import ConfigError
from gateway.flows.model import FlowSettings
from gateway.routing_config import Routing
from gateway.secrets import Secret
from gateway.usage_config import Budget, TenantUsage

TENANT_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")

DEFAULT_FALLBACK_VOICE_TWIML: Final = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Say>We are sorry, we cannot take your '
    "call right now. Please try again later.</Say><Hangup/></Response>"
)
EMPTY_TWIML: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
DEFAULT_KALEYRA_TIMEZONE: Final = "Asia/Kolkata"


@dataclass(frozen=True, slots=True)
class TwilioAccount:
    """A tenant's Twilio subaccount: its SID and the token(s) its callbacks are signed with."""

    account_sid: str
    auth_token: Secret
    previous_auth_token: Secret | None = None

    def tokens(self) -> tuple[Secret, ...]:
        """Tokens a signature may be made with: the current one first, then the old one."""
        if self.previous_auth_token is None:
            return (self.auth_token,)
        return (self.auth_token, self.previous_auth_token)


@dataclass(frozen=True, slots=True)
class KaleyraAccount:
    """A tenant's Kaleyra.io sub-account and the static secret its callback profiles send."""

    sid: str
    callback_secret: Secret
    previous_callback_secret: Secret | None = None
    # IANA zone of the zone-less times Kaleyra sends ("2025-04-17 18:35:20"); validated by the
    # config loader. Defaults to India Standard Time, the zone of Kaleyra's platform.
    timezone: str = DEFAULT_KALEYRA_TIMEZONE

    def secrets(self) -> tuple[Secret, ...]:
        """Secrets a callback may carry: the current one first, then the old one."""
        if self.previous_callback_secret is None:
            return (self.callback_secret,)
        return (self.callback_secret, self.previous_callback_secret)


@dataclass(frozen=True, slots=True)
class Tenant:
    """One tenant and its parsed config sections (gateway.config builds them, each typed)."""

    id: str
    name: str
    twilio: TwilioAccount | None = None
    kaleyra: KaleyraAccount | None = None
    fallback_voice_twiml: str = DEFAULT_FALLBACK_VOICE_TWIML
    routing: Routing | None = None  # [tenants.routing]: how its calls and messages are answered
    flows: FlowSettings | None = None  # [tenants.flows]: its bot-call flows
    budget: Budget | None = None  # [tenants.budget]: what it may spend a month
    # [tenants.usage]: plan and numbers (the empty one when the section is absent)
    usage: TenantUsage = field(default_factory=TenantUsage)

    def __post_init__(self) -> None:
        if not TENANT_ID_PATTERN.fullmatch(self.id):
            raise ConfigError(f"tenant id must match {TENANT_ID_PATTERN.pattern}, got {self.id!r}")


class TenantRegistry(Protocol):
    """Looks tenants up on the request path."""

    def by_id(self, tenant_id: str) -> Tenant | None: ...

    def by_twilio_account(self, account_sid: str) -> Tenant | None: ...

    def __iter__(self) -> Iterator[Tenant]: ...

    def __len__(self) -> int: ...


class StaticTenantRegistry:
    """An in-memory registry; the config loader builds one, tests build one directly.

    Rejects duplicate tenant ids and duplicate Twilio AccountSids, naming both tenants.
    """

    def __init__(self, tenants: Iterable[Tenant]) -> None:
        self._by_id: dict[str, Tenant] = {}
        self._by_account: dict[str, Tenant] = {}
        for tenant in tenants:
            if tenant.id in self._by_id:
                raise ConfigError(f"tenants: duplicate tenant id {tenant.id!r}")
            self._by_id[tenant.id] = tenant
            if tenant.twilio is not None:
                sid = tenant.twilio.account_sid
                other = self._by_account.get(sid)
                if other is not None:
                    raise ConfigError(
                        f"tenants.twilio.account_sid: {sid!r} is used by both tenant "
                        f"{other.id!r} and tenant {tenant.id!r}"
                    )
                self._by_account[sid] = tenant

    def by_id(self, tenant_id: str) -> Tenant | None:
        return self._by_id.get(tenant_id)

    def by_twilio_account(self, account_sid: str) -> Tenant | None:
        return self._by_account.get(account_sid)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
