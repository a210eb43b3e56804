"""The form parser accepts and rejects exactly what urllib's strict parse_qsl does."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import MalformedPayload
from gateway.providers.request import MAX_FIELDS, parse_urlencoded

FORM_ALPHABET = st.sampled_from(list("ab=&+%;2FC3A8Z0 é\x00"))


def reference(text: str) -> list[tuple[str, str]] | None:
    """urllib's strict reading, or None where it refuses the input."""
    try:
        return parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (ValueError, UnicodeDecodeError):
        return None


def ours(text: str) -> list[tuple[str, str]] | None:
    try:
        params = parse_urlencoded(text)
    except MalformedPayload:
        return None
    return [(name, value) for name, values in params.items() for value in values]


@settings(max_examples=500)
@given(st.text(FORM_ALPHABET, max_size=40))
def test_same_decision_and_fields_as_parse_qsl_on_random_text(text: str) -> None:
    """On random form-ish text both parsers accept the same inputs and read the same fields."""
    expected, got = reference(text), ours(text)
    if not text:
        assert got == []
        return
    assert (expected is None) == (got is None)
    if expected is not None and got is not None:
        assert sorted(got) == sorted(expected)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=10), st.text(max_size=20)), max_size=10))
def test_round_trips_what_urlencode_writes(pairs: list[tuple[str, str]]) -> None:
    """Anything urlencode writes (any Unicode, repeated keys) is read back exactly."""
    got = ours(urlencode(pairs))
    assert got is not None and sorted(got) == sorted(pairs)


@pytest.mark.parametrize("body", [b"a=%C3%28", b"a=\xff", b"a=1&&b=2", b"a", b"a=1&"])
def test_malformed_inputs_are_refused(body: bytes) -> None:
    """Bad escapes, invalid UTF-8, empty fields and fields without '=' are MalformedPayload."""
    with pytest.raises(MalformedPayload):
        parse_urlencoded(body)


def test_too_many_fields() -> None:
    """More than MAX_FIELDS fields are refused before any is decoded."""
    with pytest.raises(MalformedPayload, match="more than"):
        parse_urlencoded("&".join(["a=1"] * (MAX_FIELDS + 1)))
