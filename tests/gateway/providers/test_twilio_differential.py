"""Differential properties: our verifier decides exactly as twilio-python's RequestValidator."""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from gateway.errors import HooklineError
from gateway.providers.request import Params
from gateway.providers.twilio import (
    SIGNATURE_HEADER,
    TwilioVerifier,
    compute_signature,
    signature_valid,
)
from gateway.tenants import StaticTenantRegistry
from tests.support.twilio_signing import (
    MultiDict,
    raw_request,
    signed_form_raw_request,
    twilio_tenant,
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HOST_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-."
PATH_CHARS = "abcXYZ019-._~/%!$&'()*+,=:@é"
QUERY_CHARS = "abcXYZ019-._~/%!$'()*+,:@?é "
KEY_CHARS = st.characters(codec="utf-8")  # any encodable character, so no lone surrogates
TOKENS = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)


class UrlCase(NamedTuple):
    received: str  # what the verifier is given
    without: str  # the same URL without any port
    explicit: str  # the same URL with its port, or the scheme's default port
    zero_port: bool  # ":0" counts as no port for twilio-python: neither variant above verifies


@st.composite
def url_parts(draw: st.DrawFn) -> UrlCase:
    """A random http(s) URL and its port variants."""
    scheme = draw(st.sampled_from(["http", "https"]))
    host = draw(st.text(HOST_CHARS, min_size=1, max_size=20).filter(lambda h: h[0] != "-"))
    default = 443 if scheme == "https" else 80
    port = draw(st.one_of(st.none(), st.sampled_from([0, 80, 443, 8080]), st.integers(1, 65535)))
    path = draw(st.one_of(st.just(""), st.text(PATH_CHARS, max_size=25).map(lambda p: "/" + p)))
    query = draw(
        st.one_of(
            st.just(""),
            st.lists(
                st.tuples(st.text(QUERY_CHARS, max_size=6), st.text(QUERY_CHARS, max_size=8)),
                min_size=1,
                max_size=4,
            ).map(lambda pairs: "?" + "&".join(f"{k}={v}" for k, v in pairs)),
        )
    )
    rest = path + query
    without = f"{scheme}://{host}{rest}"
    explicit = f"{scheme}://{host}:{port or default}{rest}"
    received = without if port is None else f"{scheme}://{host}:{port}{rest}"
    return UrlCase(received, without, explicit, zero_port=port == 0)


PARAM_PAIRS = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["AccountSid", "Body", "To", "MediaUrl"]), st.text(KEY_CHARS)),
        st.text(KEY_CHARS, max_size=12),
    ),
    max_size=8,
)


def as_params(pairs: list[tuple[str, str]]) -> Params:
    params: Params = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def official(token: str, url: str, pairs: list[tuple[str, str]], signature: str) -> bool:
    result: bool = RequestValidator(token).validate(url, MultiDict(pairs), signature)
    return result


@SETTINGS
@given(
    parts=url_parts(),
    pairs=PARAM_PAIRS,
    token=TOKENS,
    mode=st.sampled_from(["without", "explicit", "received", "random", "tampered", "other"]),
    junk=st.text(max_size=30),
    data=st.data(),
)
def test_signature_valid_equals_request_validator(
    parts: UrlCase,
    pairs: list[tuple[str, str]],
    token: str,
    mode: str,
    junk: str,
    data: st.DataObject,
) -> None:
    """For random URLs, params, tokens and signatures our verdict is RequestValidator's."""
    received, without, explicit, zero_port = parts
    signer = RequestValidator(token)
    signed_pairs = pairs
    if mode == "other":  # signed over other params than the ones received
        signed_pairs = data.draw(PARAM_PAIRS)
    signed_url = {"without": without, "explicit": explicit}.get(mode, received)
    signature = signer.compute_signature(signed_url, MultiDict(signed_pairs))
    if mode == "random":
        signature = junk
    elif mode == "tampered":
        index = data.draw(st.integers(0, len(signature) - 1))
        swap = "A" if signature[index] != "A" else "B"
        signature = signature[:index] + swap + signature[index + 1 :]
    expected = official(token, received, pairs, signature)
    assert signature_valid(token, received, as_params(pairs), signature) is expected
    if mode == "received" or (mode in ("without", "explicit") and not zero_port):
        assert expected is True  # the property is not vacuous: valid cases really occur


# URL-ish text built from pieces that steer urllib into its corner cases.
URLISH = st.lists(
    st.sampled_from(
        [
            *"hHtTpPsS:/[]@#;?&=%.-_ 09aZé\t\n",
            "http://",
            "https://",
            "HTTPS://",
            ":443",
            ":80",
            ":0",
            ":99999",
            "host",
            "user:pw@",
            "[::1]",
        ]
    ),
    max_size=12,
).map("".join)


@SETTINGS
@given(
    url=st.one_of(URLISH, st.builds(lambda a, b: "https://" + a + b, URLISH, URLISH)),
    pairs=PARAM_PAIRS,
    token=TOKENS,
    sign_over=URLISH,
    use_own=st.booleans(),
)
def test_odd_urls_decided_like_request_validator(
    url: str, pairs: list[tuple[str, str]], token: str, sign_over: str, use_own: bool
) -> None:
    """Odd URLs (fragments, ;params, userinfo, brackets, bad ports, upper-case schemes) agree too.

    Where twilio-python raises on a URL it cannot parse, we answer False instead of raising.
    """
    signature = RequestValidator(token).compute_signature(
        url if use_own else sign_over, MultiDict(pairs)
    )
    try:
        expected = official(token, url, pairs, signature)
    except ValueError:
        expected = False
    assert signature_valid(token, url, as_params(pairs), signature) is expected


