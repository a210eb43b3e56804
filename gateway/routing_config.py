"""The ``[tenants.routing]`` section: how a tenant's calls and messages are answered.

Parsed and validated here, at start-up (``hookline check`` too), into frozen dataclasses that
the TwiML worker (``workers.twiml_worker``) applies; the gateway reads only ``answer_timeout_ms``.
Problems are reported through the config Table, each naming its key, so every mistake shows
at once: unknown action types and keys, references to missing actions, numbers that are not
E.164, malformed business hours, and action chains that loop (a menu that leads back to
itself would keep a caller in the IVR forever).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.config_table import Table
from gateway.e164 import E164_PATTERN

DEFAULT_ANSWER_TIMEOUT_MS: Final = 3000
#: Twilio drops a voice webhook after 15 s; the broker round trip must leave it a wide margin.
MAX_ANSWER_TIMEOUT_MS: Final = 10_000
DIGIT_KEY: Final = re.compile(r"[0-9*#]")
NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS: Final = re.compile(r"(?P<days>[a-z,\-]+)\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2})")
#: Twilio's default opt-out, opt-in and help keywords, which Twilio answers itself on long codes
#: and toll-free numbers (https://help.twilio.com/articles/223134027): hookline only records them.
OPT_KEYWORDS: Final = frozenset(
    {
        "STOP",
        "STOPALL",
        "UNSUBSCRIBE",
        "CANCEL",
        "END",
        "QUIT",
        "START",
        "YES",
        "UNSTOP",
        "HELP",
        "INFO",
    }
)
DEFAULT_RETRY_PROMPT: Final = "Sorry, that is not a valid choice."
DEFAULT_VOICEMAIL_PROMPT: Final = "Please leave a message after the beep."
REJECT_REASONS: Final = ("busy", "rejected")  # https://www.twilio.com/docs/voice/twiml/reject

ROUTING_KEYS: Final = frozenset(
    {"timezone", "answer_timeout_ms", "language", "voice", "sms", "actions", "sms_default_reply"}
)
VOICE_RULE_KEYS: Final = frozenset({"name", "to", "hours", "action"})
SMS_RULE_KEYS: Final = frozenset({"name", "to", "hours", "keywords", "reply"})
#: Keys of each action type (besides ``type``).
ACTION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "dial": frozenset({"numbers", "timeout_s", "caller_id", "then"}),
    "menu": frozenset({"prompt", "options", "retry_prompt", "attempts", "timeout_s", "then"}),
    "voicemail": frozenset({"prompt", "max_length_s"}),
    "say": frozenset({"text", "then"}),
    "reject": frozenset({"reason"}),
    "flow": frozenset({"flow"}),
}


@dataclass(frozen=True, slots=True)
class Hours:
    """One business-hours window: these weekdays (0 = Monday), from start until end."""

    days: frozenset[int]
    start: time
    end: time  # time.max stands for 24:00

    def contains(self, moment: datetime) -> bool:
        now = moment.time()
        return moment.weekday() in self.days and self.start <= now < self.end


@dataclass(frozen=True, slots=True)
class Dial:
    numbers: tuple[str, ...]
    timeout_s: int = 20
    caller_id: str | None = None
    then: str | None = None  # action when nobody answers, e.g. a voicemail


@dataclass(frozen=True, slots=True)
class Menu:
    prompt: str
    options: Mapping[str, str]  # digit -> action name
    retry_prompt: str = DEFAULT_RETRY_PROMPT
    attempts: int = 3
    timeout_s: int = 5
    then: str | None = None  # action after the last failed attempt; hang up when None


@dataclass(frozen=True, slots=True)
class Voicemail:
    prompt: str = DEFAULT_VOICEMAIL_PROMPT
    max_length_s: int = 120


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    then: str | None = None


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Literal["busy", "rejected"] = "rejected"


@dataclass(frozen=True, slots=True)
class StartFlow:
    flow: str


Action = Dial | Menu | Voicemail | Say | Reject | StartFlow


@dataclass(frozen=True, slots=True)
class Match:
    """When a rule applies: the called number (``To``) and business hours; empty = always."""

    to: frozenset[str] = frozenset()
    hours: tuple[Hours, ...] = ()

    def applies(self, called: str | None, moment: datetime) -> bool:
        if self.to and called not in self.to:
            return False
        return not self.hours or any(window.contains(moment) for window in self.hours)


@dataclass(frozen=True, slots=True)
class VoiceRule:
    name: str
    match: Match
    action: str


@dataclass(frozen=True, slots=True)
class SmsRule:
    name: str
    match: Match
    keywords: frozenset[str]  # upper case; empty = any message
    reply: str


@dataclass(frozen=True, slots=True)
class Routing:
    """A tenant's routing rules; first matching rule wins."""

    timezone: str = "UTC"
    answer_timeout_ms: int = DEFAULT_ANSWER_TIMEOUT_MS
    language: str = "en-US"
    voice: tuple[VoiceRule, ...] = ()
    sms: tuple[SmsRule, ...] = ()
    actions: Mapping[str, Action] = field(default_factory=dict)
    sms_default_reply: str | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def answer_timeout_s(routing: Routing | None) -> float:
    """The RPC deadline of a tenant with this routing (``Tenant.routing``), in seconds."""
    ms = routing.answer_timeout_ms if routing is not None else DEFAULT_ANSWER_TIMEOUT_MS
    return ms / 1000


