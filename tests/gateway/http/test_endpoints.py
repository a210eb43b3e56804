"""The callback endpoints' body reader: limits and numbers read the way the contract says."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive

from gateway.errors import PayloadTooLarge
from gateway.http.endpoints import read_body


def receiver(*chunks: bytes) -> Receive:
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": n < len(chunks) - 1}
        for n, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0)

    return receive


@pytest.mark.parametrize("declared", ["²", "١٢٣", "12²", "", "-1", "+5", " 7"])
async def test_a_content_length_that_is_not_ascii_digits_is_not_trusted(declared: str) -> None:
    """'²'.isdigit() is true but int('²') raises: such a length is ignored, the body still read."""
    assert await read_body(receiver(b"a=1", b"&b=2"), declared, 100) == b"a=1&b=2"


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    """A Content-Length over the limit is 413 without reading a byte."""

    async def receive() -> Message:
        raise AssertionError("the body must not be read")

    with pytest.raises(PayloadTooLarge):
        await read_body(receive, "101", 100)