CORNER_URLS = [
    "https://h.example/x#frag",
    "https://h.example:8443/x?a=1#frag",
    "https://h.example/x;p?a=1",
    "https://h.example/x;?a=1",
    "https://h.example/x?",
    "https://h.example:443/x?",
    "https://user:pw@h.example:8443/x",
    "https://user@h.example/x",
    "https://[::1]:8443/x",
    "https://[::1]/x",
    "HTTPS://H.example:443/x",
    "https://h.example:0/x",
    "https://h.example:/x",
    "https://:443//x",
    "http:////x",
    "https://h.example:99999/x",
    "https://h.example:44a/x",
    "https://h\t.exa\nmple/x",
    "ftp://h.example/x",
    "https://h.exämple:8443/x",
]


@pytest.mark.parametrize("url", CORNER_URLS)
@pytest.mark.parametrize("signed_over", ["itself", "without_port", "with_port"])
def test_corner_urls_decided_like_request_validator(url: str, signed_over: str) -> None:
    """Hand-picked urllib corner cases get RequestValidator's verdict (False where it raises)."""
    token, pairs = "12345", [("b", "2"), ("a", "1")]
    target = {
        "itself": url,
        "without_port": url.replace(":8443", "").replace(":443", ""),
        "with_port": url.replace("h.example/", "h.example:443/"),
    }[signed_over]
    signature = RequestValidator(token).compute_signature(target, MultiDict(pairs))
    try:
        expected = official(token, url, pairs, signature)
    except ValueError:
        expected = False
    assert signature_valid(token, url, as_params(pairs), signature) is expected


@SETTINGS
@given(parts=url_parts(), pairs=PARAM_PAIRS, token=TOKENS)
def test_compute_signature_equals_request_validator(
    parts: UrlCase, pairs: list[tuple[str, str]], token: str
) -> None:
    """compute_signature is byte-for-byte RequestValidator.compute_signature."""
    url = parts.received
    expected = RequestValidator(token).compute_signature(url, MultiDict(pairs))
    assert compute_signature(token, url, as_params(pairs)) == expected


@SETTINGS
@given(
    parts=url_parts(),
    body=st.text(KEY_CHARS, max_size=60),
    token=TOKENS,
    tamper=st.sampled_from(["none", "body", "hash_case", "signature"]),
)
def test_json_body_decided_like_request_validator(
    parts: UrlCase, body: str, token: str, tamper: str
) -> None:
    """With bodySHA256 in the query, body hash and URL-only signature agree with twilio-python."""
    validator = RequestValidator(token)
    base = parts.received
    body_hash = validator.compute_hash(body)
    if tamper == "hash_case":
        body_hash = body_hash.upper()
    url = f"{base}{'&' if '?' in base else '?'}bodySHA256={body_hash}"
    signature = validator.compute_signature(url, {})
    sent_body = body + "x" if tamper == "body" else body
    if tamper == "signature":
        signature = signature[::-1]
    expected = validator.validate(url, sent_body, signature)
    assert signature_valid(token, url, None, signature, body=sent_body.encode()) is expected


TENANT_SID = "AC" + "c" * 32
TENANT_TOKEN = "tenant-token-1234567890"
VERIFIER = TwilioVerifier(
    StaticTenantRegistry([twilio_tenant("prop", TENANT_SID, TENANT_TOKEN, "old-token")])
)
CONTENT_TYPES = st.sampled_from(
    [
        "application/x-www-form-urlencoded",
        "application/json",
        "text/plain",
        "",
        "application/json; charset=utf-8",
    ]
)


@SETTINGS
@given(
    url=st.one_of(url_parts().map(lambda p: p.received), URLISH),
    body=st.one_of(
        st.binary(max_size=200),
        PARAM_PAIRS.map(lambda pairs: urlencode([("AccountSid", TENANT_SID), *pairs]).encode()),
        st.just(b'{"AccountSid": "' + TENANT_SID.encode() + b'"}'),
    ),
    content_type=CONTENT_TYPES,
    signature=st.one_of(st.none(), st.text(max_size=30)),
)
def test_verify_raises_only_hookline_errors(
    url: str, body: bytes, content_type: str, signature: str | None
) -> None:
    """Whatever arrives, verify() returns or raises a HooklineError subclass, nothing else."""
    headers = {"content-type": content_type}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    try:
        VERIFIER.verify(raw_request(url, body, headers))
    except HooklineError as error:
        assert 400 <= error.http_status < 500
        assert TENANT_TOKEN not in str(error)


@SETTINGS
@given(parts=url_parts(), pairs=PARAM_PAIRS, token=st.sampled_from([TENANT_TOKEN, "old-token"]))
def test_verify_accepts_what_the_official_validator_signs(
    parts: UrlCase, pairs: list[tuple[str, str]], token: str
) -> None:
    """Any form callback signed by twilio-python with a tenant token verifies, params intact."""
    received, without, _, zero_port = parts
    signed_url = received if zero_port else without
    full = [("AccountSid", TENANT_SID), *pairs]
    signed = signed_form_raw_request(signed_url, full, token)
    result: Any = VERIFIER.verify(raw_request(received, signed.body, signed.headers))
    assert result.tenant.id == "prop"
    assert result.params == as_params(full)
