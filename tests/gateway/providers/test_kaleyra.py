"""KaleyraVerifier.verify: which secrets it accepts, which payloads it reads, what it rejects.

Payload samples follow Kaleyra's docs: the incoming-SMS callback profile sample of
https://developers.kaleyra.io/docs/create-sms-callback-profile-to-receive-incoming-sms-messages
and the legacy dlrurl placeholders ({sid}, {status}, {custom}, {delivered}, {mobile}, ...).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import (
    AuthenticationFailed,
    HooklineError,
    MalformedPayload,
    RejectedCallback,
    UnsupportedMediaType,
)
from gateway.providers.kaleyra import KaleyraVerifier, VerifiedKaleyraCallback
from gateway.providers.kaleyra_events import normalize
from gateway.providers.request import MAX_FIELDS, RawRequest
from gateway.secrets import Secret
from gateway.tenants import KaleyraAccount, StaticTenantRegistry, Tenant, TwilioAccount
from tests.support.schema_check import assert_valid_event

ACME_SECRET = "acme-kaleyra-secret-0123456789"
ACME_OLD_SECRET = "acme-kaleyra-old-secret-98765"
GLOBEX_SECRET = "globex-kaleyra-secret-abcdef"
MESSAGE_ID = "ee8a1f2c-3b4d-4e5f-8a9b-9b717c0d330d:1"
ACME = Tenant(
    id="acme",
    name="Acme",
    kaleyra=KaleyraAccount("HXAB12XXXXXX71IN", Secret(ACME_SECRET), Secret(ACME_OLD_SECRET)),
)
GLOBEX = Tenant(
    id="globex", name="Globex", kaleyra=KaleyraAccount("HXGL0BEXXXXX42IN", Secret(GLOBEX_SECRET))
)
TWILIO_ONLY = Tenant(
    id="initech", name="Initech", twilio=TwilioAccount("AC" + "c" * 32, Secret("initech-token"))
)
VERIFIER = KaleyraVerifier(StaticTenantRegistry([ACME, GLOBEX, TWILIO_ONLY]))
NOW = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)

DLR_JSON = {
    "id": MESSAGE_ID,
    "status": "Delivered",
    "status_details": "DELIVERED",
    "to": "+919876543210",
    "sender": "KLRHXA",
    "units": 2,
    "credits": "0.2500",
    "delivered_at": "2025-04-17 18:35:20",
    "custom": None,
    "meta": {"a": [1, True]},
}
INCOMING_JSON = {"description": "Message has been sent",
                 "id": "90e1a2b3-8865-4a96-85b6-4c0ffee00048",
                 "kid": "90e74b4c-8d1e-4a96-85b6-44c0ffee0008", "recipient": "+919812345678",
                 "source": "919876543210", "status": "SENT", "status_trace": "SENT",
                 "message": "UNSUBSCRIBE THE OFFER message", "keyword": "SAMPLE",
                 "operator": "JIO", "circle": "JIO ASSAM", "timestamp": "2025-04-17 18:35:20",
                 "parts[n]": "SAMPLE"}  # fmt: skip
LEGACY_QUERY = urlencode(
    {
        "sid": MESSAGE_ID,
        "status": "DELIVRD",
        "custom": "order-1",
        "delivered": "2025-04-17 18:35:20",
        "mobile": "919876543210",
        "units": "1",
        "credits": "1.00",
    }
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(
    method: str = "POST",
    body: bytes = b"",
    content_type: str | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    route: str = "status",
    tenant: str = "acme",
) -> RawRequest:
    """A RawRequest as the HTTP layer builds it (headers lower-cased)."""
    all_headers = {name.lower(): value for name, value in (headers or {}).items()}
    if content_type is not None:
        all_headers["content-type"] = content_type
    url = f"https://hooks.example.com/kaleyra/{tenant}/sms/{route}" + (f"?{query}" if query else "")
    return RawRequest(method=method, url=url, headers=all_headers, body=body, query=query)


def json_request(
    doc: object, secret: str = ACME_SECRET, *, query: str = "", route: str = "status"
) -> RawRequest:
    return request(
        body=orjson.dumps(doc),
        content_type="application/json",
        query=query,
        headers={"Authorization": f"Bearer {secret}"},
        route=route,
    )


def bearer(secret: str = ACME_SECRET) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def rejected(req: RawRequest, tenant: str = "acme") -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as info:
        VERIFIER.verify(tenant, req)
    assert info.value.http_status == 403
    return info.value


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {ACME_SECRET}"},
        {"Authorization": f"bearer   {ACME_SECRET} "},
        {"Authorization": basic("kaleyra", ACME_SECRET)},
        {"Authorization": basic("", ACME_SECRET)},
        {"authorization": basic("a b", ACME_SECRET).replace("Basic", "BASIC")},
        {"X-Hookline-Secret": ACME_SECRET},
        {"x-hookline-secret": f" {ACME_SECRET}\t"},
    ],
)
def test_current_secret_accepted_in_every_form(headers: dict[str, str]) -> None:
    """Bearer, Basic (any user name, password = secret) and X-Hookline-Secret all authenticate."""
    verified = VERIFIER.verify("acme", request("GET", query=LEGACY_QUERY, headers=headers))
    assert isinstance(verified, VerifiedKaleyraCallback)
    assert verified.tenant is ACME and verified.params["sid"] == [MESSAGE_ID]


@pytest.mark.parametrize(
    "headers",
    [
        bearer(ACME_OLD_SECRET),
        {"Authorization": basic("acme", ACME_OLD_SECRET)},
        {"X-Hookline-Secret": ACME_OLD_SECRET},
    ],
)
def test_previous_secret_accepted_during_rotation(headers: dict[str, str]) -> None:
    """previous_callback_secret still authenticates while it is configured."""
    verified = VERIFIER.verify("acme", request("GET", query=LEGACY_QUERY, headers=headers))
    assert verified.tenant is ACME


def test_previous_secret_refused_once_retired() -> None:
    """Without previous_callback_secret the old secret is just a wrong secret."""
    retired = Tenant(id="acme", name="Acme", kaleyra=KaleyraAccount("HX1", Secret(ACME_SECRET)))
    with pytest.raises(AuthenticationFailed) as info:
        KaleyraVerifier(StaticTenantRegistry([retired])).verify(
            "acme", request("GET", query=LEGACY_QUERY, headers=bearer(ACME_OLD_SECRET))
        )
    assert info.value.reason == "secret_invalid"


@pytest.mark.parametrize(
    "headers",
    [
        bearer("wrong-secret"),
        bearer(ACME_SECRET + "x"),
        bearer(ACME_SECRET[:-1]),
        {"Authorization": basic(ACME_SECRET, "wrong")},
        {"X-Hookline-Secret": "wrong"},
        {"X-Hookline-Secret": ACME_SECRET.upper()},
        bearer("sécret-\udcff"),
    ],
)
def test_wrong_secret_rejected(headers: dict[str, str]) -> None:
    """A wrong secret in any form is 403 secret_invalid (Basic's user name is not the secret)."""
    assert rejected(request("GET", query=LEGACY_QUERY, headers=headers)).reason == "secret_invalid"


@pytest.mark.parametrize(
    "headers",
    [
        bearer(GLOBEX_SECRET),
        {"Authorization": basic("globex", GLOBEX_SECRET)},
        {"X-Hookline-Secret": GLOBEX_SECRET},
    ],
)
def test_other_tenants_secret_rejected(headers: dict[str, str]) -> None:
    """Globex's valid secret on Acme's URL is refused; it still works on Globex's own URL."""
    assert rejected(request("GET", query=LEGACY_QUERY, headers=headers)).reason == "secret_invalid"
    assert (
        VERIFIER.verify("globex", request("GET", query=LEGACY_QUERY, headers=headers)).tenant
        is GLOBEX
    )


@pytest.mark.parametrize("tenant", ["nobody", "initech", "", "ACME", "acme/", "a" * 500])
def test_unknown_tenant_rejected_like_a_bad_secret(tenant: str) -> None:
    """Unknown tenants and tenants without Kaleyra get the same 403, reason unknown_tenant."""
    error = rejected(request("GET", query=LEGACY_QUERY, headers=bearer()), tenant)
    assert error.reason == "unknown_tenant" and ACME_SECRET not in str(error)
    assert len(str(error)) < 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "   "},
        {"X-Hookline-Secret": ""},
        {"X-Hookline-Secret": "  "},
        {"X-Other-Secret": ACME_SECRET},
    ],
)
def test_missing_secret_rejected(headers: dict[str, str]) -> None:
    """No secret at all (or only empty headers) is 403 secret_missing."""
    assert rejected(request("GET", query=LEGACY_QUERY, headers=headers)).reason == "secret_missing"


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:\xfa\xfb").decode(),
        "Basic",
        "Basic " + base64.b64encode(b"acme:").decode(),
        "Basic " + ACME_SECRET,
        "Basic " + base64.b64encode(f"acme:{ACME_SECRET}".encode()).decode()[:-2],
        "Basic ŝecret",
        "Bearer",
        "Bearer   ",
        "Digest username=acme",
        ACME_SECRET,
    ],
)
def test_malformed_authorization_is_secret_invalid(authorization: str) -> None:
    """Malformed Basic, empty Bearer and unknown schemes are 403 secret_invalid, never a 500."""
    req = request("GET", query=LEGACY_QUERY, headers={"Authorization": authorization})
    assert rejected(req).reason == "secret_invalid"


