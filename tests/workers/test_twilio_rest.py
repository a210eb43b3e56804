"""Rebasing the twilio client's requests: only Twilio's own API host is replaced."""

from __future__ import annotations

from workers.twilio_rest import rebased

CALLS = "https://api.twilio.com/2010-04-01/Accounts/AC1/Calls.json"


def test_twilio_urls_move_to_the_base_and_others_stay() -> None:
    """With a base (trailing slash or not) Twilio's host is replaced; other hosts, or no base,
    leave the URL as it is."""
    for base in ("http://127.0.0.1:9000", "http://127.0.0.1:9000/"):
        assert rebased(CALLS, base) == "http://127.0.0.1:9000/2010-04-01/Accounts/AC1/Calls.json"
    assert rebased(CALLS, None) == CALLS
    assert rebased("https://example.com/x", "http://127.0.0.1:9000") == "https://example.com/x"
