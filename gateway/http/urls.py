"""Rebuild the public URL a provider called, which is what Twilio signs.

Twilio computes X-Twilio-Signature over the exact URL it was configured with
(https://www.twilio.com/docs/usage/security#validating-requests). Behind a TLS-terminating
proxy the gateway sees another scheme, host and port, so the URL must be rebuilt from
configuration (HOOKLINE_PUBLIC_URL) or from X-Forwarded-Proto/Host sent by a proxy we trust.
An untrusted Host header is never used: a caller could otherwise choose the URL its forged
signature is checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.errors import AuthenticationFailed, MalformedPayload

# Attacker-controlled values end up in log lines: keep them short.
_SHOWN = 64


def _decode_ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedPayload(
            f"{what} must be ASCII (percent-encoded), got byte {exc.object[exc.start]:#x}"
        ) from exc


def request_target(scope: Mapping[str, Any]) -> tuple[str, str]:
    """The path and query string exactly as the client sent them (raw, still percent-encoded)."""
    raw_path = scope.get("raw_path")
    path = _decode_ascii(raw_path, "request path") if raw_path else scope["path"]
    query = _decode_ascii(scope.get("query_string", b""), "query string")
    return path, query


def public_base(
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    public_url: str | None,
    trusted: bool,
    forwarded_hosts: frozenset[str] = frozenset(),
) -> str:
    """Scheme://host[:port][/prefix] the provider called, without a trailing slash.

    Order: HOOKLINE_PUBLIC_URL when set; else X-Forwarded-Proto/Host when the peer is a
    trusted proxy and the host is one the operator declared (``forwarded_hosts``,
    HOOKLINE_FORWARDED_HOSTS; another is refused with 403, since a proxy that forwards the
    client's own Host would otherwise let the client choose the signed URL); else the address
    the server is bound to (never the Host header).
    """
    if public_url:
        return public_url
    scheme = scope.get("scheme", "http")
    if trusted:
        forwarded_proto = headers.get("x-forwarded-proto", "").split(",", 1)[0].strip().lower()
        forwarded_host = headers.get("x-forwarded-host", "").split(",", 1)[0].strip()
        if forwarded_proto in ("http", "https"):
            scheme = forwarded_proto
        if forwarded_host:
            if forwarded_host.lower() not in forwarded_hosts:
                raise AuthenticationFailed(
                    f"X-Forwarded-Host {forwarded_host[:_SHOWN]!r} from a trusted proxy is not "
                    "in HOOKLINE_FORWARDED_HOSTS",
                    reason="forwarded_host_not_allowed",
                )
            return f"{scheme}://{forwarded_host}"
    server = scope.get("server")
    if not server:
        return f"{scheme}://localhost"
    host, port = server[0], server[1]
    if ":" in host:  # an IPv6 literal needs brackets in a URL
        host = f"[{host}]"
    if port is None:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def public_url(base: str, path: str, query: str) -> str:
    return f"{base}{path}?{query}" if query else f"{base}{path}"
