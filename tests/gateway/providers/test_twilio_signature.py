"""TwilioVerifier.verify: what it accepts, what it rejects, and with which error."""

from __future__ import annotations

import pytest

from gateway.errors import AuthenticationFailed, MalformedPayload, UnsupportedMediaType
from gateway.providers.request import RawRequest
from gateway.providers.twilio import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TwilioVerifier,
    VerifiedCallback,
    compute_signature,
    signature_valid,
)
from gateway.tenants import StaticTenantRegistry, Tenant
from tests.support.twilio_signing import (
    official_signature,
    raw_request,
    signed_form_raw_request,
    signed_json_raw_request,
    twilio_tenant,
)

URL = "https://hooks.example.com/twilio/messaging/status?region=eu"
ACME_SID = "AC" + "a" * 32
ACME_TOKEN = "acme-token-0123456789abcdef0123"
ACME_OLD_TOKEN = "acme-old-token-fedcba9876543210"
GLOBEX_SID = "AC" + "b" * 32
GLOBEX_TOKEN = "globex-token-00112233445566778899"

STATUS = [
    ("AccountSid", ACME_SID),
    ("ApiVersion", "2010-04-01"),
    ("From", "+15005550006"),
    ("MessageSid", "SM" + "1" * 32),
    ("MessageStatus", "delivered"),
    ("SmsSid", "SM" + "1" * 32),
    ("SmsStatus", "delivered"),
    ("To", "+15005550009"),
]


def registry(*tenants: Tenant) -> StaticTenantRegistry:
    return StaticTenantRegistry(tenants)


@pytest.fixture
def verifier() -> TwilioVerifier:
    return TwilioVerifier(
        registry(
            twilio_tenant("acme", ACME_SID, ACME_TOKEN),
            twilio_tenant("globex", GLOBEX_SID, GLOBEX_TOKEN),
        )
    )


def rejected(verifier: TwilioVerifier, request: RawRequest) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(request)
    assert info.value.http_status == 403
    return info.value


def test_valid_form_callback_accepted(verifier: TwilioVerifier) -> None:
    """A status callback signed with the tenant's token yields that tenant and its params."""
    result = verifier.verify(signed_form_raw_request(URL, STATUS, ACME_TOKEN))
    assert isinstance(result, VerifiedCallback)
    assert result.tenant.id == "acme"
    assert result.params["MessageStatus"] == ["delivered"]
    assert result.params["From"] == ["+15005550006"]
    assert result.json_body is None
    assert result.idempotency_token is None


def test_tampered_param_rejected(verifier: TwilioVerifier) -> None:
    """Changing one parameter value after signing fails with signature_invalid."""
    good = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    body = good.body.replace(b"MessageStatus=delivered", b"MessageStatus=failed")
    assert body != good.body
    error = rejected(verifier, raw_request(URL, body, good.headers))
    assert error.reason == "signature_invalid"


def test_added_param_rejected(verifier: TwilioVerifier) -> None:
    """Appending a parameter after signing fails with signature_invalid."""
    good = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    error = rejected(verifier, raw_request(URL, good.body + b"&Extra=1", good.headers))
    assert error.reason == "signature_invalid"


def test_tampered_url_rejected(verifier: TwilioVerifier) -> None:
    """The same body and signature on another URL (path or query) fail with signature_invalid."""
    good = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    for url in (URL.replace("status", "statuz"), URL + "&x=1", URL.replace("https", "http")):
        error = rejected(verifier, raw_request(url, good.body, good.headers))
        assert error.reason == "signature_invalid"


def test_forged_signature_rejected(verifier: TwilioVerifier) -> None:
    """A well-formed but made-up signature, and non-ASCII junk, fail with signature_invalid."""
    for forged in ("RSOYDt4T1cUTdK1PDd93/VVr8B8=", "x", "sígnature"):
        request = signed_form_raw_request(
            URL, STATUS, ACME_TOKEN, headers={SIGNATURE_HEADER: forged}
        )
        error = rejected(verifier, request)
        assert error.reason == "signature_invalid"