def test_unusable_authorization_does_not_hide_the_secret_header() -> None:
    """A proxy's own Authorization does not stop X-Hookline-Secret from authenticating."""
    headers = {"Authorization": "Digest username=proxy", "X-Hookline-Secret": ACME_SECRET}
    assert (
        VERIFIER.verify("acme", request("GET", query=LEGACY_QUERY, headers=headers)).tenant is ACME
    )


def test_secret_is_checked_before_the_payload() -> None:
    """A wrong secret with an unreadable body is 403, not 400/415: strangers learn nothing."""
    assert rejected(json_request([1, 2], secret="wrong")).reason == "secret_invalid"
    req = request(body=b"x", content_type="text/plain", headers=bearer("wrong"))
    assert rejected(req).reason == "secret_invalid"


def test_error_messages_never_contain_secrets() -> None:
    """Rejection messages name the tenant, never a presented or configured secret."""
    for headers in (bearer("attacker-guess-123"), {"Authorization": basic("u", "guess-456")}):
        error = rejected(request("GET", query=LEGACY_QUERY, headers=headers))
        assert "guess" not in str(error) and ACME_SECRET not in str(error) and "acme" in str(error)


# --- payload shapes ---------------------------------------------------------------------------


def test_json_callback_profile_body() -> None:
    """A JSON DLR body: strings kept, numbers/objects JSON-encoded, null as an empty string."""
    verified = VERIFIER.verify("acme", json_request(DLR_JSON))
    assert verified.params == {
        "id": [MESSAGE_ID],
        "status": ["Delivered"],
        "status_details": ["DELIVERED"],
        "to": ["+919876543210"],
        "sender": ["KLRHXA"],
        "units": ["2"],
        "credits": ["0.2500"],
        "delivered_at": ["2025-04-17 18:35:20"],
        "custom": [""],
        "meta": ['{"a":[1,true]}'],
    }
    assert verified.idempotency_key is None


