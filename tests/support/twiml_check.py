"""Check a TwiML document against the verbs, nouns and attributes Twilio documents.

An allow-list of what hookline may produce, transcribed from Twilio's TwiML reference:
https://www.twilio.com/docs/voice/twiml (Say, Play, Pause, Dial + Number, Gather, Record,
Hangup, Reject, Redirect: one page each under /docs/voice/twiml/<verb>) and
https://www.twilio.com/docs/messaging/twiml (Message, Body, Media, Redirect). Anything else -
an unknown element, an attribute Twilio does not define for that element, a nesting Twilio
does not allow, a malformed value - fails the test with the path of the offending element.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Literal

METHODS = {"GET", "POST"}
E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def _int(low: int, high: int) -> Callable[[str], bool]:
    return lambda value: value.isdigit() and low <= int(value) <= high


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda value: value in values


def _any(_value: str) -> bool:
    return True


def _url(value: str) -> bool:
    # Absolute http(s) URLs or URLs relative to the current document (no scheme, no spaces).
    return (
        bool(value)
        and " " not in value
        and (value.startswith(("http://", "https://")) or "://" not in value)
    )


_BOOL = _one_of("true", "false")
_METHOD = _one_of(*METHODS)

# element -> (attribute -> value check). https://www.twilio.com/docs/voice/twiml/<verb>
VOICE_ATTRIBUTES: Mapping[str, Mapping[str, Callable[[str], bool]]] = {
    "Response": {},
    "Say": {"voice": _any, "language": _any, "loop": _int(0, 1000)},
    "Play": {"loop": _int(0, 1000), "digits": _any},
    "Pause": {"length": _int(1, 600)},
    "Hangup": {},
    "Reject": {"reason": _one_of("rejected", "busy")},
    "Redirect": {"method": _METHOD},
    "Dial": {
        "action": _url,
        "method": _METHOD,
        "timeout": _int(5, 600),
        "hangupOnStar": _BOOL,
        "timeLimit": _int(1, 86_400),
        "callerId": _any,
        "record": _any,
        "trim": _any,
        "recordingStatusCallback": _url,
        "recordingStatusCallbackMethod": _METHOD,
        "recordingStatusCallbackEvent": _any,
        "answerOnBridge": _BOOL,
        "ringTone": _any,
        "recordingTrack": _any,
        "sequential": _BOOL,
    },
    "Number": {
        "sendDigits": _any,
        "url": _url,
        "method": _METHOD,
        "statusCallback": _url,
        "statusCallbackMethod": _METHOD,
        "statusCallbackEvent": _any,
        "byoc": _any,
    },
    "Gather": {
        "action": _url,
        "method": _METHOD,
        "timeout": _int(1, 600),
        "finishOnKey": _any,
        "numDigits": _int(1, 100),
        "input": _one_of("dtmf", "speech", "dtmf speech"),
        "speechTimeout": _any,
        "speechModel": _any,
        "hints": _any,
        "language": _any,
        "partialResultCallback": _url,
        "partialResultCallbackMethod": _METHOD,
        "profanityFilter": _BOOL,
        "actionOnEmptyResult": _BOOL,
        "enhanced": _BOOL,
    },
    "Record": {
        "action": _url,
        "method": _METHOD,
        "timeout": _int(0, 600),
        "finishOnKey": _any,
        "maxLength": _int(1, 14_400),
        "playBeep": _BOOL,
        "trim": _one_of("trim-silence", "do-not-trim"),
        "recordingStatusCallback": _url,
        "recordingStatusCallbackMethod": _METHOD,
        "recordingStatusCallbackEvent": _any,
        "transcribe": _BOOL,
        "transcribeCallback": _url,
    },
}
# Which children each element may hold (None: text only).
VOICE_CHILDREN: Mapping[str, frozenset[str] | None] = {
    "Response": frozenset(
        {"Say", "Play", "Pause", "Hangup", "Reject", "Redirect", "Dial", "Gather", "Record"}
    ),
    "Gather": frozenset({"Say", "Play", "Pause"}),
    "Dial": frozenset({"Number"}),
    "Say": None,
    "Play": None,
    "Redirect": None,
    "Number": None,
    "Pause": frozenset(),
    "Hangup": frozenset(),
    "Reject": frozenset(),
    "Record": frozenset(),
}
# https://www.twilio.com/docs/messaging/twiml/message
MESSAGING_ATTRIBUTES: Mapping[str, Mapping[str, Callable[[str], bool]]] = {
    "Response": {},
    "Message": {
        "to": _any,
        "from": _any,
        "action": _url,
        "method": _METHOD,
        "statusCallback": _url,
    },
    "Body": {},
    "Media": {},
    "Redirect": {"method": _METHOD},
}
MESSAGING_CHILDREN: Mapping[str, frozenset[str] | None] = {
    "Response": frozenset({"Message", "Redirect"}),
    "Message": None,  # text, or Body/Media children
    "Body": None,
    "Media": None,
    "Redirect": None,
}
# Text that must be present and what it must look like.
_TEXT_CHECKS: Mapping[str, Callable[[str], bool]] = {
    "Say": bool,
    "Redirect": _url,
    "Number": lambda text: E164.fullmatch(text) is not None,
    "Message": bool,
}


def check_twiml(document: str | bytes, kind: Literal["voice", "messaging"]) -> ET.Element:
    """Parse ``document`` and check every element; return the root for further asserts."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise AssertionError(f"TwiML is not well-formed XML: {exc}: {document!r}") from exc
    attributes, children = (
        (VOICE_ATTRIBUTES, VOICE_CHILDREN)
        if kind == "voice"
        else (MESSAGING_ATTRIBUTES, MESSAGING_CHILDREN)
    )
    if root.tag != "Response":
        raise AssertionError(f"root element is <{root.tag}>, expected <Response>")
    _check(root, "Response", attributes, children)
    return root


def _check(
    element: ET.Element,
    path: str,
    attributes: Mapping[str, Mapping[str, Callable[[str], bool]]],
    children: Mapping[str, frozenset[str] | None],
) -> None:
    allowed = attributes.get(element.tag)
    if allowed is None:
        raise AssertionError(f"{path}: <{element.tag}> is not a documented TwiML element")
    for name, value in element.attrib.items():
        check = allowed.get(name)
        if check is None:
            raise AssertionError(
                f"{path}: <{element.tag}> has no attribute {name!r} "
                f"(documented: {', '.join(sorted(allowed)) or 'none'})"
            )
        if not check(value):
            raise AssertionError(f"{path}: <{element.tag} {name}={value!r}> is not a valid value")
    text = (element.text or "").strip()
    if element.tag in _TEXT_CHECKS and not (list(element) or _TEXT_CHECKS[element.tag](text)):
        raise AssertionError(f"{path}: <{element.tag}> text {text!r} is missing or invalid")
    nested = children.get(element.tag, frozenset())
    for child in element:
        if nested is None and element.tag != "Message":
            raise AssertionError(f"{path}: <{element.tag}> takes text only, got <{child.tag}>")
        if nested is not None and child.tag not in nested:
            raise AssertionError(f"{path}: <{child.tag}> is not allowed inside <{element.tag}>")
        _check(child, f"{path}/{child.tag}", attributes, children)
