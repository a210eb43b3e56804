"""Prometheus metrics in the text exposition format, without a client library.

Counters are plain dict increments on the request path; rendering happens only when /metrics
is scraped. Format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# (name, help) of the counters; labels come with each increment.
CALLBACKS: Final = ("hookline_callbacks_total",
                    "Callbacks by provider, kind and outcome (published, spooled, duplicate, "
                    "rejected, failed).")
REJECTIONS: Final = ("hookline_callbacks_rejected_total", "Refused requests by reason.")
DISCONNECTS: Final = ("hookline_client_disconnects_total",
                      "Requests whose client hung up before its body arrived.")

Labels = tuple[tuple[str, str], ...]
Gauge = tuple[str, str, str, Callable[[], float]]


class Metrics:
    """Counters incremented by the HTTP layer plus gauges read at scrape time."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, Labels]] = Counter()
        self._gauges: list[Gauge] = []

    def count(self, name: str, **labels: str) -> None:
        self._counts[(name, tuple(sorted(labels.items())))] += 1

    def gauge(self, name: str, help_text: str, read: Callable[[], float],
              kind: str = "gauge") -> None:
        """Register a value read when /metrics is scraped (broker state, spool size ...);
        ``kind="counter"`` for a cumulative count kept elsewhere."""
        self._gauges.append((name, help_text, kind, read))

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text in (CALLBACKS, REJECTIONS, DISCONNECTS):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            lines += [f"{name}{_labels(labels)} {value}"
                      for (metric, labels), value in sorted(self._counts.items())
                      if metric == name]
        for name, help_text, kind, read in self._gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}",
                      f"{name} {_number(read())}"]
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))