def test_json_with_charset_and_idempotency_key() -> None:
    """Content-Type parameters are ignored; an Idempotency-Key header is passed on."""
    req = request(
        body=orjson.dumps(DLR_JSON),
        content_type="Application/JSON; charset=utf-8",
        headers={**bearer(), "Idempotency-Key": "retry-7"},
    )
    verified = VERIFIER.verify("acme", req)
    assert verified.params["id"] == [MESSAGE_ID] and verified.idempotency_key == "retry-7"


def test_form_body() -> None:
    """A form-encoded callback profile body is read field by field (repeats kept)."""
    body = urlencode(
        [
            ("id", MESSAGE_ID),
            ("status", "Failed"),
            ("status_details", "CON-DND"),
            ("custom", "a"),
            ("custom", "b"),
        ]
    ).encode()
    req = request(body=body, content_type="application/x-www-form-urlencoded", headers=bearer())
    params = VERIFIER.verify("acme", req).params
    assert params == {
        "id": [MESSAGE_ID],
        "status": ["Failed"],
        "status_details": ["CON-DND"],
        "custom": ["a", "b"],
    }


def test_legacy_dlrurl_get_query() -> None:
    """A legacy dlrurl GET carries the delivery report in the query; a GET body is ignored."""
    req = request(
        "GET", body=b"ignored", content_type="text/plain", query=LEGACY_QUERY, headers=bearer()
    )
    assert VERIFIER.verify("acme", req).params == {
        "sid": [MESSAGE_ID],
        "status": ["DELIVRD"],
        "custom": ["order-1"],
        "delivered": ["2025-04-17 18:35:20"],
        "mobile": ["919876543210"],
        "units": ["1"],
        "credits": ["1.00"],
    }


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json"])
def test_empty_post_reads_the_legacy_query(content_type: str | None) -> None:
    """A POST with an empty body carries its fields in the query, whatever the Content-Type."""
    req = request(content_type=content_type, query=LEGACY_QUERY, headers=bearer())
    assert VERIFIER.verify("acme", req).params["status"] == ["DELIVRD"]


def test_body_fields_win_over_query_fields() -> None:
    """Body and query are merged; a field in both keeps the body's value."""
    req = json_request({"id": MESSAGE_ID, "status": "Sent"}, query="status=DELIVRD&extra=1")
    assert VERIFIER.verify("acme", req).params == {
        "id": [MESSAGE_ID],
        "status": ["Sent"],
        "extra": ["1"],
    }


