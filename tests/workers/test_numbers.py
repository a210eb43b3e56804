"""Numbers read back from requests: ASCII digits or the default, never an exception."""

from __future__ import annotations

import pytest

from workers.numbers import ascii_int


@pytest.mark.parametrize(
    "value",
    [
        "²",
        "٣",
        "\uff11",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1_0",
        "",
        "1\n",
        "1234567890",
        None,
        True,
        1.5,
        [],
        "x",
    ],
)
def test_anything_but_ascii_digits_gives_the_default(value: object) -> None:
    """Unicode digits, signs, spaces, underscores, too many digits, other types: the default."""
    assert ascii_int(value, default=7) == 7


def test_ascii_digits_strings_bytes_and_ints_are_read() -> None:
    """ASCII digit strings and bytes within max_digits, and non-negative ints, are the number."""
    assert ascii_int("12", default=1, max_digits=2) == 12
    assert ascii_int("123", default=1, max_digits=2) == 1
    assert ascii_int(b"3", default=1) == 3
    assert ascii_int(4, default=1) == 4
    assert ascii_int(-4, default=1) == 1
