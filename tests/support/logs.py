"""Capture hookline's JSON log lines in a test."""

from __future__ import annotations

import io
from typing import Any

import orjson


class CapturedLogs:
    """The lines written since configure_logging pointed at ``stream``, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        """Every line parsed as JSON (a non-JSON line fails the test)."""
        parsed: list[dict[str, Any]] = []
        for line in self.text.splitlines():
            try:
                parsed.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise AssertionError(f"log line is not JSON: {line!r}") from exc
        return parsed

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]
