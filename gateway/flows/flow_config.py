"""The ``[tenants.flows]`` config section: pacing, caller id and the tenant's named flows.

```toml
[tenants.flows]
calls_per_second = 1            # the subaccount's outbound calls per second (Twilio: 1 by default)
caller_id = "+14155550100"      # From of bot calls unless the command names one

[tenants.flows.refill]          # a flow named "refill"
variables = ["patient_name"]    # every command must give these
start = "detect"                # optional: the first step by default

[[tenants.flows.refill.steps]]
id = "detect"
type = "branch"                 # on AnsweredBy (answering machine detection)
human = "menu"
machine = "voicemail"
```

Every problem is reported with its key, ``tenants[0](acme).flows.refill.steps[2].next`` style, and
the graph checks of gateway.flows.model name tenant, flow and step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from gateway.config_table import Table
from gateway.e164 import E164_PATTERN
from gateway.flows.model import (
    STEP_ID_PATTERN,
    Branch,
    Flow,
    FlowSettings,
    Gather,
    Hangup,
    Play,
    Record,
    Say,
    Sms,
    Step,
    Transfer,
    check_flow,
)
from gateway.routing_config import Routing, StartFlow

FLOW_NAME_KEYS: Final = frozenset({"variables", "start", "steps"})
_SETTINGS: Final = frozenset({"calls_per_second", "caller_id"})
MAX_CALLS_PER_SECOND: Final = 100
_COMMON: Final = frozenset({"id", "type"})
_VOICE: Final = frozenset({"voice", "language"})
#: Keys each step type takes besides id and type.
STEP_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "say": frozenset({"text", "next"}) | _VOICE,
    "play": frozenset({"url", "next"}),
    "gather": frozenset(
        {
            "prompt",
            "input",
            "num_digits",
            "timeout",
            "retries",
            "reprompt",
            "digits",
            "speech",
            "default",
        }
    )
    | _VOICE,
    "branch": frozenset({"human", "machine", "unknown"}),
    "record": frozenset({"prompt", "max_length", "finish_on_key", "play_beep", "next"}),
    "transfer": frozenset({"number", "timeout", "caller_id", "next"}),
    "sms": frozenset({"text", "next"}),
    "hangup": frozenset(),
}
_ALL_STEP_KEYS: Final = _COMMON.union(*STEP_KEYS.values())
_INPUTS: Final = frozenset({"dtmf", "speech", "dtmf speech"})
_FINISH_KEYS: Final = frozenset("0123456789*#")


def parse_flows(table: Table) -> FlowSettings | None:
    """Parse and check ``[tenants.flows]``; None when any problem was reported."""
    rate = table.integer("calls_per_second", 1, MAX_CALLS_PER_SECOND)
    caller_id = _number(table, "caller_id", required=False)
    flows: dict[str, Flow] = {}
    # Entries that are not tables were reported by the Table as unknown keys.
    for name in sorted(k for k in table.keys() - _SETTINGS if isinstance(table.raw(k), dict)):
        sub = table.table(name, FLOW_NAME_KEYS)
        if sub is None:
            continue
        if not STEP_ID_PATTERN.fullmatch(name):
            table.fail(name, f"flow names match {STEP_ID_PATTERN.pattern}, got {name!r}")
        flow = _parse_flow(name, sub)
        if flow is not None:
            flows[name] = flow
    if not table.ok:
        return None
    return FlowSettings(flows=flows, calls_per_second=float(rate or 1), caller_id=caller_id)


def _parse_flow(name: str, table: Table) -> Flow | None:
    variables = table.strings("variables") or ()
    steps: dict[str, Step] = {}
    step_tables = table.tables("steps", _ALL_STEP_KEYS)
    if not step_tables:
        table.fail("steps", "a flow needs at least one step ([[...steps]] with id and type)")
    for sub in step_tables:
        step = _parse_step(sub)
        if step is None:
            continue
        if step.id in steps:
            sub.fail("id", f"duplicate step id {step.id!r} in flow {name!r}")
            continue
        steps[step.id] = step
    start = table.string("start", required=False) or next(iter(steps), None)
    if not table.ok or start is None:
        return None
    flow = Flow(name=name, steps=steps, start=start, variables=variables)
    for where, message in check_flow(flow):
        table.fail("start" if where == "start" else f"steps.{where}", message)
    return flow if table.ok else None


def _parse_step(table: Table) -> Step | None:
    step_id = table.string("id")
    kind = table.string("type")
    if step_id is not None and not STEP_ID_PATTERN.fullmatch(step_id):
        table.fail("id", f"expected a step id matching {STEP_ID_PATTERN.pattern}, got {step_id!r}")
    if kind is None:
        return None
    parse = _PARSERS.get(kind)
    if parse is None:
        table.fail(
            "type", f"unknown step type {kind!r} (expected one of {', '.join(sorted(_PARSERS))})"
        )
        return None
    # Keys of no step type at all were reported by the Table as unknown keys.
    for key in sorted((table.keys() & _ALL_STEP_KEYS) - _COMMON - STEP_KEYS[kind]):
        table.fail(
            key,
            f"is not a key of a {kind} step (it takes "
            f"{', '.join(sorted(STEP_KEYS[kind])) or 'no other keys'})",
        )
    step = parse(table, step_id or "?")
    return step if step_id is not None and table.ok else None


def _number(table: Table, key: str, *, required: bool) -> str | None:
    value = table.string(key, required=required)
    if value is not None and not E164_PATTERN.fullmatch(value):
        table.fail(key, f"expected an E.164 number such as +14155550100, got {value!r}")
    return value


def _say(t: Table, sid: str) -> Step:
    return Say(
        sid,
        t.string("text") or "",
        t.string("voice", required=False),
        t.string("language", required=False),
        t.string("next", required=False),
    )


def _play(t: Table, sid: str) -> Step:
    url = t.string("url") or ""
    if url and not url.startswith(("https://", "http://")):
        t.fail("url", f"expected an http(s) URL of the audio file, got {url!r}")
    return Play(sid, url, t.string("next", required=False))


def _gather(t: Table, sid: str) -> Step:
    mode = t.string("input", required=False) or "dtmf"
    if mode not in _INPUTS:
        t.fail("input", f"expected one of {', '.join(sorted(_INPUTS))}, got {mode!r}")
    digits = t.mapping("digits") or {}
    for pressed in digits:
        if not pressed or any(c not in _FINISH_KEYS for c in pressed):
            t.fail("digits", f"keys are the digits pressed (0-9, * and #), got {pressed!r}")
    speech = {word.lower(): target for word, target in (t.mapping("speech") or {}).items()}
    if not digits and not speech:
        t.fail("digits", "a gather needs digits and/or speech choices")
    if speech and "speech" not in mode:
        t.fail("speech", f'speech choices need input = "speech" or "dtmf speech", not {mode!r}')
    return Gather(
        sid,
        t.string("prompt") or "",
        t.string("default") or "",
        mode,
        t.integer("num_digits", 1, 20),
        t.integer("timeout", 1, 60) or 5,
        _zero_or(t.integer("retries", 0, 5), 1),
        t.string("reprompt", required=False),
        digits,
        speech,
        t.string("voice", required=False),
        t.string("language", required=False),
    )


def _branch(t: Table, sid: str) -> Step:
    return Branch(
        sid, t.string("human") or "", t.string("machine") or "", t.string("unknown", required=False)
    )


def _record(t: Table, sid: str) -> Step:
    finish = t.string("finish_on_key", required=False) or "#"
    if any(c not in _FINISH_KEYS for c in finish):
        t.fail("finish_on_key", f"expected digits, * or #, got {finish!r}")
    beep = t.boolean("play_beep")
    return Record(
        sid,
        t.string("prompt", required=False),
        t.integer("max_length", 1, 14_400) or 60,
        finish,
        True if beep is None else beep,
        t.string("next", required=False),
    )


def _transfer(t: Table, sid: str) -> Step:
    return Transfer(
        sid,
        _number(t, "number", required=True) or "",
        t.integer("timeout", 5, 600) or 30,
        _number(t, "caller_id", required=False),
        t.string("next", required=False),
    )


def _sms(t: Table, sid: str) -> Step:
    return Sms(sid, t.string("text") or "", t.string("next", required=False))


def _hangup(_t: Table, sid: str) -> Step:
    return Hangup(sid)


def _zero_or(value: int | None, default: int) -> int:
    return default if value is None else value


_PARSERS: Final[Mapping[str, Callable[[Table, str], Step]]] = {
    "say": _say,
    "play": _play,
    "gather": _gather,
    "branch": _branch,
    "record": _record,
    "transfer": _transfer,
    "sms": _sms,
    "hangup": _hangup,
}


def routed_flow_problems(
    routing: Routing | None, flows: FlowSettings | None
) -> list[tuple[str, str]]:
    """(key, message) for each routing ``flow`` action naming a flow the tenant cannot start
    on an incoming call: missing, or needing variables (an incoming call brings none)."""
    if routing is None:
        return []
    known = flows.flows if flows is not None else {}
    problems = []
    for name, action in routing.actions.items():
        if not isinstance(action, StartFlow):
            continue
        flow = known.get(action.flow)
        key = f"routing.actions.{name}.flow"
        if flow is None:
            problems.append(
                (
                    key,
                    f"names flow {action.flow!r}, which [tenants.flows] lacks "
                    f"(flows: {', '.join(sorted(known)) or 'none'})",
                )
            )
        elif flow.variables:
            problems.append(
                (
                    key,
                    f"flow {action.flow!r} needs variables "
                    f"{list(flow.variables)}, which an incoming call cannot give",
                )
            )
    return problems
