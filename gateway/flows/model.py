"""The shape of a bot-call flow: typed steps, their successors, and the checks a flow must pass.

A flow is a list of steps, the first one (or ``start``) entered when the callee answers. Steps
that speak (say, play, sms) and ``branch`` run straight on to their ``next`` within one TwiML
document; steps that wait for the call (gather, record, transfer) end a document and Twilio
calls back with the result. Validation here is what makes that safe: every target exists,
every step is reachable, every step can reach the end of the call, and no cycle runs without
waiting for the caller (it would loop inside one request).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

STEP_ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
VARIABLE_PATTERN: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")

# AnsweredBy values of Twilio's answering machine detection, grouped the way a flow branches.
# https://www.twilio.com/docs/voice/answering-machine-detection#webhook-parameters
MACHINE_ANSWERS: Final = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other"}
)


@dataclass(frozen=True, slots=True)
class Say:
    id: str
    text: str
    voice: str | None = None
    language: str | None = None
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    id: str
    url: str
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Gather:
    """Ask, then branch on the digits or a keyword of the speech; retry, then ``default``."""

    id: str
    prompt: str
    default: str
    input: str = "dtmf"  # dtmf, speech, or "dtmf speech"
    num_digits: int | None = None
    timeout_s: int = 5
    retries: int = 1
    reprompt: str | None = None
    digits: Mapping[str, str] = field(default_factory=dict)  # pressed digits -> step
    speech: Mapping[str, str] = field(default_factory=dict)  # keyword -> step
    voice: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    """Branch on who answered (AnsweredBy of answering machine detection)."""

    id: str
    human: str
    machine: str
    unknown: str | None = None  # fax, unknown, or no detection: defaults to ``human``

    def target(self, answered_by: str | None) -> str:
        if answered_by == "human":
            return self.human
        if answered_by in MACHINE_ANSWERS:
            return self.machine
        return self.unknown or self.human


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    prompt: str | None = None
    max_length_s: int = 60
    finish_on_key: str = "#"
    play_beep: bool = True
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    number: str
    timeout_s: int = 30
    caller_id: str | None = None
    next: str | None = None  # after the transferred call ends; without it the call hangs up


@dataclass(frozen=True, slots=True)
class Sms:
    """Send a follow-up text to the callee (the flows worker sends it; the call runs on)."""

    id: str
    text: str
    next: str | None = None


@dataclass(frozen=True, slots=True)
class Hangup:
    id: str


Step = Say | Play | Gather | Branch | Record | Transfer | Sms | Hangup
#: Steps that end a TwiML document and wait for Twilio to call back.
WAITING: Final = (Gather, Record, Transfer)


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    steps: Mapping[str, Step]
    start: str
    variables: tuple[str, ...] = ()

    def step(self, step_id: str) -> Step:
        try:
            return self.steps[step_id]
        except KeyError:
            raise KeyError(f"flow {self.name!r} has no step {step_id!r}") from None


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """A tenant's ``[tenants.flows]`` section: pacing, caller id, and its flows by name."""

    flows: Mapping[str, Flow]
    calls_per_second: float = 1.0
    caller_id: str | None = None


def successors(step: Step) -> tuple[str, ...]:
    """The step ids a step can lead to, in a stable order."""
    match step:
        case Gather():
            return (*step.digits.values(), *step.speech.values(), step.default)
        case Branch():
            return tuple(t for t in (step.human, step.machine, step.unknown) if t is not None)
        case Hangup():
            return ()
        case _:
            return (step.next,) if step.next is not None else ()


def texts(step: Step) -> tuple[tuple[str, str], ...]:
    """(key, text) pairs of a step that may hold ``{variable}`` placeholders."""
    match step:
        case Say() | Sms():
            return (("text", step.text),)
        case Gather():
            pairs = [("prompt", step.prompt)]
            if step.reprompt is not None:
                pairs.append(("reprompt", step.reprompt))
            return tuple(pairs)
        case Record() if step.prompt is not None:
            return (("prompt", step.prompt),)
        case _:
            return ()


def placeholders(text: str) -> list[str]:
    """The ``{name}`` fields of a text; ValueError for anything but plain names."""
    names = []
    for _literal, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion or not VARIABLE_PATTERN.fullmatch(name):
            raise ValueError(
                f"placeholders are {{name}} with a lower-case name, got {{{name}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            )
        names.append(name)
    return names


def check_flow(flow: Flow) -> list[tuple[str, str]]:
    """Every problem of a flow as (step key, message); empty when the flow is sound."""
    problems: list[tuple[str, str]] = []
    declared = set(flow.variables)
    for step in flow.steps.values():
        for target in successors(step):
            if target not in flow.steps:
                problems.append((step.id, f"leads to step {target!r}, which the flow lacks"))
        for key, text in texts(step):
            try:
                unknown = sorted(set(placeholders(text)) - declared)
            except ValueError as exc:
                problems.append((f"{step.id}.{key}", str(exc)))
                continue
            if unknown:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(
                    (f"{step.id}.{key}", f"uses undeclared variables {unknown} (declared: {known})")
                )
    if flow.start not in flow.steps:
        problems.append(("start", f"names step {flow.start!r}, which the flow lacks"))
    if problems:
        return problems  # the graph checks below assume every edge has an end
    reachable = _reachable(flow, [flow.start])
    for step_id in flow.steps:
        if step_id not in reachable:
            problems.append((step_id, f"is unreachable from the start step {flow.start!r}"))
    ending = _can_end(flow)
    for step_id in flow.steps:
        if step_id in reachable and step_id not in ending:
            problems.append(
                (step_id, "is in a loop without an exit: no path from it ends the call")
            )
    cycle = _instant_cycle(flow)
    if cycle:
        problems.append(
            (
                cycle[0],
                "starts a loop that never waits for the caller ("
                + " -> ".join(cycle)
                + "); put a gather, record or "
                "transfer in it",
            )
        )
    return problems


def _reachable(flow: Flow, roots: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        step_id = todo.pop()
        if step_id not in seen:
            seen.add(step_id)
            todo.extend(successors(flow.steps[step_id]))
    return seen


def _can_end(flow: Flow) -> set[str]:
    """Steps from which some path ends the call (a step with no successor ends it)."""
    ending = {sid for sid, step in flow.steps.items() if not successors(step)}
    changed = True
    while changed:
        changed = False
        for sid, step in flow.steps.items():
            if sid not in ending and any(t in ending for t in successors(step)):
                ending.add(sid)
                changed = True
    return ending


def _instant_cycle(flow: Flow) -> list[str]:
    """A cycle through steps that run on without waiting, or [] when there is none."""
    instant = {sid for sid, step in flow.steps.items() if not isinstance(step, WAITING)}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(sid: str, path: list[str]) -> list[str]:
        state[sid] = 1
        path.append(sid)
        for target in successors(flow.steps[sid]):
            if target not in instant:
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target, path)):
                return found
        path.pop()
        state[sid] = 2
        return []

    for sid in flow.steps:
        if sid in instant and sid not in state and (found := visit(sid, [])):
            return found
    return []


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Fill ``{name}`` placeholders; ``{{`` and ``}}`` are literal braces.

    The values are plain text: TwiML is built by ``twilio.twiml``, which XML-escapes them, so
    a value cannot add verbs or attributes. A missing variable raises KeyError naming it.
    """
    out: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(text):
        out.append(literal)
        if name is not None:
            if name not in variables:
                raise KeyError(f"variable {name!r} has no value")
            out.append(variables[name])
    return "".join(out)
