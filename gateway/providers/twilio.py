"""Verify Twilio webhook signatures per tenant (pure code, on the hot path of every callback).

Twilio signs each callback with the auth token of the (sub)account it belongs to: HMAC-SHA1 over
the full URL it called followed by every POST parameter as ``name+value`` in sorted order,
base64-encoded into ``X-Twilio-Signature``. JSON bodies are signed over the URL alone and carry the
body's SHA-256 hex digest in the ``bodySHA256`` query parameter instead.
https://www.twilio.com/docs/usage/security#validating-requests

The decision is the one ``twilio.request_validator.RequestValidator.validate`` makes (a
differential test holds us to it), restated here for speed: the HMAC key state of every token is
computed once, the sorted parameter string is built once per request, and the URL is split with
plain string operations unless it has a shape only ``urllib`` handles exactly. Normalization of a
verified callback into events lives elsewhere.
"""

from __future__ import annotations

import binascii
import hmac
from dataclasses import dataclass
from hashlib import sha1, sha256
from typing import Any, Final
from urllib.parse import parse_qs, urlparse, urlsplit, urlunparse

from gateway.errors import AuthenticationFailed
from gateway.providers.request import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    Params,
    RawRequest,
    first,
    json_params,
    parse_json_object,
    parse_urlencoded,
    require_media_type,
)
from gateway.tenants import Tenant, TenantRegistry, TwilioAccount

SIGNATURE_HEADER: Final = "x-twilio-signature"
IDEMPOTENCY_HEADER: Final = "i-twilio-idempotency-token"
BODY_HASH_PARAM: Final = "bodySHA256"
ACCOUNT_SID_PARAM: Final = "AccountSid"

_MEDIA_TYPES: Final = (FORM_CONTENT_TYPE, JSON_CONTENT_TYPE)
# Attacker-controlled values end up in log lines: keep them short.
_SHOWN: Final = 64
_URL_SHOWN: Final = 200
_URL_CACHE_MAX: Final = 1024


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    """A callback whose signature matched its tenant's token."""

    tenant: Tenant
    # Form parameters; for JSON bodies the top-level fields as strings (non-strings JSON-encoded).
    params: Params
    json_body: dict[str, Any] | None
    idempotency_token: str | None


def _url_variants_slow(url: str) -> tuple[str, str] | None:
    """The URL without and with its port, rebuilt through urllib exactly as twilio-python does.

    Used for the rare shapes the fast path leaves alone (fragments, ``;params``, userinfo, IPv6,
    upper-case schemes, ...), where urllib's round trip may change the text. ``None`` when urllib
    refuses the URL (twilio-python would raise; for us it simply cannot match).
    """
    try:
        parts = urlparse(url)
        port = parts.port
    except ValueError:
        return None
    if port:  # port 0 counts as "no port" there too
        return urlunparse(parts._replace(netloc=parts.netloc.partition(":")[0])), urlunparse(parts)
    default = "443" if parts.scheme == "https" else "80"
    return urlunparse(parts), urlunparse(parts._replace(netloc=f"{parts.netloc}:{default}"))


def _url_variants(url: str) -> tuple[str, str] | None:
    """The URL without and with the port: Twilio signs either form depending on the product.

    Twilio's libraries accept both, adding the scheme's default port when there is none and
    removing whatever port there is otherwise; we accept exactly the same two strings.
    """
    if url.startswith("https://"):
        start, default = 8, ":443"
    elif url.startswith("http://"):
        start, default = 7, ":80"
    else:
        return _url_variants_slow(url)
    # Characters that make urllib's round trip differ from the text (or split differently).
    if "#" in url or ";" in url or "\t" in url or "\n" in url or "\r" in url or url[-1] == "?":
        return _url_variants_slow(url)
    end = url.find("/", start)
    if end < 0:
        end = len(url)
    query = url.find("?", start, end)
    if query >= 0:
        end = query
    netloc = url[start:end]
    host, _, port = netloc.partition(":")
    if not host or not netloc.isascii() or "@" in netloc or "[" in netloc or "]" in netloc:
        return _url_variants_slow(url)
    if port:
        if not port.isdigit() or int(port) > 65535:
            return None
        if int(port):
            return url[:start] + host + url[end:], url
    return url, url[:end] + default + url[end:]


