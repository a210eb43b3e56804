"""call.bot.result: outcomes from final statuses and AnsweredBy, schema-valid events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.schema_check import assert_valid_event
from workers.flows.outcome import outcome_of, result_event

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
CALL = "CA" + "1" * 32


@pytest.mark.parametrize(
    ("status", "answered_by", "outcome"),
    [
        ("completed", "human", "completed"),
        ("completed", None, "completed"),
        ("completed", "machine_end_beep", "machine"),
        ("completed", "fax", "machine"),
        ("no-answer", None, "no-answer"),
        ("busy", None, "busy"),
        ("failed", None, "failed"),
        ("canceled", None, "failed"),
    ],
)
def test_final_statuses_map_to_outcomes(status: str, answered_by: str | None, outcome: str) -> None:
    """Each final status (and a machine answer) gives its documented outcome."""
    assert outcome_of(status, answered_by) == outcome


def test_a_status_in_progress_is_not_final() -> None:
    """ringing is not an outcome: ValueError naming the final statuses."""
    with pytest.raises(ValueError, match="final call status"):
        outcome_of("ringing", None)


def test_results_are_schema_valid_and_stable() -> None:
    """A completed call and a rejected command are valid events; a redelivery repeats the id."""
    done = result_event(
        tenant="acme",
        request_id="rx-1",
        outcome="completed",
        now=NOW,
        flow="refill",
        call_sid=CALL,
        answered_by="human",
        inputs={"menu": "1"},
        duration_s=42,
    )
    refused = result_event(
        tenant="acme",
        request_id="rx-2",
        outcome="rejected",
        now=NOW,
        flow=None,
        reason="unknown_flow",
    )
    for event in (done, refused):
        assert_valid_event(event.to_dict())
        assert event.routing_key.startswith("acme.hookline.call.bot.result")
    again = result_event(
        tenant="acme",
        request_id="rx-1",
        outcome="completed",
        now=NOW,
        flow="refill",
        call_sid=CALL,
        answered_by="human",
        inputs={"menu": "1"},
        duration_s=42,
    )
    assert again.id == done.id and refused.id != done.id
    assert refused.to_dict()["data"]["reason"] == "unknown_flow"


def test_an_unknown_outcome_is_refused() -> None:
    """Only the documented outcomes can be published."""
    with pytest.raises(ValueError, match="outcome must be one of"):
        result_event(tenant="acme", request_id="r", outcome="maybe", now=NOW, flow=None)