#: A voice callback may wait for the publish confirm and then for the TwiML worker; together
#: they must stay well inside Twilio's 15 s webhook timeout
#: (https://www.twilio.com/docs/usage/webhooks/webhooks-connection-overrides).
ANSWER_BUDGET_MS: Final = 12_000


def check_answer_budget(publish_timeout_ms: int, routing: Routing | None) -> str | None:
    """A problem when [gateway] publish_timeout_ms plus the tenant's answer deadline could keep
    Twilio waiting past the budget; None when it fits."""
    total = publish_timeout_ms + int(answer_timeout_s(routing) * 1000)
    if total <= ANSWER_BUDGET_MS:
        return None
    return (
        f"with [gateway] publish_timeout_ms = {publish_timeout_ms} a call could wait "
        f"{total} ms, over the {ANSWER_BUDGET_MS} ms that keep it well inside Twilio's "
        "15 s: lower one of them"
    )


def parse_routing(table: Table) -> Routing | None:
    """The [tenants.routing] table, or None when it has problems (they are reported)."""
    zone = table.string("timezone", required=False) or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        table.fail("timezone", f"expected an IANA time zone such as Europe/Berlin, got {zone!r}")
    timeout = table.integer("answer_timeout_ms", 100, MAX_ANSWER_TIMEOUT_MS)
    language = table.string("language", required=False) or "en-US"
    default_reply = table.string("sms_default_reply", required=False)
    actions = _actions(table)
    voice = tuple(_voice_rule(rule, actions) for rule in _rules(table, "voice", VOICE_RULE_KEYS))
    sms = tuple(_sms_rule(rule) for rule in _rules(table, "sms", SMS_RULE_KEYS))
    _check_names(table, "voice", [rule.name for rule in voice if rule is not None])
    _check_names(table, "sms", [rule.name for rule in sms if rule is not None])
    _check_loops(table, actions)
    if not table.ok:
        return None
    return Routing(
        timezone=zone,
        answer_timeout_ms=timeout or DEFAULT_ANSWER_TIMEOUT_MS,
        language=language,
        voice=tuple(r for r in voice if r is not None),
        sms=tuple(r for r in sms if r is not None),
        actions={name: action for name, action in actions.items() if action is not None},
        sms_default_reply=default_reply,
    )


def _rules(table: Table, key: str, allowed: frozenset[str]) -> list[Table]:
    """The rule tables of ``key``, each keyed by index and name: ``voice[1](after-hours)``."""
    raw = table.raw(key)
    if raw is not None and not isinstance(raw, list):
        table.fail(key, f"expected an array of tables ([[tenants.routing.{key}]])")
        return []
    rules: list[Table] = []
    for index, item in enumerate(raw or ()):
        if not isinstance(item, dict):
            table.fail(f"{key}[{index}]", "expected a table")
            continue
        name = item.get("name")
        label = f"{key}[{index}]({name})" if isinstance(name, str) and name else f"{key}[{index}]"
        rules.append(table.nested(label, item, allowed))
    return rules


