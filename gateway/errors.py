"""The one exception tree of hookline.

Every runtime failure hookline reports is a ``HooklineError``. Each subclass maps to exactly one
HTTP status (for the ingress) or one ack decision (for consumers), so callers never guess from a
message string. Messages say what was expected, what arrived, and name the key or tenant; they
never contain a secret.
"""

from __future__ import annotations


class HooklineError(Exception):
    """Root of every error hookline raises on purpose."""

    #: HTTP status the ingress answers with when this error ends a request.
    http_status: int = 500
    #: Short snake_case reason, logged as ``reason`` and stable for dashboards.
    reason: str = "error"


class ConfigError(HooklineError):
    """Settings or the config file are invalid: the process must not start."""

    reason = "invalid_config"


class RejectedCallback(HooklineError):
    """Base of everything that makes the ingress refuse a callback (a 4xx, never a 500)."""

    http_status = 400
    reason = "rejected"


class MalformedPayload(RejectedCallback):
    """The body or query cannot be parsed: bad form encoding, bad JSON, invalid UTF-8."""

    http_status = 400
    reason = "malformed_payload"


class FieldOutOfRange(MalformedPayload):
    """A numeric provider field is beyond its documented bound (gateway.providers.request):
    refused at the edge instead of published as an event no consumer could meter."""

    reason = "field_out_of_range"


class UnsupportedMediaType(RejectedCallback):
    """The Content-Type is not one the route accepts."""

    http_status = 415
    reason = "unsupported_media_type"


class PayloadTooLarge(RejectedCallback):
    """The body is over the configured limit."""

    http_status = 413
    reason = "payload_too_large"


class AuthenticationFailed(RejectedCallback):
    """Signature or secret missing, wrong, or belonging to another tenant.

    Unknown tenants and unknown AccountSids raise this too, with the same status and the same
    public answer, so that a caller cannot probe which tenants exist. The ``reason`` attribute
    (logged only) tells them apart for the on-call engineer.
    """

    http_status = 403
    reason = "signature_invalid"

    def __init__(self, message: str, *, reason: str = "signature_invalid") -> None:
        super().__init__(message)
        self.reason = reason


class PublishError(HooklineError):
    """The broker did not confirm an event: unreachable, returned (unroutable) or nacked."""

    http_status = 503
    reason = "publish_failed"


class UnroutableEvent(PublishError):
    """The broker took the publish but no queue is bound for the event (``basic.return``).

    A verdict on this one event, not on the link: a tenant whose queue or binding is missing.
    The acceptor spools it like any refused publish; the replayer sets it aside and retries it
    later instead of letting it hold up the events spooled behind it.
    """

    reason = "event_unroutable"


class ConsumerError(HooklineError):
    """Base of what a worker's handler reports about one message (an ack decision, not HTTP)."""

    reason = "consumer_error"


class PoisonMessage(ConsumerError):
    """The message can never be handled (unparsable, unknown tenant, invalid command).

    Ack decision: dead-letter it at once to ``hookline.dead``, the reason in its headers.
    """

    reason = "poison_message"

    def __init__(self, message: str, *, reason: str = "poison_message") -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(ConsumerError):
    """Handling failed for a reason that may pass (database or REST API unreachable, timeout).

    Ack decision: retry with back-off, bounded; dead-letter after the last attempt.
    """

    reason = "transient"
