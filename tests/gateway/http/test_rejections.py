"""Each bad callback: a 4xx, one log line with a reason, no event (docs/security.md#rejections)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.broker.memory import FailingPublisher
from tests.support.gateway import (
    ACME_SID,
    ACME_TOKEN,
    GLOBEX_TOKEN,
    PUBLIC_URL,
    GatewayClient,
    gateway_client,
)
from tests.support.logs import CapturedLogs
from tests.support.samples import message_status
from tests.support.twilio_signing import signed_form_request, signed_json_request

STATUS_PATH = "/twilio/messaging/status"


async def expect_rejection(
    gw: GatewayClient, logs: CapturedLogs, response: httpx.Response, status: int, reason: str
) -> None:
    """The answer has ``status``, nothing was published, one line says why."""
    assert response.status_code == status, response.text
    assert gw.total_messages() == 0
    lines = logs.events("callback_rejected")
    assert len(lines) == 1, logs.text
    assert lines[0]["reason"] == reason and lines[0]["status"] == status
    assert lines[0]["outcome"] == "rejected" and "latency_ms" in lines[0]


def form(
    token: str = ACME_TOKEN, params: dict[str, str] | None = None
) -> tuple[bytes, dict[str, str]]:
    return signed_form_request(
        f"{PUBLIC_URL}{STATUS_PATH}", params or message_status(ACME_SID), token
    )


async def test_forged_signature(captured_logs: CapturedLogs) -> None:
    """A made-up signature is refused with 403."""
    body, headers = form()
    headers["x-twilio-signature"] = "bm90IGEgcmVhbCBzaWduYXR1cmU="
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")
    assert response.text == "Forbidden"


async def test_tampered_parameter(captured_logs: CapturedLogs) -> None:
    """Changing one parameter after signing breaks the signature."""
    body, headers = form()
    tampered = body.replace(b"MessageStatus=delivered", b"MessageStatus=failed")
    assert tampered != body
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=tampered, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")


async def test_missing_signature(captured_logs: CapturedLogs) -> None:
    """A callback without X-Twilio-Signature is refused."""
    body, headers = form()
    del headers["x-twilio-signature"]
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_missing")


async def test_other_tenants_token(captured_logs: CapturedLogs) -> None:
    """Acme's AccountSid signed with Globex's token is refused: tokens are per subaccount."""
    body, headers = form(token=GLOBEX_TOKEN)
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")


async def test_unknown_account_looks_like_a_bad_signature(captured_logs: CapturedLogs) -> None:
    """An unknown AccountSid gets the same public 403 as a bad signature; only the log differs."""
    body, headers = form(params=message_status("AC" + "f" * 32))
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "unknown_account")
    assert response.text == "Forbidden"


async def test_url_signed_for_an_untrusted_host(captured_logs: CapturedLogs) -> None:
    """A signature over a Host-header URL is refused: the URL comes from configuration only."""
    url = f"http://evil.example{STATUS_PATH}"
    body, headers = signed_form_request(url, message_status(ACME_SID), ACME_TOKEN)
    headers["host"] = "evil.example"
    async with gateway_client(public_url=None) as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")


async def test_trusted_proxy_forwarded_url_verifies() -> None:
    """Behind a trusted proxy the X-Forwarded-Proto/Host URL is the one verified."""
    import ipaddress

    url = f"https://public.example{STATUS_PATH}"
    body, headers = signed_form_request(url, message_status(ACME_SID), ACME_TOKEN)
    headers.update({"x-forwarded-proto": "https", "x-forwarded-host": "public.example"})
    proxies = (ipaddress.ip_network("10.0.0.0/8"),)
    hosts = frozenset({"public.example"})
    async with gateway_client(
        public_url=None, trusted_proxies=proxies, forwarded_hosts=hosts, client=("10.1.2.3", 5000)
    ) as gw:
        trusted = await gw.http.post(STATUS_PATH, content=body, headers=headers)
    async with gateway_client(
        public_url=None, trusted_proxies=proxies, forwarded_hosts=hosts, client=("192.0.2.7", 5000)
    ) as gw:
        untrusted = await gw.http.post(STATUS_PATH, content=body, headers=headers)
    assert (trusted.status_code, untrusted.status_code) == (204, 403)


async def test_trusted_proxy_passing_on_the_callers_host(captured_logs: CapturedLogs) -> None:
    """A forger signs for its own host; a trusted proxy forwards that Host: refused, 403."""
    import ipaddress

    url = f"https://evil.example{STATUS_PATH}"
    body, headers = signed_form_request(url, message_status(ACME_SID), ACME_TOKEN)
    headers.update({"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"})
    async with gateway_client(
        public_url=None,
        trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),),
        forwarded_hosts=frozenset({"public.example"}),
        client=("10.1.2.3", 5000),
    ) as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "forwarded_host_not_allowed")


async def test_json_without_body_hash(captured_logs: CapturedLogs) -> None:
    """A JSON callback without bodySHA256 in the URL is refused."""
    url, body, headers = signed_json_request(
        f"{PUBLIC_URL}{STATUS_PATH}", message_status(ACME_SID), ACME_TOKEN
    )
    plain_path = STATUS_PATH
    async with gateway_client() as gw:
        response = await gw.http.post(plain_path, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "body_hash_missing")
    assert "bodySHA256" in url


async def test_json_with_tampered_body(captured_logs: CapturedLogs) -> None:
    """A JSON body that no longer matches its bodySHA256 is refused."""
    url, body, headers = signed_json_request(
        f"{PUBLIC_URL}{STATUS_PATH}", message_status(ACME_SID), ACME_TOKEN
    )
    tampered = body.replace(b"delivered", b"failed")
    assert hashlib.sha256(tampered).hexdigest() not in url
    async with gateway_client() as gw:
        response = await gw.http.post(
            url.removeprefix(PUBLIC_URL), content=tampered, headers=headers
        )
        await expect_rejection(gw, captured_logs, response, 403, "body_hash_mismatch")


async def test_json_callback_verifies_and_publishes() -> None:
    """A correctly signed JSON callback (bodySHA256) is accepted and published."""
    url, body, headers = signed_json_request(
        f"{PUBLIC_URL}{STATUS_PATH}", message_status(ACME_SID), ACME_TOKEN
    )
    async with gateway_client() as gw:
        response = await gw.http.post(url.removeprefix(PUBLIC_URL), content=body, headers=headers)
        assert response.status_code == 204
        assert len(gw.tenant_events("acme")) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit(captured_logs: CapturedLogs, chunked: bool) -> None:
    """A body over max_body_bytes is 413 whether or not Content-Length announces it."""
    body, headers = form(params={**message_status(ACME_SID), "Pad": "x" * 70_000})

    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    async with gateway_client() as gw:
        content = stream() if chunked else body
        response = await gw.http.post(STATUS_PATH, content=content, headers=headers)
        await expect_rejection(gw, captured_logs, response, 413, "payload_too_large")


async def test_configured_body_limit_applies() -> None:
    """max_body_bytes from the config is the limit used."""
    body, headers = form()
    async with gateway_client(max_body_bytes=100) as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
    assert len(body) > 100 and response.status_code == 413


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data; boundary=x", "application/xml", ""]
)
async def test_wrong_content_type(captured_logs: CapturedLogs, content_type: str) -> None:
    """Content types other than form or JSON are 415."""
    body, headers = form()
    headers["content-type"] = content_type
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "body",
    [b"a=1&&b=2", b"a=1&", b"a=%ZZ&b=1&noequals"],
    ids=["empty-field", "trailing-separator", "no-equals"],
)
async def test_malformed_form(captured_logs: CapturedLogs, body: bytes) -> None:
    """A body that is not valid form encoding is 400."""
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": "AAAA"}
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 400, "malformed_payload")


@pytest.mark.parametrize(
    "body", [b"Body=\xff\xfe&AccountSid=AC1", b"Body=%C3%28"], ids=["raw-bytes", "percent-escaped"]
)
async def test_invalid_utf8(captured_logs: CapturedLogs, body: bytes) -> None:
    """Invalid UTF-8, raw or percent-encoded, is 400."""
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": "AA"}
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 400, "malformed_payload")


async def test_malformed_json(captured_logs: CapturedLogs) -> None:
    """A JSON body that does not parse is 400."""
    headers = {"content-type": "application/json", "x-twilio-signature": "AA"}
    async with gateway_client() as gw:
        response = await gw.http.post(
            f"{STATUS_PATH}?bodySHA256=00", content=b"{not json", headers=headers
        )
        await expect_rejection(gw, captured_logs, response, 400, "malformed_payload")


async def test_unknown_route_and_wrong_method(captured_logs: CapturedLogs) -> None:
    """An unknown path is 404 and a GET on a callback route is 405, each logged with a reason."""
    async with gateway_client() as gw:
        missing = await gw.http.post("/twilio/nope", content=b"a=1")
        wrong = await gw.http.get(STATUS_PATH)
        assert gw.total_messages() == 0
    assert (missing.status_code, wrong.status_code) == (404, 405)
    reasons = [line["reason"] for line in captured_logs.events("callback_rejected")]
    assert reasons == ["route_not_found", "method_not_allowed"]


async def test_broker_failure_spools_and_answers_2xx(captured_logs: CapturedLogs) -> None:
    """When the broker cannot confirm, the event is spooled durably and the answer is 204."""
    body, headers = form()
    async with gateway_client(publisher=FailingPublisher()) as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        ready = await gw.admin.get("/readyz")
    assert response.status_code == 204
    assert ready.status_code == 503
    assert orjson.loads(ready.content) == {"status": "not ready", "broker": "down", "spooled": 1}
    [line] = captured_logs.events("callback_accepted")
    assert line["outcome"] == "spooled" and line["tenant"] == "acme"


async def test_broker_and_spool_failure_is_503_never_200(
    captured_logs: CapturedLogs, tmp_path: Path
) -> None:
    """With neither the broker nor the spool able to take the event, the answer is 503."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    body, headers = form()
    async with gateway_client(publisher=FailingPublisher(), data_dir=not_a_dir) as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
    assert response.status_code == 503
    [line] = captured_logs.events("callback_failed")
    assert line["reason"] == "publish_failed" and line["tenant"] == "acme"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "answer"),
    [
        ("application/x-www-form-urlencoded", b"a=1&ECHO-ME-ECHO-ME", 400, "Bad Request"),
        ("text/ECHO-ME-ECHO-ME", b"a=1", 415, "Unsupported Media Type"),
        (
            "application/x-www-form-urlencoded",
            b"ECHO-ME=" + b"x" * 70_000,
            413,
            "Request Entity Too Large",
        ),
        ("application/json", b'{"ECHO-ME-ECHO-ME": [', 400, "Bad Request"),
    ],
    ids=["malformed-form", "media-type", "too-large", "malformed-json"],
)
async def test_rejection_answers_are_fixed_texts(
    content_type: str, body: bytes, status: int, answer: str
) -> None:
    """400, 413 and 415 answer the status's fixed phrase and never echo what the caller sent."""
    headers = {"content-type": content_type, "x-twilio-signature": "AA"}
    async with gateway_client() as gw:
        response = await gw.http.post(f"{STATUS_PATH}?bodySHA256=00", content=body, headers=headers)
    assert (response.status_code, response.text) == (status, answer)
    assert "ECHO" not in response.text