def _actions(table: Table) -> dict[str, Action | None]:
    raw = table.raw("actions")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        table.fail("actions", "expected a table of actions ([tenants.routing.actions.NAME])")
        return {}
    parsed: dict[str, Action | None] = {}
    for name, body in raw.items():
        if not NAME.fullmatch(name):
            table.fail(f"actions.{name}", f"expected an action name matching {NAME.pattern}")
            continue
        if not isinstance(body, dict):
            table.fail(f"actions.{name}", "expected a table with a type key")
            continue
        kind = body.get("type")
        allowed = ACTION_KEYS.get(kind) if isinstance(kind, str) else None
        if allowed is None:
            table.fail(
                f"actions.{name}.type",
                f"unknown action {kind!r}, expected one of {', '.join(ACTION_KEYS)}",
            )
            parsed[name] = None
            continue
        parsed[name] = _action(table.nested(f"actions.{name}", body, allowed | {"type"}), str(kind))
    for name, action in parsed.items():
        for key, target in _references(action):
            if target not in parsed:
                table.fail(
                    f"actions.{name}.{key}",
                    f"no action named {target!r} (defined: {', '.join(sorted(parsed)) or 'none'})",
                )
    return parsed


def _action(table: Table, kind: str) -> Action | None:
    if kind == "dial":
        numbers = _numbers(table, "numbers", required=True)
        caller_id = table.string("caller_id", required=False)
        if caller_id is not None and not E164_PATTERN.fullmatch(caller_id):
            table.fail(
                "caller_id",
                f"expected an E.164 number such as +14155550100, got {_masked(caller_id)}",
            )
        timeout = table.integer("timeout_s", 5, 600)
        then = table.string("then", required=False)
        return (
            Dial(tuple(sorted(numbers)), timeout or 20, caller_id, then)
            if table.ok and numbers
            else None
        )
    if kind == "menu":
        prompt = table.string("prompt")
        options = _options(table)
        retry = table.string("retry_prompt", required=False)
        attempts = table.integer("attempts", 1, 10)
        timeout = table.integer("timeout_s", 1, 60)
        then = table.string("then", required=False)
        if not table.ok or prompt is None:
            return None
        return Menu(
            prompt, options, retry or DEFAULT_RETRY_PROMPT, attempts or 3, timeout or 5, then
        )
    if kind == "voicemail":
        prompt = table.string("prompt", required=False)
        length = table.integer("max_length_s", 1, 14_400)  # Twilio's Record maximum: 4 hours
        return Voicemail(prompt or DEFAULT_VOICEMAIL_PROMPT, length or 120) if table.ok else None
    if kind == "say":
        text, then = table.string("text"), table.string("then", required=False)
        return Say(text, then) if table.ok and text is not None else None
    if kind == "reject":
        reason = table.string("reason", required=False) or "rejected"
        if reason not in REJECT_REASONS:
            table.fail("reason", f"expected busy or rejected, got {reason!r}")
            return None
        return Reject("busy" if reason == "busy" else "rejected")
    flow = table.string("flow")
    if flow is not None and not NAME.fullmatch(flow):
        table.fail("flow", f"expected a flow name matching {NAME.pattern}, got {flow!r}")
    return StartFlow(flow) if table.ok and flow is not None else None


def _references(action: Action | None) -> list[tuple[str, str]]:
    """(key, action name) pairs an action leads to."""
    found: list[tuple[str, str]] = []
    if isinstance(action, Menu):
        found += [(f"options.{digit}", target) for digit, target in action.options.items()]
    if isinstance(action, Dial | Menu | Say) and action.then is not None:
        found.append(("then", action.then))
    return found


