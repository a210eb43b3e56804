"""GET /metrics: Prometheus text with callback outcomes, rejection reasons and broker state."""

from __future__ import annotations

import asyncio

from gateway.broker.memory import FailingPublisher, MemoryBroker, MemoryPublisher
from gateway.metrics import GatewayMetrics, Metrics
from tests.support.gateway import ACME_SID, gateway_client
from tests.support.samples import call_incoming, message_status


def samples(text: str) -> dict[str, float]:
    """Metric lines as {name{labels}: value}, comments skipped."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_metrics_count_outcomes_and_reasons() -> None:
    """Published, duplicate and rejected callbacks are counted with their labels."""
    async with gateway_client() as gw:
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        await gw.http.post(
            "/twilio/messaging/status",
            content=b"a=1",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        response = await gw.admin.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values = samples(response.text)
    prefix = 'hookline_callbacks_total{kind="message.status",outcome='
    assert values[prefix + '"published",provider="twilio"}'] == 1
    assert values[prefix + '"duplicate",provider="twilio"}'] == 1
    assert values[prefix + '"rejected",provider="twilio"}'] == 1
    assert values['hookline_callbacks_rejected_total{reason="account_sid_missing"}'] == 1
    assert values["hookline_broker_up"] == 1 and values["hookline_spool_events"] == 0
    assert "# TYPE hookline_publish_uncertain_total counter" in response.text


async def test_metrics_show_a_down_broker_and_the_spool() -> None:
    """With the broker down, broker_up is 0 and the spooled event is visible."""
    async with gateway_client(publisher=FailingPublisher()) as gw:
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 2))
        values = samples((await gw.admin.get("/metrics")).text)
    assert values["hookline_broker_up"] == 0 and values["hookline_spool_events"] == 1
    assert (
        values[
            'hookline_callbacks_total{kind="message.status",outcome="spooled",provider="twilio"}'
        ]
        == 1
    )


async def test_metrics_count_spooled_events_set_aside() -> None:
    """An event the broker returns as unroutable is spooled, then set aside by the replayer:
    hookline_spool_parked_events says how many wait so."""
    # A broker with no queue for acme: its incoming call (not metered) routes nowhere.
    publisher = MemoryPublisher(MemoryBroker(), [])
    async with gateway_client(publisher=publisher) as gw:
        assert (await gw.post_signed("/twilio/voice", call_incoming(ACME_SID))).status_code == 200
        values: dict[str, float] = {}
        for _ in range(100):  # the replayer tries it as soon as it is spooled
            values = samples((await gw.admin.get("/metrics")).text)
            if values["hookline_spool_parked_events"] == 1:
                break
            await asyncio.sleep(0.05)
    assert values["hookline_spool_parked_events"] == 1
    assert values["hookline_spool_events"] == 1


def test_label_values_are_escaped() -> None:
    """Quotes, backslashes and newlines in label values cannot break the exposition format."""
    metrics = Metrics()
    GatewayMetrics(metrics).rejected('a"b\\c\nd')
    assert 'reason="a\\"b\\\\c\\nd"} 1.0' in metrics.render().decode()


async def test_latency_histograms_count_callbacks_confirms_and_twiml_answers() -> None:
    """hookline_callback_seconds counts every callback by provider and kind,
    hookline_publish_confirm_seconds every confirmed publish, hookline_twiml_answer_seconds
    every voice/messaging answer by outcome; their buckets go from sub-ms to seconds."""
    async with gateway_client() as gw:
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 1))
        await gw.post_signed("/twilio/messaging/status", message_status(ACME_SID, 2))
        await gw.post_signed("/twilio/voice", call_incoming(ACME_SID))
        text = (await gw.admin.get("/metrics")).text
    values = samples(text)
    status = '{kind="message.status",provider="twilio"}'
    assert values["hookline_callback_seconds_count" + status] == 3
    assert values['hookline_callback_seconds_count{kind="call.incoming",provider="twilio"}'] == 1
    assert (
        values[
            'hookline_callback_seconds_bucket{kind="message.status",le="10.0",provider="twilio"}'
        ]
        == 3
    )
    assert 'le="0.0005"' in text
    assert values["hookline_publish_confirm_seconds_count"] == 3  # the duplicate is not sent
    assert values['hookline_twiml_answer_seconds_count{outcome="fallback"}'] == 1
    assert values["hookline_twiml_fallbacks_total"] == 1
    assert "# TYPE hookline_callback_seconds histogram" in text
