"""The TwiML of one flow request: run the call on from its position until it must wait.

Rendering happens in the gateway, not over the TwiML RPC: the flow is static config and the
position travels in the URL, so each step is a pure function of (flow, position, Twilio's
parameters) that answers in microseconds with no broker round trip, and is unit-testable.
What the step learned (digits, speech, recording, who answered) goes out as a ``call.flow``
event for the flows worker, which sends ``sms`` steps and builds the call's result.

Verbs and attributes: https://www.twilio.com/docs/voice/twiml (Gather, Record, Dial, Say,
Play, Hangup).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from twilio.twiml.voice_response import VoiceResponse

from gateway.flows.model import (
    Branch,
    Flow,
    Gather,
    Hangup,
    Play,
    Record,
    Say,
    Sms,
    Step,
    Transfer,
    interpolate,
)
from gateway.flows.position import Position

#: Instant steps run on within one document; a sound flow never needs this many (validated
#: to have no instant cycle), so reaching it means a bug, not a long script.
MAX_STEPS_PER_DOCUMENT: Final = 64
_WORD: Final = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Rendered:
    """The TwiML answer and what this request told us, for the ``call.flow`` event."""

    twiml: str
    ran: tuple[str, ...]  # step ids run in this document, in order
    sms: tuple[tuple[str, str], ...] = ()  # (step id, interpolated text) to send to the callee
    inputs: Mapping[str, str] = field(default_factory=dict)  # step id -> digits/speech/recording
    ended: bool = False  # the document ends the call (Hangup, or a Dial with nothing after)


def render(
    flow: Flow,
    position: Position,
    params: Mapping[str, str],
    url: Callable[[Position], str],
    status_url: str,
) -> Rendered:
    """The answer to one request at ``position`` with Twilio's ``params`` (form fields).

    ``url`` turns a position into its absolute, sealed step URL; ``status_url`` receives the
    recording status callbacks. KeyError for a missing variable or step.
    """
    state = _Document(flow, position, url, status_url)
    if position.phase == "input":
        state.take_input(params)
    else:
        state.run(position.step, params.get("AnsweredBy"))
    return Rendered(
        str(state.response), tuple(state.ran), tuple(state.sms), state.inputs, state.ended
    )


class _Document:
    def __init__(
        self, flow: Flow, position: Position, url: Callable[[Position], str], status_url: str
    ) -> None:
        self.flow, self.position, self.url, self.status_url = flow, position, url, status_url
        self.response = VoiceResponse()
        self.ran: list[str] = []
        self.sms: list[tuple[str, str]] = []
        self.inputs: dict[str, str] = {}
        self.ended = False
        self.waiting = False  # the document ends in a verb Twilio calls back from

    def text(self, template: str) -> str:
        return interpolate(template, self.position.variables)

    def take_input(self, params: Mapping[str, str]) -> None:
        """Twilio called back with the result of a waiting step."""
        step = self.flow.step(self.position.step)
        if isinstance(step, Gather):
            digits = params.get("Digits", "")
            speech = params.get("SpeechResult", "").strip()
            if digits or speech:
                self.inputs[step.id] = digits or speech
            target = _choice(step, digits, speech)
            if target is not None:
                self.run(target, None)
            elif self.position.attempt <= step.retries:
                self.ran.append(step.id)
                self.gather(step, self.position.attempt + 1)
            else:
                self.run(step.default, None)
        elif isinstance(step, Record):
            if params.get("RecordingUrl"):
                self.inputs[step.id] = params["RecordingUrl"]
            self.next_or_hangup(step.next)
        elif isinstance(step, Transfer):
            if params.get("DialCallStatus"):
                self.inputs[step.id] = params["DialCallStatus"]
            self.next_or_hangup(step.next)
        else:
            raise KeyError(f"step {step.id!r} of flow {self.flow.name!r} takes no input")

    def next_or_hangup(self, target: str | None) -> None:
        if target is None:
            self.response.hangup()
            self.ended = True
        else:
            self.run(target, None)

    def run(self, step_id: str | None, answered_by: str | None) -> None:
        while step_id is not None:
            if len(self.ran) >= MAX_STEPS_PER_DOCUMENT:
                raise KeyError(
                    f"flow {self.flow.name!r} ran {MAX_STEPS_PER_DOCUMENT} steps "
                    "without waiting for the caller"
                )
            step = self.flow.step(step_id)
            self.ran.append(step.id)
            step_id = self.one(step, answered_by)
        if not self.ended and not self.waiting:
            self.response.hangup()
            self.ended = True

    def one(self, step: Step, answered_by: str | None) -> str | None:
        """Render one step; the next instant step to run, or None when the document ends."""
        voice = _voice(step)
        match step:
            case Say():
                self.response.say(self.text(step.text), **voice)
                return step.next
            case Play():
                self.response.play(step.url)
                return step.next
            case Sms():
                self.sms.append((step.id, self.text(step.text)))
                return step.next
            case Branch():
                return step.target(answered_by)
            case Gather():
                self.gather(step, 1)
            case Record():
                if step.prompt is not None:
                    self.response.say(self.text(step.prompt))
                self.response.record(
                    action=self.url(self.position.at(step.id, "input")),
                    method="POST",
                    max_length=step.max_length_s,
                    finish_on_key=step.finish_on_key,
                    play_beep=step.play_beep,
                    recording_status_callback=self.status_url,
                    recording_status_callback_method="POST",
                )
                self.waiting = True
            case Transfer():
                options: dict[str, Any] = {"timeout": step.timeout_s}
                if step.caller_id is not None:
                    options["caller_id"] = step.caller_id
                if step.next is not None:
                    options.update(
                        action=self.url(self.position.at(step.id, "input")), method="POST"
                    )
                    self.waiting = True
                self.response.dial(step.number, **options)
                if step.next is None:
                    self.response.hangup()
                    self.ended = True
            case Hangup():
                self.response.hangup()
                self.ended = True
        return None

    def gather(self, step: Gather, attempt: int) -> None:
        # actionOnEmptyResult: a timeout with no input still calls the action URL, so retries
        # and the default branch are decided here, not by falling through the document.
        # https://www.twilio.com/docs/voice/twiml/gather#actiononemptyresult
        options: dict[str, Any] = {
            "action": self.url(self.position.at(step.id, "input", attempt)),
            "method": "POST",
            "input": step.input,
            "timeout": step.timeout_s,
            "action_on_empty_result": True,
        }
        if step.num_digits is not None:
            options["num_digits"] = step.num_digits
        if step.speech:
            options["hints"] = ", ".join(step.speech)
        gather = self.response.gather(**options)
        prompt = (
            step.prompt
            if attempt == 1 or step.reprompt is None
            else f"{step.reprompt} {step.prompt}"
        )
        gather.say(self.text(prompt), **_voice(step))
        self.waiting = True


def _choice(step: Gather, digits: str, speech: str) -> str | None:
    if digits and digits in step.digits:
        return step.digits[digits]
    words = " " + " ".join(_WORD.findall(speech.lower())) + " "
    for keyword, target in step.speech.items():
        if f" {keyword} " in words:  # whole words: "no" must not match "know"
            return target
    return None


def _voice(step: object) -> dict[str, str]:
    options = {}
    for key in ("voice", "language"):
        value = getattr(step, key, None)
        if value is not None:
            options[key] = value
    return options