def _check_loops(table: Table, actions: Mapping[str, Action | None]) -> None:
    """Report each action that can lead back to itself (depth-first search, once per cycle)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    reported: set[frozenset[str]] = set()

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for _key, target in _references(actions.get(name)):
            if target not in actions:
                continue
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    table.fail(
                        f"actions.{target}",
                        "loop: " + " -> ".join(cycle) + " (a caller could never leave it)",
                    )
            elif state.get(target) is None:
                visit(target, [*path, target])
        state[name] = 2

    for name in actions:
        if state.get(name) is None:
            visit(name, [name])


def _options(table: Table) -> dict[str, str]:
    raw = table.raw("options")
    if not isinstance(raw, dict) or not raw:
        table.fail("options", 'expected a table of digit = "action", e.g. { "1" = "sales" }')
        return {}
    options: dict[str, str] = {}
    for digit, target in raw.items():
        if not DIGIT_KEY.fullmatch(digit):
            table.fail(f"options.{digit}", "expected one key: 0-9, * or #")
        elif not isinstance(target, str) or not target:
            table.fail(f"options.{digit}", "expected the name of an action")
        else:
            options[digit] = target
    return options


def _strings(table: Table, name: str) -> list[str] | None:
    raw = table.raw(name)
    if raw is None:
        return None
    values = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(value, str) and value for value in values):
        table.fail(name, "expected a string or an array of non-empty strings")
        return None
    return [str(value) for value in values]


def _numbers(table: Table, name: str, *, required: bool = False) -> list[str]:
    values = _strings(table, name)
    if values is None:
        if required:
            table.fail(name, 'expected one or more E.164 numbers such as "+14155550100"')
        return []
    for value in values:
        if not E164_PATTERN.fullmatch(value):
            table.fail(name, f"expected E.164 numbers such as +14155550100, got {_masked(value)}")
    return values


def _masked(value: str) -> str:
    # Config problems are printed and logged: numbers show their last 4 characters only.
    return repr(value) if len(value) <= 4 else repr("***" + value[-4:])


def parse_hours(text: str) -> Hours:
    """``"mon-fri 09:00-17:30"``, ``"sat,sun 10:00-14:00"``, ``"fri-mon 08:00-24:00"``."""
    found = _HOURS.fullmatch(text.strip().lower())
    if found is None:
        raise ValueError(f"expected DAYS HH:MM-HH:MM such as 'mon-fri 09:00-17:30', got {text!r}")
    days: set[int] = set()
    for part in found["days"].split(","):
        first, _dash, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"unknown day in {part!r}: use {', '.join(DAYS)}")
        start_day, end_day = DAYS.index(first), DAYS.index(last or first)
        days.update((start_day + offset) % 7 for offset in range((end_day - start_day) % 7 + 1))
    start, end = _clock(found["start"]), _clock(found["end"])
    if end <= start:
        raise ValueError(
            f"{text!r}: the end must be after the start (split a window that "
            "crosses midnight in two)"
        )
    return Hours(frozenset(days), start, end)


def _clock(text: str) -> time:
    hours, minutes = int(text[:2]), int(text[3:])
    if (hours, minutes) == (24, 0):
        return time.max
    if hours > 23 or minutes > 59:
        raise ValueError(f"{text} is not a time of day (00:00 to 24:00)")
    return time(hours, minutes)


def _match(table: Table) -> Match:
    windows: list[Hours] = []
    for text in _strings(table, "hours") or ():
        try:
            windows.append(parse_hours(text))
        except ValueError as exc:
            table.fail("hours", str(exc))
    return Match(frozenset(_numbers(table, "to")), tuple(windows))


def _voice_rule(table: Table, actions: Mapping[str, Action | None]) -> VoiceRule | None:
    name, action = table.string("name"), table.string("action")
    match = _match(table)
    if action is not None and action not in actions:
        table.fail(
            "action",
            f"no action named {action!r} (defined: {', '.join(sorted(actions)) or 'none'})",
        )
    if not table.ok or name is None or action is None:
        return None
    return VoiceRule(name, match, action)


def _sms_rule(table: Table) -> SmsRule | None:
    name, reply = table.string("name"), table.string("reply")
    match = _match(table)
    keywords = {word.strip().upper() for word in _strings(table, "keywords") or ()}
    reserved = sorted(keywords & OPT_KEYWORDS)
    if reserved:
        table.fail(
            "keywords",
            f"{', '.join(reserved)} are Twilio's opt-out/help keywords, "
            "answered by Twilio itself; hookline only records them",
        )
    if not table.ok or name is None or reply is None:
        return None
    return SmsRule(name, match, frozenset(keywords), reply)


def _check_names(table: Table, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            table.fail(key, f"two rules are named {name!r}: names must be unique")
        seen.add(name)
