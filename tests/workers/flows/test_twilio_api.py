"""Placing calls and texts through the official client against the local fake Twilio API."""

from __future__ import annotations

import pytest

from gateway.errors import TransientError
from gateway.secrets import Secret
from gateway.tenants import Tenant, TwilioAccount
from tests.support.fake_twilio import FakeTwilio
from tests.support.server import serving
from workers.flows.twilio_api import CallRefused, CallRequest, TwilioRestApi

ACME = "AC" + "a" * 32
BETA = "AC" + "b" * 32
TENANT = Tenant("acme", "Acme", twilio=TwilioAccount(ACME, Secret("acme-token")))
FORGED = Tenant("beta", "Beta", twilio=TwilioAccount(BETA, Secret("wrong-token")))
REQUEST = CallRequest(
    TENANT,
    "+14155550123",
    "+14155550100",
    "https://hooks.example.com/twilio/voice/flow?s=x",
    "https://hooks.example.com/twilio/voice/status",
)


async def test_a_call_is_created_on_the_tenant_subaccount_with_detection_on() -> None:
    """calls.create reaches the tenant's own account with url, status callback and AMD."""
    fake = FakeTwilio({ACME: "acme-token", BETA: "beta-token"})
    async with serving(fake.app()) as base:
        api = TwilioRestApi(api_base=base)
        try:
            sid = await api.place_call(REQUEST)
            text_sid = await api.send_sms(TENANT, "+14155550123", "+14155550100", "Hi")
        finally:
            await api.close()
    (call,) = fake.calls()
    assert call.sid == sid and call.account == ACME
    assert call.params["Url"] == [REQUEST.url]
    assert call.params["StatusCallback"] == [REQUEST.status_callback]
    assert call.params["MachineDetection"] == ["Enable"]
    assert call.params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    (message,) = fake.messages()
    assert message.sid == text_sid and message.params["Body"] == ["Hi"]


async def test_a_refused_number_is_a_call_refused_with_twilio_code() -> None:
    """A 400 from Twilio (invalid To) is final: CallRefused with code 21211."""
    fake = FakeTwilio({ACME: "acme-token"}, refuse={"+14155550123"})
    async with serving(fake.app()) as base:
        api = TwilioRestApi(api_base=base)
        try:
            with pytest.raises(CallRefused) as info:
                await api.place_call(REQUEST)
        finally:
            await api.close()
    assert info.value.code == 21211 and fake.calls() == []


async def test_bad_credentials_are_refused_not_retried() -> None:
    """A wrong auth token is a 401: CallRefused, nothing placed."""
    fake = FakeTwilio({BETA: "beta-token"})
    async with serving(fake.app()) as base:
        api = TwilioRestApi(api_base=base)
        try:
            with pytest.raises(CallRefused):
                await api.place_call(
                    CallRequest(
                        FORGED, REQUEST.to, REQUEST.from_, REQUEST.url, REQUEST.status_callback
                    )
                )
        finally:
            await api.close()


async def test_an_outage_is_transient() -> None:
    """503 from Twilio, or nothing listening, is a TransientError to retry later."""
    fake = FakeTwilio({ACME: "acme-token"}, unavailable=1)
    async with serving(fake.app()) as base:
        api = TwilioRestApi(api_base=base)
        try:
            with pytest.raises(TransientError, match="503"):
                await api.place_call(REQUEST)
            assert await api.place_call(REQUEST)  # the next attempt goes through
        finally:
            await api.close()
    api = TwilioRestApi(api_base=base, timeout_s=2)  # the server is gone now
    try:
        with pytest.raises(TransientError, match="unreachable"):
            await api.place_call(REQUEST)
    finally:
        await api.close()
