"""The signature vectors Twilio publishes, through signature_valid and through verify()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import pytest
from twilio.request_validator import RequestValidator

from gateway.providers.request import Params, parse_urlencoded
from gateway.providers.twilio import TwilioVerifier, signature_valid
from gateway.tenants import StaticTenantRegistry
from tests.support.twilio_signing import (
    MultiDict,
    raw_request,
    signed_form_raw_request,
    signed_json_raw_request,
    twilio_tenant,
)

# The repository root's sibling "shared" directory holds fixtures common to every checkout.
FIXTURE = (
    Path(__file__).resolve().parents[3].parent
    / "shared"
    / "fixtures"
    / ("twilio-signature-vectors.json")
)
ACCOUNT_SID = "AC" + "0" * 32


def _load() -> dict[str, Any]:
    if not FIXTURE.is_file():
        return {"vectors": []}
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


DATA = _load()
VECTORS: list[dict[str, Any]] = DATA["vectors"]


def _pairs(vector: dict[str, Any]) -> list[tuple[str, str]]:
    """The vector's form parameters in arrival order (repeated keys kept)."""
    if "form_body" in vector:
        return parse_qsl(vector["form_body"], keep_blank_values=True)
    if vector.get("params") == "params":
        return list(DATA["params"].items())
    return []


def _params(vector: dict[str, Any]) -> Params:
    if "form_body" in vector:
        return parse_urlencoded(vector["form_body"])
    return {name: [value] for name, value in _pairs(vector)}


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname or ""))


def _flip(signature: str) -> str:
    return ("A" if signature[0] != "A" else "B") + signature[1:]


def test_fixture_file_exists_and_has_vectors() -> None:
    """The shared vector file is where the tests expect it and is not empty."""
    assert FIXTURE.is_file(), f"missing Twilio signature vectors: expected {FIXTURE}"
    assert DATA["auth_token"] and len(VECTORS) >= 7


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_passes_signature_valid(vector: dict[str, Any]) -> None:
    """signature_valid gives the published verdict, and rejects the vector's flipped signature."""
    token, url, signature = DATA["auth_token"], vector["url"], vector["signature"]
    if "json_body" in vector:
        body = vector["json_body"].encode()
        assert signature_valid(token, url, None, signature, body=body) is vector["valid"]
        assert signature_valid(token, url, None, _flip(signature), body=body) is False
        assert signature_valid(token, url, None, signature, body=body + b" ") is False
    else:
        params = _params(vector)
        assert signature_valid(token, url, params, signature) is vector["valid"]
        assert signature_valid(token, url, params, _flip(signature)) is False
        assert signature_valid("54321", url, params, signature) is False


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_agrees_with_official_validator(vector: dict[str, Any]) -> None:
    """The fixture itself is right: twilio-python's validator gives the same verdict."""
    validator = RequestValidator(DATA["auth_token"])
    params: Any = vector["json_body"] if "json_body" in vector else MultiDict(_pairs(vector))
    assert validator.validate(vector["url"], params, vector["signature"]) is vector["valid"]


def _signed_url(vector: dict[str, Any]) -> str:
    """The URL variant the published signature was computed over (checked, not assumed)."""
    validator = RequestValidator(DATA["auth_token"])
    candidates = [vector.get("signed_url"), vector["url"], _without_port(vector["url"])]
    params: Any = MultiDict(_pairs(vector)) if "json_body" not in vector else {}
    for candidate in candidates:
        if candidate and validator.compute_signature(candidate, params) == vector["signature"]:
            return str(candidate)
    raise AssertionError(f"no URL variant reproduces the signature of {vector['name']!r}")


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_published_vector_passes_verify(vector: dict[str, Any]) -> None:
    """verify() accepts each vector's situation once AccountSid is added and it is re-signed.

    Adding AccountSid changes the signature, so the request is re-signed with the official
    validator over the same URL variant the published signature used, then received on the
    vector's URL.
    """
    token = DATA["auth_token"]
    verifier = TwilioVerifier(StaticTenantRegistry([twilio_tenant("vec", ACCOUNT_SID, token)]))
    signed_url = _signed_url(vector)
    if "json_body" in vector:
        doc = {**json.loads(vector["json_body"]), "AccountSid": ACCOUNT_SID}
        base = signed_url.split("&bodySHA256=")[0]
        signed = signed_json_raw_request(base, doc, token)
        received = signed.url.replace(base, vector["url"].split("&bodySHA256=")[0])
        result = verifier.verify(raw_request(received, signed.body, signed.headers))
        assert result.json_body == doc
    else:
        pairs = [*_pairs(vector), ("AccountSid", ACCOUNT_SID)]
        signed = signed_form_raw_request(signed_url, pairs, token)
        result = verifier.verify(raw_request(vector["url"], signed.body, signed.headers))
        assert result.params == {**_params(vector), "AccountSid": [ACCOUNT_SID]}
    assert result.tenant.id == "vec"
