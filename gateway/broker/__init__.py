"""Publishing events: the Publisher protocol and its implementations.

Only ``gateway.broker.amqp`` imports aio-pika; the embedded broker (``memory://``) and the fake
publisher need nothing beyond the standard library.
"""