def test_incoming_json_and_form() -> None:
    """The documented incoming-SMS sample reads the same as JSON and as a form."""
    as_json = VERIFIER.verify("acme", json_request(INCOMING_JSON, route="incoming")).params
    form = request(
        body=urlencode(INCOMING_JSON).encode(),
        route="incoming",
        headers=bearer(),
        content_type="application/x-www-form-urlencoded",
    )
    assert VERIFIER.verify("acme", form).params == as_json
    assert as_json["parts[n]"] == ["SAMPLE"] and as_json["source"] == ["919876543210"]


def test_verified_payloads_normalize_to_valid_events() -> None:
    """Verifier output feeds kaleyra_events.normalize: JSON, form and legacy GET all validate."""
    for kind, req in (
        ("message.status", json_request(DLR_JSON)),
        ("message.status", request("GET", query=LEGACY_QUERY, headers=bearer())),
        ("message.incoming", json_request(INCOMING_JSON, route="incoming")),
    ):
        verified = VERIFIER.verify("acme", req)
        event = normalize(kind, verified.tenant, verified.params, NOW)
        assert_valid_event(event.to_dict())
        assert event.tenant == "acme" and event.source == "kaleyra/HXAB12XXXXXX71IN"


# --- malformed payloads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/xml", "multipart/form-data"]
)
def test_wrong_content_type_is_415(content_type: str | None) -> None:
    """A POST body that is neither JSON nor a form is 415."""
    req = request(body=b"id=1", content_type=content_type, headers=bearer())
    with pytest.raises(UnsupportedMediaType) as info:
        VERIFIER.verify("acme", req)
    assert info.value.http_status == 415


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b'[{"id": "x"}, {"id": "y"}]', "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b'{"id": "\xff\xfe"}', "application/json"),
        (b"id=\xff\xfe", "application/x-www-form-urlencoded"),
        (b"id=%ff%fe", "application/x-www-form-urlencoded"),
        (b"id=1&&=", "application/x-www-form-urlencoded"),
        (orjson.dumps({f"k{i}": i for i in range(MAX_FIELDS + 1)}), "application/json"),
    ],
)
def test_malformed_body_is_400(body: bytes, content_type: str) -> None:
    """Bad JSON, a JSON array (Kaleyra does not batch), invalid UTF-8 and bad forms are 400."""
    with pytest.raises(MalformedPayload) as info:
        VERIFIER.verify("acme", request(body=body, content_type=content_type, headers=bearer()))
    assert info.value.http_status == 400


@pytest.mark.parametrize("query", ["sid=%ff", "sid=1&status=%C3%28", "=&&"])
def test_malformed_query_is_400(query: str) -> None:
    """A query string with invalid UTF-8 escapes or junk fields is 400."""
    with pytest.raises(MalformedPayload):
        VERIFIER.verify("acme", request("GET", query=query, headers=bearer()))


HEADER_NAMES = st.sampled_from(
    ["authorization", "x-hookline-secret", "content-type", "idempotency-key", "x-other"]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            f"Bearer {ACME_SECRET}",
            basic("u", ACME_SECRET),
            ACME_SECRET,
            "application/json",
            "application/x-www-form-urlencoded",
            "Basic ",
            "Basic =",
            f"Bearer {GLOBEX_SECRET}",
        ]
    ),
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [orjson.dumps(DLR_JSON), orjson.dumps(INCOMING_JSON), LEGACY_QUERY.encode(), b"[]", b"{}"]
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "post"]),
    tenant=st.one_of(st.sampled_from(["acme", "globex", "initech"]), st.text(max_size=20)),
    headers=st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=5),
    body=BODIES,
    query=st.one_of(st.text(max_size=80), st.just(LEGACY_QUERY)),
)
def test_arbitrary_requests_only_raise_rejections(
    method: str, tenant: str, headers: dict[str, str], body: bytes, query: str
) -> None:
    """Whatever arrives, verify returns a verified callback or raises a RejectedCallback."""
    req = RawRequest(
        method=method,
        url="https://hooks.example.com/kaleyra/x/sms/status",
        headers=headers,
        body=body,
        query=query,
    )
    try:
        verified = VERIFIER.verify(tenant, req)
    except HooklineError as exc:
        assert isinstance(exc, RejectedCallback) and 400 <= exc.http_status < 500
        return
    assert verified.tenant.id == tenant and verified.tenant.kaleyra is not None
    assert all(isinstance(v, str) for values in verified.params.values() for v in values)