def _params_text(params: Params | None) -> str:
    """Parameters as Twilio concatenates them: names sorted, each distinct value sorted."""
    if not params:
        return ""
    parts: list[str] = []
    for name in sorted(params):
        values = params[name]
        if len(values) == 1:  # the common case: skip the set and the sort
            parts.append(name)
            parts.append(values[0])
        else:
            parts.extend(name + value for value in sorted(set(values)))
    return "".join(parts)


def _encoded_variants(url: str) -> tuple[bytes, bytes] | None:
    """Both URL variants as the bytes that are signed; None when nothing can match."""
    variants = _url_variants(url)
    if variants is None:
        return None
    try:
        return variants[0].encode(), variants[1].encode()
    except UnicodeEncodeError:  # lone surrogates: nothing Twilio can have signed
        return None


def _signature_matches(
    keys: tuple[hmac.HMAC, ...],
    urls: tuple[bytes, bytes] | None,
    params: Params | None,
    signature: str,
) -> bool:
    """Whether ``signature`` is any key's signature over either URL variant plus the params."""
    if urls is None or not signature.isascii():  # base64 is ASCII; compare_digest wants it
        return False
    try:
        suffix = _params_text(params).encode()
    except UnicodeEncodeError:  # lone surrogates: nothing Twilio can have signed
        return False
    given = signature.encode()
    for key in keys:
        for signed_url in urls:
            mac = key.copy()  # the key schedule is done once per token, not per request
            mac.update(signed_url + suffix)
            if hmac.compare_digest(binascii.b2a_base64(mac.digest(), newline=False), given):
                return True
    return False


