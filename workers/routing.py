"""Apply a tenant's routing rules (``gateway.routing_config``) to a call or message: pure code.

Built with the official ``twilio.twiml`` builders. The call's later steps come back to
/twilio/voice (a menu's digits, a dial's outcome, the end of a voicemail) with the step in the
query string (``hl_step``, ``hl_try``); the gateway passes that query with the request, and
Twilio signs it, so a caller cannot forge a step. URLs are relative to the document Twilio
fetched (/twilio/voice), so they follow the public URL and any path prefix the gateway has.
https://www.twilio.com/docs/voice/twiml#twiml-and-relative-urls
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from urllib.parse import parse_qs, urlencode

from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from gateway.routing_config import (
    OPT_KEYWORDS,
    Action,
    Dial,
    Menu,
    Reject,
    Routing,
    Say,
    StartFlow,
    Voicemail,
)
from gateway.tenants import EMPTY_TWIML, Tenant
from workers.numbers import ascii_int

STEP_URL: Final = "voice"  # relative to /twilio/voice: the same route, with a step
FLOW_URL: Final = "voice/flow"  # bot-call flows (docs/flows.md#how-it-runs)
STATUS_URL: Final = "voice/status"
#: A Dial that ends with one of these connected someone: the call is over after it.
#: https://www.twilio.com/docs/voice/twiml/dial#dialcallstatus
CONNECTED: Final = frozenset({"completed", "answered"})
_WORD: Final = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True, slots=True)
class Routed:
    """The TwiML, plus what was decided (logged by the worker)."""

    twiml: str
    rule: str | None
    action: str | None
    note: str = ""


def _param(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else ""


class VoiceRouter:
    """One call step: the first request of a call, or a step of its menu, dial or voicemail."""

    def __init__(
        self,
        tenant: Tenant,
        routing: Routing,
        status_url: str = STATUS_URL,
        flow_url: Callable[[str], str | None] | None = None,
    ) -> None:
        self.tenant, self.routing, self.status_url = tenant, routing, status_url
        # The sealed first step of a bot-call flow by name (gateway.flows.position).
        self.flow_url = flow_url

    def route(self, raw: Mapping[str, object], query: str, now: datetime) -> Routed:
        step = parse_qs(query).get("hl_step", [""])[0]
        if step:
            return self._step(step, raw, query)
        local = now.astimezone(self.routing.zone)
        called = _param(raw, "To") or None
        for rule in self.routing.voice:
            if rule.match.applies(called, local):
                response = VoiceResponse()
                self._render(response, rule.action)
                return Routed(str(response), rule.name, rule.action)
        return Routed(self.tenant.fallback_voice_twiml, None, None, "no rule matched")

    def _step(self, step: str, raw: Mapping[str, object], query: str) -> Routed:
        kind, _sep, name = step.partition(":")
        response = VoiceResponse()
        action = self.routing.actions.get(name)
        if kind == "hangup":
            response.hangup()
            return Routed(str(response), None, None, "step hangup")
        if kind == "menu" and isinstance(action, Menu):
            # Twilio signs the query, but the tenant holds the token that signs it: any text.
            attempt = ascii_int(parse_qs(query).get("hl_try", ["1"])[0], default=1, max_digits=2)
            digits = _param(raw, "Digits")
            choice = action.options.get(digits[:1]) if digits else None
            if choice is not None:
                self._render(response, choice)
                return Routed(str(response), None, choice, f"menu {name} chose {choice}")
            if attempt < action.attempts:
                response.say(action.retry_prompt, language=self.routing.language)
                self._menu(response, name, action, attempt + 1)
                return Routed(str(response), None, name, f"menu {name} retry {attempt + 1}")
            self._then(response, action.then)
            return Routed(str(response), None, action.then, f"menu {name} gave up")
        if kind == "dial" and isinstance(action, Dial):
            status = _param(raw, "DialCallStatus")
            if status in CONNECTED:
                response.hangup()
                return Routed(str(response), None, None, f"dial {name} {status}")
            self._then(response, action.then)
            return Routed(str(response), None, action.then, f"dial {name} {status or 'ended'}")
        # A step of a rule removed since the call started: end the call politely.
        return Routed(self.tenant.fallback_voice_twiml, None, None, f"unknown step {step!r}")

    def _then(self, response: VoiceResponse, name: str | None) -> None:
        if name is None:
            response.hangup()
        else:
            self._render(response, name)

    def _render(self, response: VoiceResponse, name: str) -> None:
        action: Action | None = self.routing.actions.get(name)
        language = self.routing.language
        if isinstance(action, Dial):
            # Numbers of one Dial ring at once; the first to answer takes the call.
            # https://www.twilio.com/docs/voice/twiml/number
            dial = response.dial(
                timeout=action.timeout_s,
                caller_id=action.caller_id,
                action=_url(hl_step=f"dial:{name}"),
                method="POST",
            )
            for number in action.numbers:
                dial.number(number)
        elif isinstance(action, Menu):
            self._menu(response, name, action, 1)
        elif isinstance(action, Voicemail):
            response.say(action.prompt, language=language)
            # https://www.twilio.com/docs/voice/twiml/record
            response.record(
                max_length=action.max_length_s,
                play_beep=True,
                action=_url(hl_step="hangup"),
                method="POST",
                recording_status_callback=self.status_url,
                recording_status_callback_method="POST",
                recording_status_callback_event="completed",
            )
            response.hangup()
        elif isinstance(action, Say):
            response.say(action.text, language=language)
            self._then(response, action.then)
        elif isinstance(action, Reject):
            response.reject(reason=action.reason)
        elif isinstance(action, StartFlow):
            # The bot-call flow takes the call over at /twilio/voice/flow, from its first step.
            url = self.flow_url(action.flow) if self.flow_url is not None else None
            if url is None:  # no flow_secret or flow: validation rules both out at start-up
                response.hangup()
            else:
                response.redirect(url, method="POST")
        else:  # validation guarantees every name exists; keep the caller safe regardless
            response.hangup()

    def _menu(self, response: VoiceResponse, name: str, menu: Menu, attempt: int) -> None:
        # https://www.twilio.com/docs/voice/twiml/gather: without input Twilio goes on to the
        # next verb, the Redirect, which comes back as this menu step without Digits.
        step = _url(hl_step=f"menu:{name}", hl_try=str(attempt))
        gather = response.gather(
            num_digits=1, timeout=menu.timeout_s, action=step, method="POST", input="dtmf"
        )
        gather.say(menu.prompt, language=self.routing.language)
        response.redirect(step, method="POST")


def route_message(
    tenant: Tenant, routing: Routing | None, raw: Mapping[str, object], body: str, now: datetime
) -> Routed:
    """The TwiML answer of an incoming message: a keyword reply, the default, or nothing."""
    words = _WORD.findall(body)
    keyword = words[0].upper() if words else ""
    opt_out_type = _param(raw, "OptOutType")  # set by Twilio Advanced Opt-Out
    if opt_out_type or (keyword in OPT_KEYWORDS and len(words) == 1):
        # Twilio answers these itself and keeps the opt-out list; a second reply would be
        # against the carrier rules. https://help.twilio.com/articles/223134027
        return Routed(EMPTY_TWIML, None, None, f"opt keyword {opt_out_type or keyword}")
    if routing is None:
        return Routed(EMPTY_TWIML, None, None, "no routing")
    local = now.astimezone(routing.zone)
    called = _param(raw, "To") or None
    for rule in routing.sms:
        if rule.match.applies(called, local) and (not rule.keywords or keyword in rule.keywords):
            return Routed(_message(rule.reply), rule.name, "reply")
    if routing.sms_default_reply is not None:
        return Routed(_message(routing.sms_default_reply), None, "default_reply")
    return Routed(EMPTY_TWIML, None, None, "no rule matched")


def _message(text: str) -> str:
    response = MessagingResponse()
    response.message(text)
    return str(response)


def _url(**params: str) -> str:
    return f"{STEP_URL}?{urlencode(params)}"
