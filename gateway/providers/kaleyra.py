"""Authenticate Kaleyra.io callbacks, read the payload (pure code; docs/architecture.md#kaleyra).

Kaleyra signs none of its SMS callbacks and sends no account SID in them. What it does send is
whatever the customer put in the callback profile: the URL, the HTTP method, static headers and
a body template whose ``<variables>`` it fills in. So the tenant comes from the URL path
(``/kaleyra/<tenant>/sms/...``) and the profile carries a static per-tenant secret, in one of:

- ``Authorization: Bearer <secret>``
- ``Authorization: Basic base64(<any user>:<secret>)`` (the password is the secret)
- ``X-Hookline-Secret: <secret>``

compared in constant time with the tenant's ``callback_secret`` and, during a rotation, its
``previous_callback_secret``. Kaleyra's docs on profiles and their static headers:
https://developers.kaleyra.io/docs/callback-profiles-in-accountssettings and
https://developers.kaleyra.io/docs/sms-api-callback-request-using-callback-profiles ("static
authentication based on username and password, API KEY, or any other method based on having
kaleyra.io sending back to your system specific values as headers").

The secret is checked before the payload is parsed: an unauthenticated caller learns nothing
about which payloads would be accepted. Payload shapes (field names are resolved later, by
gateway.providers.kaleyra_events):

- GET: the query string (legacy ``dlrurl`` delivery reports, and GET callback profiles).
- POST ``application/json``: one JSON object (a callback profile body template). Kaleyra's docs
  show one object per message and no batching, so a JSON array is rejected as malformed.
- POST ``application/x-www-form-urlencoded``: the form fields.
- POST with an empty body: the query string, whatever the Content-Type (legacy dlrurl posts).
Query fields are merged under body fields: a name the body already has keeps the body's values.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.errors import AuthenticationFailed
from gateway.providers.request import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Params,
    RawRequest,
    json_params,
    parse_json_object,
    parse_urlencoded,
    require_media_type,
)
from gateway.secrets import Secret
from gateway.tenants import Tenant, TenantRegistry

AUTHORIZATION_HEADER: Final = "authorization"
SECRET_HEADER: Final = "x-hookline-secret"  # noqa: S105 (a header name, not a secret)
# Kaleyra sends no retry or delivery id; a proxy in front of hookline (or a test) may set the
# IETF draft Idempotency-Key header. Deduplication never depends on it: event ids are
# deterministic (see kaleyra_events).
IDEMPOTENCY_HEADER: Final = "idempotency-key"

_MEDIA_TYPES: Final = (JSON_CONTENT_TYPE, FORM_CONTENT_TYPE)
# Attacker-controlled values end up in log lines: keep them short.
_SHOWN: Final = 64


@dataclass(frozen=True, slots=True)
class VerifiedKaleyraCallback:
    """A callback that carried its tenant's secret, with its payload fields."""

    tenant: Tenant
    # Body fields (JSON values that are not strings JSON-encoded, null as ""), then any query
    # field the body does not have; GET and empty POST bodies: the query string alone.
    params: Params
    idempotency_key: str | None


class KaleyraVerifier:
    """Checks the static secret of Kaleyra callbacks against the tenant named in the URL."""

    __slots__ = ("_registry",)

    def __init__(self, registry: TenantRegistry) -> None:
        self._registry = registry

    def verify(self, tenant_id: str, request: RawRequest) -> VerifiedKaleyraCallback:
        """Return the verified callback, or raise a RejectedCallback subclass saying why.

        ``tenant_id`` is the ``{tenant}`` path segment. AuthenticationFailed (403) for an unknown
        tenant, a tenant without a Kaleyra account, or a missing or wrong secret;
        UnsupportedMediaType (415) and MalformedPayload (400) for payloads that cannot be read.
        """
        tenant = self._registry.by_id(tenant_id)
        if tenant is None or tenant.kaleyra is None:
            why = "no tenant" if tenant is None else "no Kaleyra account for tenant"
            raise AuthenticationFailed(f"{why} {tenant_id[:_SHOWN]!r}", reason="unknown_tenant")
        candidates = _presented_secrets(request.headers)
        if not candidates:
            raise AuthenticationFailed(
                f"Kaleyra callback for tenant {tenant.id!r} carries no secret "
                "(Authorization: Bearer/Basic or X-Hookline-Secret)",
                reason="secret_missing",
            )
        if not _any_matches(tenant.kaleyra.secrets(), candidates):
            raise AuthenticationFailed(
                f"Kaleyra callback secret does not match tenant {tenant.id!r}",
                reason="secret_invalid",
            )
        return VerifiedKaleyraCallback(
            tenant=tenant,
            params=_payload(request),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER) or None,
        )


def _presented_secrets(headers: Mapping[str, str]) -> list[bytes | None]:
    """Every secret the request presents, Authorization first, as bytes to compare.

    ``None`` stands for a credential that was sent but cannot hold a secret (an unknown
    Authorization scheme, empty or malformed Basic credentials): it never matches, so such a
    request is "secret_invalid", not "secret_missing", unless another header carries the secret.
    """
    found: list[bytes | None] = []
    authorization = (headers.get(AUTHORIZATION_HEADER) or "").strip()
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer" and credentials:
            found.append(_bytes(credentials))
        elif scheme.lower() == "basic":
            found.append(_basic_password(credentials))
        else:
            found.append(None)
    header_secret = (headers.get(SECRET_HEADER) or "").strip()
    if header_secret:
        found.append(_bytes(header_secret))
    return found


def _basic_password(credentials: str) -> bytes | None:
    """The password of Basic credentials (RFC 7617: base64 of UTF-8 ``user:password``), or
    None when they are not that (bad base64, not UTF-8, no colon, empty password)."""
    try:
        decoded = binascii.a2b_base64(credentials.encode("ascii"), strict_mode=True)
        _user, colon, password = decoded.decode("utf-8").partition(":")
    except (UnicodeError, binascii.Error):
        return None
    return password.encode("utf-8") if colon and password else None


def _bytes(text: str) -> bytes:
    # Header values are str; a lone surrogate cannot be in a configured secret, so an encoding
    # that keeps it (and then fails to match) is as good as any for the comparison.
    return text.encode("utf-8", "surrogatepass")


def _any_matches(secrets: tuple[Secret, ...], candidates: list[bytes | None]) -> bool:
    """Constant-time comparison of every candidate with every accepted secret, without an early
    exit: timing tells neither which secret matched nor whether it was the old one."""
    matched = False
    for secret in secrets:
        for candidate in candidates:
            if candidate is not None:
                matched |= secret.matches(candidate)
    return matched


def _payload(request: RawRequest) -> Params:
    """The callback's fields from the query string and/or the body (rules in the module doc)."""
    query = parse_urlencoded(request.query, what="query string")
    if request.method.upper() == "GET" or not request.body:
        return query
    if require_media_type(request, _MEDIA_TYPES) == FORM_CONTENT_TYPE:
        params = parse_urlencoded(request.body)
    else:
        params = json_params(parse_json_object(request.body))
    for name, values in query.items():
        params.setdefault(name, values)
    return params
