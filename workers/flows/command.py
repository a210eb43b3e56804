"""The ``call.bot`` command a tenant app publishes, and its validation.

Published to the ``hookline.commands`` topic exchange with routing key ``<tenant>.call.bot``
and a JSON body ``{"to", "flow", "vars", "from"?, "request_id", "tenant"?}``. The tenant comes
from the routing key: RabbitMQ topic permissions let a tenant's credentials publish only under
its own prefix, while nothing vouches for a body. A body that names another tenant is rejected
(``tenant_mismatch``), reported to the routing key's tenant only. Every way a command can be
wrong is a ``Rejection`` with a reason the tenant app can act on; none is retried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson

from gateway.e164 import E164_PATTERN
from gateway.flows.model import Flow
from gateway.log import mask_phone
from gateway.tenants import Tenant, TenantRegistry

COMMAND_SUFFIX: Final = ".call.bot"
MAX_REQUEST_ID: Final = 128
MAX_VARIABLE_CHARS: Final = 500
_KEYS: Final = frozenset({"to", "flow", "vars", "from", "request_id", "tenant"})


@dataclass(frozen=True, slots=True)
class BotCommand:
    tenant: Tenant
    flow: Flow
    to: str
    from_: str
    request_id: str
    variables: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A command that cannot be placed: reported to the tenant as outcome ``rejected``."""

    tenant: str | None  # None when the routing key names no tenant we know
    request_id: str | None
    reason: str  # snake_case, stable
    detail: str


def parse_command(routing_key: str, body: bytes, tenants: TenantRegistry) -> BotCommand | Rejection:
    """Validate one command; a Rejection names what was expected and what arrived."""
    tenant_id = (
        routing_key.removesuffix(COMMAND_SUFFIX) if routing_key.endswith(COMMAND_SUFFIX) else None
    )
    tenant = tenants.by_id(tenant_id) if tenant_id else None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejection(
            tenant.id if tenant else None, None, "malformed_command", f"body is not JSON: {exc}"
        )
    if not isinstance(doc, dict):
        return Rejection(
            tenant.id if tenant else None,
            None,
            "malformed_command",
            f"expected a JSON object, got {type(doc).__name__}",
        )
    raw_id = doc.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_REQUEST_ID else None

    def reject(reason: str, detail: str) -> Rejection:
        return Rejection(tenant.id if tenant else None, request_id, reason, detail)

    if tenant is None:
        return reject(
            "unknown_tenant",
            f"routing key {routing_key!r} names no configured "
            f"tenant (expected <tenant>{COMMAND_SUFFIX})",
        )
    body_tenant = doc.get("tenant", tenant.id)
    if body_tenant != tenant.id:
        # Told to the routing key's tenant (who published it) only, never to the one named.
        return reject(
            "tenant_mismatch",
            f"body names tenant {str(body_tenant)[:60]!r}, routing "
            f"key {routing_key!r} names {tenant.id!r} (the routing "
            "key is the tenant; omit tenant from the body)",
        )
    if request_id is None:
        return reject(
            "invalid_command",
            f"request_id must be a string of 1 to {MAX_REQUEST_ID} characters, got {raw_id!r}",
        )
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        return reject(
            "invalid_command", f"unknown fields {unknown} (expected {', '.join(sorted(_KEYS))})"
        )
    settings = tenant.flows
    flow_name = doc.get("flow")
    if settings is None or not isinstance(flow_name, str) or flow_name not in settings.flows:
        known = sorted(settings.flows) if settings is not None else []
        return reject(
            "unknown_flow",
            f"flow {flow_name!r} is not a flow of tenant "
            f"{tenant.id!r} (known: {', '.join(known) or 'none'})",
        )
    if tenant.twilio is None:
        return reject("no_twilio_account", f"tenant {tenant.id!r} has no Twilio subaccount")
    flow = settings.flows[flow_name]
    to = doc.get("to")
    if not isinstance(to, str) or not E164_PATTERN.fullmatch(to):
        return reject(
            "invalid_number", f"to must be an E.164 number such as +14155550100, got {_shown(to)}"
        )
    caller = doc.get("from", settings.caller_id)
    if not isinstance(caller, str) or not E164_PATTERN.fullmatch(caller):
        return reject(
            "invalid_number",
            "from must be an E.164 number (or set the tenant's "
            f"flows.caller_id), got {_shown(caller)}",
        )
    variables = doc.get("vars", {})
    if not isinstance(variables, dict) or not all(
        isinstance(v, str) and len(v) <= MAX_VARIABLE_CHARS for v in variables.values()
    ):
        return reject(
            "invalid_variables",
            f"vars must be an object of strings of at most {MAX_VARIABLE_CHARS} characters",
        )
    missing = [name for name in flow.variables if name not in variables]
    if missing:
        return reject("missing_variables", f"flow {flow.name!r} needs vars {missing}")
    return BotCommand(
        tenant,
        flow,
        to,
        caller,
        request_id,
        {k: v for k, v in variables.items() if k in flow.variables},
    )


def _shown(value: object) -> str:
    """A number for an error message, masked like the logs mask it (last 4 digits)."""
    if isinstance(value, str):
        return repr(mask_phone(value))
    return type(value).__name__
