"""Publishing events: the Publisher protocol and its implementations.

``gateway.broker.fastamqp`` (on ``link`` and ``wire``) publishes to RabbitMQ over hookline's own
AMQP 0-9-1 connection and needs nothing beyond the standard library; ``amqp`` (aio-pika) is the
previous publisher, and aio-pika is still what ``tail`` and ``probe`` use. The embedded broker
(``memory://``) needs nothing beyond the standard library either.
"""
