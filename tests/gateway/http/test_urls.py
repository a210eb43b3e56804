"""Public URL reconstruction: configuration and trusted proxies only, never the Host header."""

from __future__ import annotations

import pytest

from gateway.errors import AuthenticationFailed, MalformedPayload
from gateway.http.urls import public_base, public_url, request_target

OURS = frozenset({"hooks.example.com"})


def scope(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "type": "http",
        "scheme": "http",
        "server": ("10.0.0.5", 8080),
        "path": "/twilio/voice",
        "raw_path": b"/twilio/voice",
        "query_string": b"",
    }
    base.update(overrides)
    return base


def test_configured_public_url_wins_over_everything() -> None:
    """HOOKLINE_PUBLIC_URL is used even when a trusted proxy sends forwarded headers."""
    headers = {"x-forwarded-proto": "http", "x-forwarded-host": "evil.example"}
    base = public_base(scope(), headers, public_url="https://hooks.example.com", trusted=True)
    assert base == "https://hooks.example.com"


def test_untrusted_peer_forwarded_headers_and_host_are_ignored() -> None:
    """Forwarded headers and Host from an untrusted peer never shape the signed URL."""
    headers = {
        "host": "evil.example",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "evil.example",
    }
    assert public_base(scope(), headers, public_url=None, trusted=False) == "http://10.0.0.5:8080"


def test_trusted_proxy_headers_are_used() -> None:
    """A trusted proxy's first X-Forwarded-Proto/Host value rebuilds the public base."""
    headers = {"x-forwarded-proto": "https, http", "x-forwarded-host": "Hooks.Example.com, x"}
    base = public_base(scope(), headers, public_url=None, trusted=True, forwarded_hosts=OURS)
    assert base == "https://Hooks.Example.com"


def test_trusted_proxy_forwarding_an_undeclared_host_is_refused() -> None:
    """A trusted proxy that passes a client's own host on is refused (403), not believed: the
    client would otherwise choose the URL its signature is checked against."""
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"}
    with pytest.raises(AuthenticationFailed) as info:
        public_base(scope(), headers, public_url=None, trusted=True, forwarded_hosts=OURS)
    assert (info.value.http_status, info.value.reason) == (403, "forwarded_host_not_allowed")
    with pytest.raises(AuthenticationFailed):
        public_base(scope(), headers, public_url=None, trusted=True)


def test_trusted_proxy_with_unknown_proto_keeps_scope_scheme() -> None:
    """A forwarded scheme other than http/https is not believed."""
    headers = {"x-forwarded-proto": "gopher", "x-forwarded-host": "hooks.example.com"}
    assert (
        public_base(scope(), headers, public_url=None, trusted=True, forwarded_hosts=OURS)
        == "http://hooks.example.com"
    )


def test_ipv6_server_address_is_bracketed() -> None:
    """An IPv6 bind address becomes a valid URL authority."""
    assert public_base(scope(server=("::1", 8080)), {}, public_url=None, trusted=False) == (
        "http://[::1]:8080"
    )


def test_query_string_is_kept_exactly_as_sent() -> None:
    """The raw path and query (still percent-encoded, order kept) form the signed URL."""
    path, query = request_target(
        scope(raw_path=b"/twilio/voice%2Fx", path="/twilio/voice/x", query_string=b"b=2&a=%20")
    )
    assert (path, query) == ("/twilio/voice%2Fx", "b=2&a=%20")
    assert public_url("https://h", path, query) == "https://h/twilio/voice%2Fx?b=2&a=%20"
    assert public_url("https://h", "/p", "") == "https://h/p"


def test_non_ascii_query_is_malformed() -> None:
    """Raw non-ASCII bytes in the query string are a 400, not a crash."""
    with pytest.raises(MalformedPayload) as info:
        request_target(scope(query_string="a=é".encode()))
    assert info.value.http_status == 400
