"""Publishing events: the Publisher protocol and its implementations.

``gateway.broker.fastamqp`` (on ``link`` and ``wire``) publishes to RabbitMQ over hookline's own
AMQP 0-9-1 connection, with nothing beyond the standard library; aio-pika remains what ``tail``
and ``probe`` use. The embedded broker (``memory://``) needs only the standard library too.
"""