@pytest.mark.parametrize("value", [None, ""])
def test_missing_signature_rejected(verifier: TwilioVerifier, value: str | None) -> None:
    """No (or an empty) X-Twilio-Signature header fails with signature_missing."""
    good = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    headers = {k: v for k, v in good.headers.items() if k != SIGNATURE_HEADER}
    if value is not None:
        headers[SIGNATURE_HEADER] = value
    error = rejected(verifier, raw_request(URL, good.body, headers))
    assert error.reason == "signature_missing"


def test_cross_tenant_signature_rejected(verifier: TwilioVerifier) -> None:
    """Acme's AccountSid signed with Globex's (valid, known) token fails, naming only acme."""
    error = rejected(verifier, signed_form_raw_request(URL, STATUS, GLOBEX_TOKEN))
    assert error.reason == "signature_invalid"
    assert "acme" in str(error) and ACME_SID in str(error)
    assert GLOBEX_TOKEN not in str(error) and ACME_TOKEN not in str(error)


def test_unknown_account_rejected(verifier: TwilioVerifier) -> None:
    """A correctly signed callback from an AccountSid no tenant owns fails with unknown_account."""
    params = [(k, "AC" + "f" * 32 if k == "AccountSid" else v) for k, v in STATUS]
    error = rejected(verifier, signed_form_raw_request(URL, params, ACME_TOKEN))
    assert error.reason == "unknown_account"


def test_tenant_without_twilio_section_is_unknown_account() -> None:
    """A registry returning a tenant without a twilio section gives unknown_account, not a crash."""

    class OddRegistry(StaticTenantRegistry):
        def by_twilio_account(self, account_sid: str) -> Tenant | None:
            return self.by_id("plain")

    verifier = TwilioVerifier(OddRegistry([Tenant(id="plain", name="Plain")]))
    error = rejected(verifier, signed_form_raw_request(URL, STATUS, ACME_TOKEN))
    assert error.reason == "unknown_account"


@pytest.mark.parametrize("sid", [None, ""])
def test_missing_account_sid_rejected(verifier: TwilioVerifier, sid: str | None) -> None:
    """Without an AccountSid (or with an empty one) the callback fails with account_sid_missing."""
    params = [(k, v) for k, v in STATUS if k != "AccountSid"]
    if sid is not None:
        params.append(("AccountSid", sid))
    error = rejected(verifier, signed_form_raw_request(URL, params, ACME_TOKEN))
    assert error.reason == "account_sid_missing"


def test_previous_token_accepted_while_set_and_rejected_once_unset() -> None:
    """During a rotation both tokens verify; after it only the current one does."""
    rotating = TwilioVerifier(registry(twilio_tenant("acme", ACME_SID, ACME_TOKEN, ACME_OLD_TOKEN)))
    old = signed_form_raw_request(URL, STATUS, ACME_OLD_TOKEN)
    new = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    assert rotating.verify(old).tenant.id == "acme"
    assert rotating.verify(new).tenant.id == "acme"

    rotated = TwilioVerifier(registry(twilio_tenant("acme", ACME_SID, ACME_TOKEN)))
    assert rotated.verify(new).tenant.id == "acme"
    error = rejected(rotated, old)
    assert error.reason == "signature_invalid"


def test_key_state_follows_a_registry_that_changes() -> None:
    """A verifier rebuilds its cached keys when the registry hands out a different account."""

    class SwappableRegistry(StaticTenantRegistry):
        current: Tenant

        def by_twilio_account(self, account_sid: str) -> Tenant | None:
            return self.current if account_sid == ACME_SID else None

    reg = SwappableRegistry([twilio_tenant("acme", ACME_SID, ACME_TOKEN, ACME_OLD_TOKEN)])
    reg.current = next(iter(reg))
    verifier = TwilioVerifier(reg)
    old = signed_form_raw_request(URL, STATUS, ACME_OLD_TOKEN)
    assert verifier.verify(old).tenant.id == "acme"
    reg.current = twilio_tenant("acme", ACME_SID, ACME_TOKEN)
    assert rejected(verifier, old).reason == "signature_invalid"


