"""Prometheus metrics with prometheus_client, one registry per app, multiprocess when asked.

A ``Metrics`` owns a registry; ``GatewayMetrics`` and ``WorkerMetrics`` put hookline's families
in it (``hookline run`` puts both in one). Label children are looked up once and kept, so a
callback costs a dict lookup and a locked add per family, and rendering happens only when
/metrics is scraped.

``serve --workers N`` runs N processes that share the admin port; each scrape is answered by
one of them. With ``multiprocess_dir`` (the CLI sets PROMETHEUS_MULTIPROC_DIR before starting
the processes, https://prometheus.github.io/client_python/multiprocess/) every process writes
its values to files there and /metrics adds them all up, so every scrape sees the same counts.
Values read from elsewhere at scrape time (broker state, spool size, counts kept by other
objects) are copied into the files by each process once a second (``refresh``) and aggregated
by each gauge's mode: ``livemin`` for ``hookline_broker_up`` (0 when any process's broker is
down), ``livesum`` for the spool gauges, plain sums for the counters.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.errors import ConfigError

GaugeMode = Literal["livemin", "livemax", "livesum", "min", "max", "sum"]
CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_SECONDS: Final = 1.0

# Sub-millisecond (a status callback answered from memory) to seconds (a voice callback waiting
# for a worker's TwiML, at most 10 s; a publish confirm under a slow broker).
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# A worker's batch: a database write or a REST call, up to the long tail of a slow provider.
HANDLE_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The `_created` series would double every counter line in single-process mode only (the
# multiprocess exposition has none): leave them out everywhere, for one consistent output.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Sampled:
    """A value read elsewhere, copied into a gauge or (by its increase) a counter."""

    __slots__ = ("counter", "gauge", "last", "read")

    def __init__(
        self, read: Callable[[], float], gauge: Gauge | None, counter: Counter | None
    ) -> None:
        self.read, self.gauge, self.counter, self.last = read, gauge, counter, 0.0

    def refresh(self) -> None:
        value = float(self.read())
        if self.gauge is not None:
            self.gauge.set(value)
        elif self.counter is not None and value > self.last:
            self.counter.inc(value - self.last)
            self.last = value


class Metrics:
    """A registry and how to render it: this process's, or every process's in
    ``multiprocess_dir``."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        if multiprocess_dir is not None and os.environ.get(MULTIPROC_ENV) != str(multiprocess_dir):
            # prometheus_client picks file-backed values when first imported, from this variable.
            raise ConfigError(
                f"metrics: {MULTIPROC_ENV} must be {multiprocess_dir} before the "
                f"process starts, got {os.environ.get(MULTIPROC_ENV)!r}"
            )
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = multiprocess_dir
        self._sampled: list[_Sampled] = []

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(name, help_text, labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        return Histogram(name, help_text, labels, registry=self.registry, buckets=buckets)

    def gauge(
        self,
        name: str,
        help_text: str,
        read: Callable[[], float],
        kind: str = "gauge",
        mode: GaugeMode = "livesum",
    ) -> None:
        """Register a value read at scrape time (broker state, spool size ...); ``kind="counter"``
        for a cumulative count kept elsewhere. ``mode`` aggregates a gauge across processes."""
        if kind == "counter":
            self._sampled.append(_Sampled(read, None, self.counter(name, help_text)))
        else:
            gauge = Gauge(name, help_text, registry=self.registry, multiprocess_mode=mode)
            self._sampled.append(_Sampled(read, gauge, None))

    def refresh(self) -> None:
        """Copy the values read from elsewhere into the registry (and the files)."""
        for sampled in self._sampled:
            sampled.refresh()

    def render(self) -> bytes:
        self.refresh()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        _forget_dead_processes(self.multiprocess_dir)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process, str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(every_process)

    def process_exited(self) -> None:
        """Drop this process's live gauges from the aggregate (its counters stay counted)."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), str(self.multiprocess_dir))  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(path: Path) -> Path:
    """The directory for ``serve --workers N``: made if missing, emptied of a previous run's
    files (their counts are not this run's)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _forget_dead_processes(path: Path) -> None:
    """A process that died without saying so (killed, crashed): its live gauges go."""
    for entry in path.glob("gauge_live*_*.db"):
        pid = entry.stem.rpartition("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            mark_process_dead(int(pid), str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class GatewayMetrics:
    """The HTTP side's families: callbacks, rejections, disconnects and three latencies."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._callbacks = metrics.counter(
            "hookline_callbacks_total",
            "Callbacks by provider, kind and outcome (published, spooled, duplicate, rejected, "
            "failed).",
            ("provider", "kind", "outcome"),
        )
        self._rejections = metrics.counter(
            "hookline_callbacks_rejected_total", "Refused requests by reason.", ("reason",)
        )
        self._disconnects = metrics.counter(
            "hookline_client_disconnects_total",
            "Requests whose client hung up before its body arrived.",
            ("provider", "kind"),
        )
        self._latency = metrics.histogram(
            "hookline_callback_seconds",
            "Time from a callback's arrival to its answer, by provider and kind.",
            ("provider", "kind"),
        )
        self.publish_confirm = metrics.histogram(
            "hookline_publish_confirm_seconds",
            "Time from publishing a callback's event to the broker's confirm.",
        )
        self._twiml = metrics.histogram(
            "hookline_twiml_answer_seconds",
            "Time a voice/messaging callback waited for its TwiML, by outcome (worker, fallback).",
            ("outcome",),
        )
        # Label children, looked up once: ``labels()`` validates and locks on every call.
        self._children: dict[tuple[str, ...], Counter] = {}
        self._latencies: dict[tuple[str, str], Histogram] = {}

    def callback(self, provider: str, kind: str, outcome: str, seconds: float) -> None:
        key = (provider, kind, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._callbacks.labels(*key)
        child.inc()
        latency = self._latencies.get((provider, kind))
        if latency is None:
            latency = self._latencies[(provider, kind)] = self._latency.labels(provider, kind)
        latency.observe(seconds)

    def rejected(self, reason: str) -> None:
        key = ("reason", reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._rejections.labels(reason)
        child.inc()

    def disconnected(self, provider: str, kind: str) -> None:
        self._disconnects.labels(provider, kind).inc()  # rare: no cache

    def twiml_answered(self, outcome: str, seconds: float) -> None:
        self._twiml.labels(outcome).observe(seconds)


WORKER_OUTCOMES: Final = (
    "acked",
    "replied",
    "retried",
    "dead_lettered",
    "expired",
    "settle_failed",
)


class WorkerMetrics:
    """The workers' families: messages settled by outcome, and the time to handle them."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._messages = metrics.counter(
            "hookline_worker_messages_total",
            "Messages settled by worker, queue and outcome (acked, replied, retried, "
            "dead_lettered, expired, settle_failed).",
            ("worker", "queue", "outcome"),
        )
        self._handle = metrics.histogram(
            "hookline_worker_handle_seconds",
            "Time a worker took to handle the batch a message came in, by worker and queue.",
            ("worker", "queue"),
            buckets=HANDLE_BUCKETS,
        )

    def settled(self, worker: str, queue: str, outcome: str) -> None:
        self._messages.labels(worker, queue, outcome).inc()

    def handled(self, worker: str, queue: str, seconds: float) -> None:
        self._handle.labels(worker, queue).observe(seconds)
