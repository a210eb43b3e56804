"""Build Twilio callbacks signed by the OFFICIAL twilio-python RequestValidator.

Tests sign with Twilio's own library (never with gateway.providers.twilio), so that a bug in our
verifier cannot be mirrored by the same bug in the signer.
https://www.twilio.com/docs/usage/security#validating-requests
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from twilio.request_validator import RequestValidator

from gateway.providers.request import FORM_CONTENT_TYPE, JSON_CONTENT_TYPE, RawRequest
from gateway.secrets import Secret
from gateway.tenants import Tenant, TwilioAccount

SIGNATURE_HEADER = "x-twilio-signature"


class MultiDict:
    """The smallest MultiDict RequestValidator understands: keys, truthiness and getall()."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = list(pairs)

    def __iter__(self) -> Iterator[str]:
        return iter([name for name, _ in self._pairs])

    def __len__(self) -> int:
        return len(self._pairs)

    def getall(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]


def _pairs(params: list[tuple[str, str]] | dict[str, str]) -> list[tuple[str, str]]:
    return list(params.items()) if isinstance(params, dict) else list(params)


def official_signature(token: str, url: str, params: list[tuple[str, str]] | dict[str, str]) -> str:
    """What Twilio puts in X-Twilio-Signature for ``url`` (as given) and ``params``."""
    result: str = RequestValidator(token).compute_signature(url, MultiDict(_pairs(params)))
    return result


def _lower(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {name.lower(): value for name, value in (headers or {}).items()}


def signed_form_request(
    url: str,
    params: list[tuple[str, str]] | dict[str, str],
    token: str,
    *,
    headers: dict[str, str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A form-encoded body (repeated keys kept) and its headers, signed over ``url`` as given.

    ``headers`` are merged last (lower-cased), so a test can override the signature or the
    content type.
    """
    pairs = _pairs(params)
    body = urlencode(pairs).encode()
    merged = {
        "content-type": FORM_CONTENT_TYPE,
        SIGNATURE_HEADER: official_signature(token, url, pairs),
    }
    merged.update(_lower(headers))
    return body, merged


def signed_json_request(
    url_without_hash: str, doc: dict[str, Any], token: str
) -> tuple[str, bytes, dict[str, str]]:
    """A JSON callback: (URL with bodySHA256 appended, body, headers), signed over the URL alone."""
    body = orjson.dumps(doc)
    validator = RequestValidator(token)
    body_hash = validator.compute_hash(body.decode())
    separator = "&" if urlsplit(url_without_hash).query else "?"
    url = f"{url_without_hash}{separator}bodySHA256={body_hash}"
    headers = {
        "content-type": JSON_CONTENT_TYPE,
        SIGNATURE_HEADER: validator.compute_signature(url, {}),
    }
    return url, body, headers


def raw_request(
    url: str, body: bytes, headers: Mapping[str, str] | None = None, *, method: str = "POST"
) -> RawRequest:
    """A RawRequest as the HTTP layer builds it: lower-cased headers, query split off the URL.

    Plain string splitting, so that tests may build requests for URLs urllib would refuse.
    """
    query = url.partition("?")[2].partition("#")[0]
    return RawRequest(method=method, url=url, headers=_lower(headers), body=body, query=query)


def signed_form_raw_request(
    url: str,
    params: list[tuple[str, str]] | dict[str, str],
    token: str,
    *,
    headers: dict[str, str] | None = None,
) -> RawRequest:
    """signed_form_request() wrapped into a RawRequest."""
    body, merged = signed_form_request(url, params, token, headers=headers)
    return raw_request(url, body, merged)


def signed_json_raw_request(url_without_hash: str, doc: dict[str, Any], token: str) -> RawRequest:
    """signed_json_request() wrapped into a RawRequest."""
    url, body, headers = signed_json_request(url_without_hash, doc, token)
    return raw_request(url, body, headers)


def twilio_tenant(
    tenant_id: str, account_sid: str, token: str, previous_token: str | None = None
) -> Tenant:
    """A tenant with only a Twilio subaccount."""
    return Tenant(
        id=tenant_id,
        name=tenant_id.title(),
        twilio=TwilioAccount(
            account_sid=account_sid,
            auth_token=Secret(token),
            previous_auth_token=None if previous_token is None else Secret(previous_token),
        ),
    )
