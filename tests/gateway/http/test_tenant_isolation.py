"""Over real ASGI HTTP, one tenant's own credentials cannot suppress another tenant's callbacks."""

from __future__ import annotations

from tests.support.gateway import ACME_SID, GLOBEX_SID, GLOBEX_TOKEN, gateway_client
from tests.support.samples import message_status

TOKEN_HEADER = "I-Twilio-Idempotency-Token"


async def test_another_tenants_idempotency_token_does_not_suppress_a_callback() -> None:
    """Globex signs a callback with token K; acme's genuine callback with K is still published."""
    async with gateway_client() as gw:
        forged = await gw.post_signed(
            "/twilio/messaging/status",
            message_status(GLOBEX_SID, 9),
            token=GLOBEX_TOKEN,
            headers={TOKEN_HEADER: "K"},
        )
        genuine = await gw.post_signed(
            "/twilio/messaging/status", message_status(ACME_SID, 1), headers={TOKEN_HEADER: "K"}
        )
        assert (forged.status_code, genuine.status_code) == (204, 204)
        assert [event.subject for event in gw.tenant_events("acme")] == ["SM" + f"{1:032x}"]


async def test_a_token_set_to_another_tenants_event_id_does_not_suppress_it() -> None:
    """Event ids are deterministic; globex sending acme's future id as its token changes nothing."""
    async with gateway_client() as first:
        await first.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        (victim,) = first.tenant_events("acme")
    async with gateway_client() as gw:
        await gw.post_signed(
            "/twilio/messaging/status",
            message_status(GLOBEX_SID, 9),
            token=GLOBEX_TOKEN,
            headers={TOKEN_HEADER: victim.id},
        )
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        assert [event.id for event in gw.tenant_events("acme")] == [victim.id]


async def test_a_tenants_own_retry_with_the_same_token_is_still_one_event() -> None:
    """Scoping keeps the point of the token: the same tenant's retry is acknowledged once."""
    async with gateway_client() as gw:
        for n in (1, 2):  # a retry whose body differs (a new status) but whose token is the same
            response = await gw.post_signed(
                "/twilio/messaging/status",
                message_status(ACME_SID, n),
                headers={TOKEN_HEADER: "retry-1"},
            )
            assert response.status_code == 204
        assert len(gw.tenant_events("acme")) == 1
