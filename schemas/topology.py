"""RabbitMQ topology as data (docs/architecture.md#topology); declared by gateway.broker.

Keeping names and arguments here, free of I/O, lets the real broker, the embedded broker and
the deploy definitions share one source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

EVENTS_EXCHANGE: Final = "hookline.events"
DEAD_LETTER_EXCHANGE: Final = "hookline.dlx"
DEAD_QUEUE: Final = "hookline.dead"
USAGE_QUEUE: Final = "hookline.usage"
TENANT_QUEUE_PREFIX: Final = "hookline.tenant."
#: Commands from tenant apps (docs/architecture.md#topology): ``<tenant>.call.bot``: a bot call.
COMMANDS_EXCHANGE: Final = "hookline.commands"
#: The flows worker: bot-call commands, and the call events of the calls it placed.
BOT_COMMANDS_QUEUE: Final = "hookline.bot.commands"
BOT_CALLS_QUEUE: Final = "hookline.bot.calls"
BOT_COMMAND_BINDINGS: Final = ("*.call.bot",)
BOT_CALL_BINDINGS: Final = ("*.twilio.call.flow", "*.twilio.call.status")
#: TwiML requests (RPC, docs/architecture.md#topology); replies go to the caller's ``reply_to``.
TWIML_QUEUE: Final = "hookline.twiml"
#: Per-process reply queues of the RPC clients: ``hookline.reply.<host>.<pid>.<random>``.
REPLY_QUEUE_PREFIX: Final = "hookline.reply."
#: Headers the worker runtime writes on retried and dead-lettered messages (README: dead letters).
ATTEMPT_HEADER: Final = "x-hookline-attempt"
REASON_HEADER: Final = "x-hookline-reason"
ERROR_HEADER: Final = "x-hookline-error"
QUEUE_HEADER: Final = "x-hookline-queue"
ROUTING_KEY_HEADER: Final = "x-hookline-routing-key"
WORKER_HEADER: Final = "x-hookline-worker"
DEAD_AT_HEADER: Final = "x-hookline-dead-at"
#: On an RPC request: its deadline, Unix epoch milliseconds; the runtime drops it after that.
DEADLINE_HEADER: Final = "x-hookline-deadline-ms"
DEAD_HEADERS: Final = (REASON_HEADER, ERROR_HEADER, QUEUE_HEADER, WORKER_HEADER, DEAD_AT_HEADER)
#: Back-off delays of the worker runtime, in seconds: attempt n+1 waits RETRY_DELAYS_S[n-1].
RETRY_DELAYS_S: Final = (1, 5, 30)

# The usage worker meters status events (docs/architecture.md#topology) and bot-call outcomes.
USAGE_BINDINGS: Final = (
    "*.*.message.status",
    "*.*.message.incoming",
    "*.*.call.status",
    "*.*.call.bot.result",
)


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    type: str  # "topic", "direct" or "fanout"


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    bindings: tuple[tuple[str, str], ...]  # (exchange, routing-key pattern)
    arguments: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Topology:
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]


def tenant_queue(tenant_id: str) -> str:
    return TENANT_QUEUE_PREFIX + tenant_id


def _quorum() -> dict[str, str | int]:
    # Quorum queues replicate and survive node loss; dead letters go to hookline.dlx.
    # https://www.rabbitmq.com/docs/quorum-queues
    return {"x-queue-type": "quorum", "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}


def retry_queue(queue: str, delay_s: int) -> str:
    """The queue where a message of ``queue`` waits ``delay_s`` before it is tried again."""
    return f"{queue}.retry.{delay_s}s"


def retry_queues(queue: str, delays_s: tuple[int, ...] = RETRY_DELAYS_S) -> tuple[Queue, ...]:
    """One holding queue per delay for the work queue ``queue``.

    Each holds messages for a fixed time (``x-message-ttl``) and then dead-letters them through
    the default exchange with the work queue's name as routing key, i.e. straight back into
    ``queue``. One TTL per queue keeps every holding queue FIFO-ordered by expiry, so a long
    delay never holds up a short one (per-message TTLs only expire at the head of a queue).
    https://www.rabbitmq.com/docs/ttl#per-queue-message-ttl and
    https://www.rabbitmq.com/docs/dlx#routing
    """
    return tuple(
        Queue(
            retry_queue(queue, delay),
            (),
            {
                "x-queue-type": "classic",
                "x-message-ttl": delay * 1000,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue,
            },
        )
        for delay in delays_s
    )


def twiml_queue() -> Queue:
    """The RPC request queue: classic (lowest latency, a request is worthless after its
    deadline so replication buys nothing), bounded, refusing publishes when full so that the
    gateway answers with the fallback at once; no dead-lettering of expired requests.
    https://www.rabbitmq.com/docs/maxlength#overflow-behaviour
    """
    return Queue(
        TWIML_QUEUE,
        (),
        {
            "x-queue-type": "classic",
            "x-max-length": 10_000,
            "x-overflow": "reject-publish",
        },
    )


def build_topology(tenant_ids: list[str] | tuple[str, ...]) -> Topology:
    """Everything hookline declares for the given tenants, in declaration order."""
    exchanges = (
        Exchange(EVENTS_EXCHANGE, "topic"),
        Exchange(DEAD_LETTER_EXCHANGE, "topic"),
        Exchange(COMMANDS_EXCHANGE, "topic"),
    )
    queues = [
        Queue(DEAD_QUEUE, ((DEAD_LETTER_EXCHANGE, "#"),), {"x-queue-type": "quorum"}),
        Queue(USAGE_QUEUE, tuple((EVENTS_EXCHANGE, key) for key in USAGE_BINDINGS), _quorum()),
        Queue(
            BOT_COMMANDS_QUEUE,
            tuple((COMMANDS_EXCHANGE, key) for key in BOT_COMMAND_BINDINGS),
            _quorum(),
        ),
        Queue(
            BOT_CALLS_QUEUE, tuple((EVENTS_EXCHANGE, key) for key in BOT_CALL_BINDINGS), _quorum()
        ),
        *retry_queues(USAGE_QUEUE),
        twiml_queue(),
    ]
    queues += [
        Queue(tenant_queue(tid), ((EVENTS_EXCHANGE, f"{tid}.#"),), _quorum()) for tid in tenant_ids
    ]
    return Topology(exchanges, tuple(queues))


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more words.

    https://www.rabbitmq.com/tutorials/amqp-concepts#exchange-topic
    """
    # An empty key or pattern is zero words, as RabbitMQ treats it ("*" does not match "").
    return _match(_words(pattern), _words(routing_key))


def _words(text: str) -> list[str]:
    return text.split(".") if text else []


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
