"""One run's figures and the tables of medians and ratios the bench prints."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunResult:
    target: str
    repeat: int
    accepted: int = 0
    accepted_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_accepted: float = 0.0
    cpu_sys_us_per_accepted: float = 0.0  # the kernel's part of cpu_us_per_accepted
    peak_rss_mb: float = 0.0
    loss: int | None = None
    duplicates: int | None = None
    queued: int | None = None
    usage_queued: int | None = None
    dead_lettered: int | None = None
    delivered_unanswered: int | None = None
    foreign: int | None = None
    spool_left: int | None = None
    wraps: int = 0
    non2xx: dict[str, int] = field(default_factory=dict)
    unanswered_at_stop: int = 0
    wrk_cpu_us_per_request: float = 0.0
    rabbitmq_cpu_us_per_accepted: float | None = None
    # machine, target, target_waiting (runnable, no CPU free), rabbitmq, wrk, other
    cores: dict[str, float] = field(default_factory=dict)
    processes: int = 1
    libraries: dict[str, bool] = field(default_factory=dict)
    log_lines: int = 0  # what the target logged (start-up to shutdown), at its log level
    log_sample: list[str] = field(default_factory=list)
    wrk: dict[str, Any] = field(default_factory=dict)
    profile: str = ""  # --profile: py-spy summary of the measured run
    broker_retries: int = 0  # runs thrown away because RabbitMQ went away during them


# --- report -----------------------------------------------------------------------------------

METRICS = (  # attribute, header, format, lower is better
    ("accepted_per_s", "accepted/s", "{:,.0f}", False),
    ("p50_ms", "p50 ms", "{:.2f}", True),
    ("p99_ms", "p99 ms", "{:.2f}", True),
    ("cpu_us_per_accepted", "CPU us/acc", "{:.0f}", True),
    ("peak_rss_mb", "RSS MB", "{:.0f}", True),
)


def medians(results: Sequence[RunResult]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for target in dict.fromkeys(r.target for r in results):
        runs = [r for r in results if r.target == target]
        out[target] = {
            name: statistics.median(getattr(r, name) for r in runs) for name, *_ in METRICS
        }
        out[target]["cpu_sys_us_per_accepted"] = statistics.median(
            r.cpu_sys_us_per_accepted for r in runs
        )
        out[target]["wrk_cpu_us_per_request"] = statistics.median(
            r.wrk_cpu_us_per_request for r in runs
        )
        for key in CORES:
            out[target][f"cores_{key}"] = statistics.median(r.cores.get(key, 0.0) for r in runs)
        rabbit = [
            r.rabbitmq_cpu_us_per_accepted
            for r in runs
            if r.rabbitmq_cpu_us_per_accepted is not None
        ]
        if rabbit:
            out[target]["rabbitmq_cpu_us_per_accepted"] = statistics.median(rabbit)
    return out


CORES = ("target", "target_waiting", "rabbitmq", "wrk", "other", "steal", "machine")


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_cores(results: Sequence[RunResult], labels: dict[str, str]) -> str:
    """Where the machine's CPU went during the measured runs (medians), in cores."""
    rows = [
        [
            "target",
            "target cores",
            "waiting for a CPU",
            "rabbitmq",
            "wrk",
            "other",
            "steal",
            f"machine (of {os.cpu_count()})",
            "rabbitmq us/acc",
            "wrk us/req",
        ]
    ]
    for target, f in medians(results).items():
        rabbit = f.get("rabbitmq_cpu_us_per_accepted")
        rows.append(
            [
                labels[target],
                *(f"{f['cores_' + key]:.2f}" for key in CORES),
                "-" if rabbit is None else f"{rabbit:.0f}",
                f"{f['wrk_cpu_us_per_request']:.0f}",
            ]
        )
    return format_table(rows)


def render(results: Sequence[RunResult], labels: dict[str, str]) -> str:
    table = medians(results)
    base = table.get("naive")
    header = ["target", *(h for _, h, _, _ in METRICS), "loss", "dup"]
    rows = [header]
    for target, figures in table.items():
        runs = [r for r in results if r.target == target]
        row = [labels[target]]
        for name, _h, fmt, _lower in METRICS:
            cell = fmt.format(figures[name])
            if base and base.get(name):
                cell += f" ({figures[name] / base[name]:.2f}x)"
            row.append(cell)
        if runs[0].loss is None:
            row += ["-", "-"]
        else:
            row += [str(sum(r.loss or 0 for r in runs)), str(sum(r.duplicates or 0 for r in runs))]
        rows.append(row)
    return format_table(rows)


def describe_run(r: RunResult, label: str) -> str:
    text = (
        f"  {label} #{r.repeat}: {r.accepted_per_s:,.0f} accepted/s, p50 {r.p50_ms:.2f} ms, "
        f"p99 {r.p99_ms:.2f} ms, {r.cpu_us_per_accepted:.0f} us CPU/acc "
        f"({r.cpu_sys_us_per_accepted:.0f} sys), "
        f"RSS {r.peak_rss_mb:.0f} MB ({r.processes} proc)"
    )
    c = r.cores
    text += (
        f"\n      cores: target {c['target']:.2f} (+{c['target_waiting']:.2f} waiting for a "
        f"CPU), rabbitmq {c['rabbitmq']:.2f}, wrk {c['wrk']:.2f}, other {c['other']:.2f}, "
        f"steal {c['steal']:.2f}; "
        f"machine {c['machine']:.2f} of {os.cpu_count()}"
    )
    if r.loss is not None:
        text += (
            f"\n      {r.accepted:,} answered 2xx, {r.queued:,} in tenant queues "
            f"({r.usage_queued:,} in hookline.usage): loss {r.loss}, duplicates "
            f"{r.duplicates}, {r.delivered_unanswered} delivered but unanswered at wrk's "
            f"stop ({r.unanswered_at_stop} in flight), spool left {r.spool_left}"
        )
    if r.non2xx:
        text += f"\n      non-2xx answers: {r.non2xx}"
    if r.log_lines:
        text += f"\n      {r.log_lines} log line(s), first: {r.log_sample[0][:160]}"
    if r.wraps and r.loss is not None:
        text += f"\n      WARNING: callbacks repeated ({r.wraps} wraps): raise --max-rate"
    elif r.wraps:
        text += f"\n      (callbacks repeated {r.wraps} times: harmless here, nothing is checked)"
    if c["other"] > 0.1 or c["steal"] > 0.1:
        text += (
            f"\n      WARNING: {c['other']:.2f} cores went to other processes and "
            f"{c['steal']:.2f} to the hypervisor during this run: figures disturbed"
        )
    if r.broker_retries:
        text += (
            f"\n      (run {r.broker_retries + 1} of this repeat: the earlier one(s) were "
            "spoiled by RabbitMQ going away)"
        )
    if r.profile:
        text += "\n" + r.profile
    return text
