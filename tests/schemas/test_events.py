"""Event ids: the hand-rolled UUIDv5 is exactly uuid.uuid5 of the fact's parts."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from schemas.events import _ID_NAMESPACE, event_id

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@given(st.lists(texts, min_size=1, max_size=8))
def test_event_id_is_uuid5_of_the_joined_parts(parts: list[str]) -> None:
    """Any parts give the id uuid.uuid5 gives for them joined by the unit separator."""
    assert event_id(*parts) == str(uuid.uuid5(_ID_NAMESPACE, "\x1f".join(parts)))


def test_known_id_is_stable() -> None:
    """A fixed fact keeps its id across releases (ids already published must not change)."""
    assert event_id("twilio", "AC1", "message.status", "SM1", "delivered", "") == str(
        uuid.uuid5(
            uuid.UUID("6c1f3f0e-5d2a-4c1b-9a8e-2f4b7c9d0e11"),
            "twilio\x1fAC1\x1fmessage.status\x1fSM1\x1fdelivered\x1f",
        )
    )