def _body_hash_param(url: str) -> str | None:
    """The first non-empty ``bodySHA256`` query value, parsed the way twilio-python parses it."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    if not query:
        return None
    values = parse_qs(query).get(BODY_HASH_PARAM)
    return values[0] if values else None


def _body_hash_matches(body: bytes, expected: str) -> bool:
    """Constant-time check of the body's SHA-256 hex digest against the query's value."""
    return expected.isascii() and hmac.compare_digest(sha256(body).hexdigest(), expected)


def _key_state(token: str) -> hmac.HMAC:
    """HMAC-SHA1 keyed with ``token``, to be ``.copy()``-ed per request (saves the key setup)."""
    return hmac.new(token.encode(), digestmod=sha1)


def compute_signature(token: str, url: str, params: Params) -> str:
    """``X-Twilio-Signature`` for ``url`` exactly as given (no port juggling) and ``params``."""
    mac = _key_state(token)
    mac.update((url + _params_text(params)).encode())
    return binascii.b2a_base64(mac.digest(), newline=False).decode()


def signature_valid(
    token: str, url: str, params: Params | None, signature: str, body: bytes | None = None
) -> bool:
    """The decision of ``RequestValidator(token).validate`` for one request.

    ``body`` matters only when the URL carries ``bodySHA256`` (a JSON callback): then the body's
    hash must match and the signature covers the URL alone. URLs urllib cannot parse never match.
    """
    if body is not None:
        expected = _body_hash_param(url)
        if expected is not None:
            if not _body_hash_matches(body, expected):
                return False
            params = None
    return _signature_matches((_key_state(token),), _encoded_variants(url), params, signature)


class TwilioVerifier:
    """Verifies Twilio callbacks against the token of the tenant that owns their AccountSid."""

    __slots__ = ("_keys", "_registry", "_urls")

    def __init__(self, registry: TenantRegistry) -> None:
        self._registry = registry
        # AccountSid -> (the account the state was built from, key state per accepted token).
        self._keys: dict[str, tuple[TwilioAccount, tuple[hmac.HMAC, ...]]] = {}
        # Public URL -> its two signed variants: a route's URL repeats on every callback.
        self._urls: dict[str, tuple[bytes, bytes] | None] = {}
        for tenant in registry:
            if tenant.twilio is not None:
                self._keys_for(tenant.twilio)

    def _keys_for(self, account: TwilioAccount) -> tuple[hmac.HMAC, ...]:
        """Precomputed key state; rebuilt when the registry hands out a different account object
        (a reloaded registry, a rotated or retired previous token)."""
        cached = self._keys.get(account.account_sid)
        if cached is not None and cached[0] is account:
            return cached[1]
        keys = tuple(_key_state(token.reveal()) for token in account.tokens())
        self._keys[account.account_sid] = (account, keys)
        return keys

    def _variants(self, url: str) -> tuple[bytes, bytes] | None:
        if url in self._urls:
            return self._urls[url]
        variants = _encoded_variants(url)
        if len(self._urls) < _URL_CACHE_MAX:  # query strings vary: keep the cache bounded
            self._urls[url] = variants
        return variants

    def verify(self, request: RawRequest) -> VerifiedCallback:
        """Return the verified callback, or raise a RejectedCallback subclass saying why."""
        media_type = require_media_type(request, _MEDIA_TYPES)
        url = request.url
        json_body: dict[str, Any] | None = None
        if media_type == FORM_CONTENT_TYPE:
            params = parse_urlencoded(request.body)
            signed_params: Params | None = params
            account_sid = first(params, ACCOUNT_SID_PARAM)
        else:
            json_body = parse_json_object(request.body)
            # JSON callbacks are signed over the URL only; bodySHA256 binds the body to it.
            expected = _body_hash_param(url)
            if expected is None:
                raise AuthenticationFailed(
                    f"JSON callback without {BODY_HASH_PARAM} in the URL query",
                    reason="body_hash_missing",
                )
            if not _body_hash_matches(request.body, expected):
                raise AuthenticationFailed(
                    f"JSON body does not match the {BODY_HASH_PARAM} in the URL query",
                    reason="body_hash_mismatch",
                )
            params = json_params(json_body)
            signed_params = None
            sid_value = json_body.get(ACCOUNT_SID_PARAM)
            account_sid = sid_value if isinstance(sid_value, str) else None
        if not account_sid:
            raise AuthenticationFailed(
                f"callback carries no {ACCOUNT_SID_PARAM}", reason="account_sid_missing"
            )
        tenant = self._registry.by_twilio_account(account_sid)
        account = None if tenant is None else tenant.twilio
        if tenant is None or account is None:
            raise AuthenticationFailed(
                f"no tenant has Twilio AccountSid {account_sid[:_SHOWN]!r}",
                reason="unknown_account",
            )
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise AuthenticationFailed(
                f"no X-Twilio-Signature on a callback for tenant {tenant.id!r} "
                f"(AccountSid {account_sid!r})",
                reason="signature_missing",
            )
        if not _signature_matches(
            self._keys_for(account), self._variants(url), signed_params, signature
        ):
            # Name the URL that was checked: most failures in a new set-up are a public URL
            # that differs from what Twilio signed (localhost vs 127.0.0.1, a tunnel, a proxy).
            raise AuthenticationFailed(
                f"X-Twilio-Signature does not match any auth token of tenant {tenant.id!r} "
                f"(AccountSid {account_sid!r}) for the URL {url[:_URL_SHOWN]!r}; if Twilio "
                "called another URL (a proxy, a tunnel, another host name), set "
                "HOOKLINE_PUBLIC_URL to the base URL configured in Twilio",
                reason="signature_invalid",
            )
        return VerifiedCallback(
            tenant=tenant,
            params=params,
            json_body=json_body,
            idempotency_token=request.headers.get(IDEMPOTENCY_HEADER) or None,
        )