def test_json_with_correct_body_hash_accepted(verifier: TwilioVerifier) -> None:
    """A JSON callback with a matching bodySHA256 is accepted; params mirror its top level."""
    doc = {
        "AccountSid": ACME_SID,
        "Status": "delivered",
        "Count": 3,
        "Flag": True,
        "Nothing": None,
        "Nested": {"a": [1, 2]},
    }
    result = verifier.verify(signed_json_raw_request(URL, doc, ACME_TOKEN))
    assert result.tenant.id == "acme"
    assert result.json_body == doc
    assert result.params == {
        "AccountSid": [ACME_SID],
        "Status": ["delivered"],
        "Count": ["3"],
        "Flag": ["true"],
        "Nothing": [""],
        "Nested": ['{"a":[1,2]}'],
    }


def test_json_with_tampered_body_rejected(verifier: TwilioVerifier) -> None:
    """A JSON body changed after signing fails with body_hash_mismatch."""
    good = signed_json_raw_request(URL, {"AccountSid": ACME_SID, "Status": "sent"}, ACME_TOKEN)
    body = good.body.replace(b"sent", b"read")
    error = rejected(verifier, raw_request(good.url, body, good.headers))
    assert error.reason == "body_hash_mismatch"


def test_json_with_tampered_url_rejected(verifier: TwilioVerifier) -> None:
    """A JSON callback whose URL changed (hash kept) fails with signature_invalid."""
    good = signed_json_raw_request(URL, {"AccountSid": ACME_SID}, ACME_TOKEN)
    error = rejected(verifier, raw_request(good.url + "&x=1", good.body, good.headers))
    assert error.reason == "signature_invalid"


@pytest.mark.parametrize("suffix", ["", "&bodySHA256="])
def test_json_without_body_hash_rejected(verifier: TwilioVerifier, suffix: str) -> None:
    """A JSON callback whose URL has no (or an empty) bodySHA256 fails with body_hash_missing."""
    url = URL + suffix
    body = b'{"AccountSid": "%s"}' % ACME_SID.encode()
    headers = {
        "content-type": "application/json",
        SIGNATURE_HEADER: official_signature(ACME_TOKEN, url, {}),
    }
    error = rejected(verifier, raw_request(url, body, headers))
    assert error.reason == "body_hash_missing"


def test_json_without_account_sid_rejected(verifier: TwilioVerifier) -> None:
    """A JSON AccountSid that is absent or not a string fails with account_sid_missing."""
    for doc in ({"Status": "sent"}, {"AccountSid": 12}, {"AccountSid": None}):
        error = rejected(verifier, signed_json_raw_request(URL, doc, ACME_TOKEN))
        assert error.reason == "account_sid_missing"


@pytest.mark.parametrize("content_type", [None, "text/plain", "multipart/form-data; boundary=x"])
def test_wrong_content_type_is_415(verifier: TwilioVerifier, content_type: str | None) -> None:
    """Anything but form or JSON is refused with UnsupportedMediaType (415)."""
    good = signed_form_raw_request(URL, STATUS, ACME_TOKEN)
    headers = {k: v for k, v in good.headers.items() if k != "content-type"}
    if content_type is not None:
        headers["content-type"] = content_type
    with pytest.raises(UnsupportedMediaType) as info:
        verifier.verify(raw_request(URL, good.body, headers))
    assert info.value.http_status == 415
    assert info.value.reason == "unsupported_media_type"