async def test_signed_callback_with_an_absurd_segment_count(captured_logs: CapturedLogs) -> None:
    """NumSegments=9999999999999, correctly signed, is 400 field_out_of_range and not published
    (it used to be accepted, then dead-lettered by the usage worker: never metered)."""
    body, headers = form(params={**message_status(ACME_SID), "NumSegments": "9999999999999"})
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 400, "field_out_of_range")
    assert response.text == "Bad Request"
    assert "NumSegments" in captured_logs.events("callback_rejected")[0]["error"]


async def test_signature_failure_names_the_url_checked(captured_logs: CapturedLogs) -> None:
    """A signature made for another URL (say localhost vs the public host) is logged with the
    URL hookline checked and a pointer to HOOKLINE_PUBLIC_URL, never a token."""
    body, headers = signed_form_request(
        f"http://localhost:8080{STATUS_PATH}", message_status(ACME_SID), ACME_TOKEN
    )
    async with gateway_client() as gw:
        response = await gw.http.post(STATUS_PATH, content=body, headers=headers)
        await expect_rejection(gw, captured_logs, response, 403, "signature_invalid")
    error = captured_logs.events("callback_rejected")[0]["error"]
    assert f"for the URL '{PUBLIC_URL}{STATUS_PATH}'" in error
    assert "HOOKLINE_PUBLIC_URL" in error and ACME_TOKEN not in error