def test_content_type_parameters_and_case_accepted(verifier: TwilioVerifier) -> None:
    """A charset parameter and upper-case media type do not matter."""
    request = signed_form_raw_request(
        URL,
        STATUS,
        ACME_TOKEN,
        headers={"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"},
    )
    assert verifier.verify(request).tenant.id == "acme"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"AccountSid=AC1&Body=\xff\xfe"),
        ("application/x-www-form-urlencoded", b"AccountSid=AC1&Body=%FF"),
        ("application/json", b'{"AccountSid": "\xff"}'),
    ],
)
def test_invalid_utf8_is_400(verifier: TwilioVerifier, content_type: str, body: bytes) -> None:
    """Invalid UTF-8 (raw or percent-encoded) is MalformedPayload (400)."""
    headers = {"content-type": content_type, SIGNATURE_HEADER: "x"}
    with pytest.raises(MalformedPayload) as info:
        verifier.verify(raw_request(URL, body, headers))
    assert info.value.http_status == 400
    assert info.value.reason == "malformed_payload"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"AccountSid=AC1&novalue"),
        ("application/x-www-form-urlencoded", b"AccountSid=AC1&&x=1"),
        ("application/json", b'{"AccountSid": '),
        ("application/json", b'["AccountSid"]'),
    ],
)
def test_malformed_payload_is_400(verifier: TwilioVerifier, content_type: str, body: bytes) -> None:
    """A malformed form or JSON body (or JSON that is not an object) is MalformedPayload (400)."""
    headers = {"content-type": content_type, SIGNATURE_HEADER: "x"}
    with pytest.raises(MalformedPayload) as info:
        verifier.verify(raw_request(URL, body, headers))
    assert info.value.http_status == 400
    assert info.value.reason == "malformed_payload"


def test_repeated_keys_accepted(verifier: TwilioVerifier) -> None:
    """Repeated keys (with duplicates) verify, and every value is kept in arrival order."""
    params = [*STATUS, ("MediaUrl", "b"), ("MediaUrl", "a"), ("MediaUrl", "b"), ("Empty", "")]
    result = verifier.verify(signed_form_raw_request(URL, params, ACME_TOKEN))
    assert result.params["MediaUrl"] == ["b", "a", "b"]
    assert result.params["Empty"] == [""]


def test_unicode_params_accepted(verifier: TwilioVerifier) -> None:
    """Non-ASCII values (emoji, accents) verify; the signature covers their UTF-8 bytes."""
    params = [*STATUS, ("Body", "Olá 👋 ünïcødé"), ("ProfileName", "José")]
    result = verifier.verify(signed_form_raw_request(URL, params, ACME_TOKEN))
    assert result.params["Body"] == ["Olá 👋 ünïcødé"]


@pytest.mark.parametrize(
    ("signed_url", "received_url"),
    [
        ("https://hooks.example.com:443/t?a=1", "https://hooks.example.com/t?a=1"),
        ("https://hooks.example.com/t?a=1", "https://hooks.example.com:443/t?a=1"),
        ("http://hooks.example.com:80/t", "http://hooks.example.com/t"),
        ("https://hooks.example.com/t", "https://hooks.example.com:8443/t"),
    ],
)
def test_url_with_and_without_port_accepted(
    verifier: TwilioVerifier, signed_url: str, received_url: str
) -> None:
    """A signature over the URL with the port verifies the URL without it, and vice versa."""
    signed = signed_form_raw_request(signed_url, STATUS, ACME_TOKEN)
    request = raw_request(received_url, signed.body, signed.headers)
    assert verifier.verify(request).tenant.id == "acme"


def test_idempotency_token_surfaced(verifier: TwilioVerifier) -> None:
    """I-Twilio-Idempotency-Token (any header case) reaches the verified callback."""
    request = signed_form_raw_request(
        URL, STATUS, ACME_TOKEN, headers={"I-Twilio-Idempotency-Token": "idem-123"}
    )
    assert verifier.verify(request).idempotency_token == "idem-123"
    assert IDEMPOTENCY_HEADER == "i-twilio-idempotency-token"


def test_compute_signature_matches_official_validator() -> None:
    """compute_signature gives the same string as twilio-python for repeated keys and unicode."""
    pairs = [("b", "2"), ("a", "x"), ("a", "é"), ("a", "x"), ("c", "")]
    params = {"b": ["2"], "a": ["x", "é", "x"], "c": [""]}
    assert compute_signature(ACME_TOKEN, URL, params) == official_signature(ACME_TOKEN, URL, pairs)


def test_signature_valid_rejects_unparseable_urls() -> None:
    """URLs urllib refuses (bad port, broken IPv6) never validate instead of raising."""
    for url in ("https://h:99999/x", "https://h:8o/x", "https://[::1/x"):
        assert signature_valid(ACME_TOKEN, url, {}, compute_signature(ACME_TOKEN, url, {})) is False
